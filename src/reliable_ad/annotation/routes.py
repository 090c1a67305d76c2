"""Pages, accounts, annotating and images: what annotators use."""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import exists, select

from reliable_ad.annotation import queue, security, stats
from reliable_ad.annotation.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Id,
    QueryId,
    Who,
    check_login_csrf,
    client_address,
    get_config,
    get_db,
    set_session_cookie,
    user,
    who_of,
    writer,
)
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import GENERAL, GUIDANCE
from reliable_ad.annotation.importer import IMAGE_EXTENSIONS
from reliable_ad.annotation.models import Assignment, Batch, Candidate, Task, User

TEMPLATES = Path(__file__).with_name("templates")
logger = logging.getLogger(__name__)
router = APIRouter()


class LoginBody(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    next: str | None = None  # the page to go to afterwards: answered back if it is on this site, else "/"


class InviteBody(BaseModel):
    token: str = Field(max_length=256)
    password: str = Field(max_length=1024)


class NextBody(BaseModel):
    count: int | None = Field(default=None, ge=1, le=20)


# an answer may ask for the next items back (``next``): one request per item instead of two
class LabelBody(BaseModel):
    label: int = Field(ge=0, le=5)
    duration_ms: int | None = Field(default=None, ge=0)
    next: int | None = Field(default=None, ge=1, le=20)


class RankBody(BaseModel):
    ranking: str | list[int] = Field(max_length=200)
    duration_ms: int | None = Field(default=None, ge=0)
    next: int | None = Field(default=None, ge=1, le=20)


class SkipBody(BaseModel):
    next: int | None = Field(default=None, ge=1, le=20)


# ---- pages ------------------------------------------------------------------------------------


# a block with no block inside it: the innermost first, so a layout's blocks may nest
_BLOCK = re.compile(r"\{%\s*block\s+(\w+)\s*%\}((?:(?!\{%\s*block\b).)*?)\{%\s*endblock(?:\s+\1)?\s*%\}", re.S)
_EXTENDS = re.compile(r'\A\s*\{%\s*extends\s+"([\w.-]+)"\s*%\}')


def render_page(name: str) -> str:
    """templates/<name>.html, filled into the layout it extends.

    Jinja2's template inheritance, its syntax and nothing else (the pages compute nothing, so no
    Jinja2): a page starts with ``{% extends "base.html" %}`` and gives blocks,
    ``{% block NAME %}...{% endblock %}``, each replacing the layout's block of that name; a block
    the page does not give keeps the layout's content. A page without ``extends`` is served as it is.
    """
    text = (TEMPLATES / f"{name}.html").read_text(encoding="utf-8")
    parent = _EXTENDS.match(text)
    if parent is None:
        return text
    body = text[parent.end():]
    given = {m.group(1): m.group(2) for m in _BLOCK.finditer(body)}
    if _BLOCK.sub("", body).strip():
        raise ValueError(f"templates/{name}.html: text outside its blocks")
    page = (TEMPLATES / parent.group(1)).read_text(encoding="utf-8")
    while (m := _BLOCK.search(page)) is not None:
        page = page[:m.start()] + given.pop(m.group(1), m.group(2)) + page[m.end():]
    if given or "{%" in page:
        raise ValueError(f"templates/{name}.html: blocks {sorted(given)} are not in {parent.group(1)}, "
                         "or a tag is malformed")
    return page


@lru_cache(maxsize=None)
def page_html(name: str) -> str:
    return render_page(name)


def _page(request: Request, name: str, *, need_admin: bool = False) -> Response:
    who = who_of(request)
    if who is None:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if need_admin and not who.is_admin:
        return HTMLResponse(page_html("forbidden"), status_code=403)
    return HTMLResponse(page_html(name))


@router.get("/", include_in_schema=False)
def home_page(request: Request):
    return _page(request, "home")


@router.get("/login", include_in_schema=False)
def login_page():
    return HTMLResponse(page_html("login"))


@router.get("/invite", include_in_schema=False)
def invite_page():
    return HTMLResponse(page_html("invite"))


@router.get("/annotate/{batch_id}", include_in_schema=False)
def annotate_page(request: Request, batch_id: Id):
    return _page(request, "annotate")


@router.get("/rank/{batch_id}", include_in_schema=False)
def rank_page(request: Request, batch_id: Id):
    return _page(request, "rank")


@router.get("/admin", include_in_schema=False)
def admin_page(request: Request):
    return _page(request, "admin", need_admin=True)


@router.get("/admin/review/{batch_id}", include_in_schema=False)
def review_page(request: Request, batch_id: Id):
    return _page(request, "review", need_admin=True)


# ---- accounts ---------------------------------------------------------------------------------


@router.get("/api/login-token")
def login_token(config: AnnotationConfig = Depends(get_config)):
    token = security.new_token()
    response = JSONResponse({"token": token})
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=config.secure_cookies, path="/")
    return response


@router.post("/api/login")
def login(body: LoginBody, request: Request, db: Database = Depends(get_db),
          config: AnnotationConfig = Depends(get_config)):
    check_login_csrf(request)
    throttle: security.LoginThrottle = request.app.state.throttle
    address = client_address(request)
    refused = throttle.retry_after(body.username, address)
    if refused is not None:
        seconds, what = max(1, math.ceil(refused[0])), refused[1]
        whom = "this user from your address" if what == "account" else "your address"
        raise HTTPException(429, f"too many failed logins for {whom}; try again in {seconds} s",
                            headers={"Retry-After": str(seconds)})
    found = None
    if security.valid_username(body.username):  # no other name can exist: no need to ask the database
        with db.read() as s:
            found = s.scalar(select(User).where(User.username == body.username))
    # exactly one password hash whether the user is unknown, invited, disabled or known, so the
    # answer's timing does not tell them apart
    matches = security.verify_password(body.password, found.password_hash if found is not None else None)
    if not matches or not found.active:
        throttle.failed(body.username, address)
        raise HTTPException(401, "wrong user name or password")
    throttle.succeeded(body.username, address)
    with db.write() as s:
        security.purge_expired_sessions(s)
        token, row = security.start_session(s, s.get(User, found.id), config.session_hours)
        csrf = row.csrf_token
    response = JSONResponse({"username": found.username, "role": found.role, "csrf": csrf,
                             "next": security.safe_next(body.next)})
    set_session_cookie(response, token, config)
    return response


@router.post("/api/invite")
def accept_invite(body: InviteBody, request: Request, db: Database = Depends(get_db),
                  config: AnnotationConfig = Depends(get_config)):
    check_login_csrf(request)
    with db.write() as s:
        found = security.accept_invite(s, body.token, body.password)
        token, row = security.start_session(s, found, config.session_hours)
        result = {"username": found.username, "role": found.role, "csrf": row.csrf_token}
    response = JSONResponse(result)
    set_session_cookie(response, token, config)
    return response


@router.post("/api/logout")
def logout(request: Request, who: Who = Depends(writer), db: Database = Depends(get_db)):
    with db.write() as s:
        security.end_session(s, request.cookies.get(SESSION_COOKIE))
    request.app.state.sessions.clear()
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/api/me")
def me(who: Who = Depends(user), config: AnnotationConfig = Depends(get_config)):
    return {"username": who.username, "role": who.role, "csrf": who.csrf, "prefetch": config.prefetch}


@router.get("/api/guidance")
def guidance(who: Who = Depends(user)):
    return {"general": GENERAL, "classes": GUIDANCE}


# ---- annotating -------------------------------------------------------------------------------


@router.get("/api/batches")
def batches(who: Who = Depends(user), db: Database = Depends(get_db)):
    rows = stats.batch_list(db, who.id)
    return rows if who.is_admin else [r for r in rows if r["active"]]


@router.post("/api/batches/{batch_id}/next")
def next_tasks(batch_id: Id, body: NextBody, who: Who = Depends(writer), db: Database = Depends(get_db),
               config: AnnotationConfig = Depends(get_config)):
    count = body.count or 1 + config.prefetch
    return {"tasks": queue.claim(db, batch_id, who.id, count, lease_seconds=config.lease_seconds)}


@router.post("/api/batches/{batch_id}/undo")
def undo(batch_id: Id, who: Who = Depends(writer), db: Database = Depends(get_db)):
    return queue.undo(db, batch_id, who.id)


def _with_next(result: dict, who: Who, count: int | None, request: Request) -> dict:
    if count:
        db, config = request.app.state.db, request.app.state.config
        try:
            result["tasks"] = queue.claim(db, result["batch"], who.id, count, lease_seconds=config.lease_seconds)
        except (queue.Conflict, queue.NotFound):  # e.g. the batch was closed: the answer still counts
            result["tasks"] = []
    return result


@router.post("/api/assignments/{assignment_id}/label")
def label(assignment_id: Id, body: LabelBody, request: Request, who: Who = Depends(writer)):
    result = queue.answer_label(request.app.state.db, assignment_id, who.id, body.label, body.duration_ms)
    return _with_next(result, who, body.next, request)


@router.post("/api/assignments/{assignment_id}/rank")
def rank(assignment_id: Id, body: RankBody, request: Request, who: Who = Depends(writer)):
    result = queue.answer_ranking(request.app.state.db, assignment_id, who.id, body.ranking, body.duration_ms)
    return _with_next(result, who, body.next, request)


@router.post("/api/assignments/{assignment_id}/skip")
def skip(assignment_id: Id, request: Request, body: SkipBody | None = None, who: Who = Depends(writer)):
    result = queue.skip(request.app.state.db, assignment_id, who.id)
    return _with_next(result, who, body.next if body else None, request)


@router.get("/api/assignments/{assignment_id}")
def get_assignment(assignment_id: Id, who: Who = Depends(user), db: Database = Depends(get_db)):
    with db.read() as s:
        a = s.get(Assignment, assignment_id)
        if a is None or a.user_id != who.id:
            raise queue.NotFound(f"no assignment {assignment_id} of yours")
        kind = "availability" if a.task.image_path else "preference"
        return {**queue.task_payload(s, a.id, kind), "ranking": a.ranking}


@router.get("/api/my/answers")
def my_answers(batch: QueryId = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100, who: Who = Depends(user),
               db: Database = Depends(get_db)):
    query = select(Assignment).where(Assignment.user_id == who.id, Assignment.state == "answered")
    if batch is not None:
        query = query.where(Assignment.batch_id == batch)
    with db.read() as s:
        rows = s.scalars(query.order_by(Assignment.answered_at.desc()).limit(limit))
        return [{"assignment": a.id, "task": a.task_id, "batch": a.batch_id, "label": a.label,
                 "ranking": a.ranking, "answered_at": a.answered_at.isoformat() + "Z"} for a in rows]


# ---- images: by id, from paths fixed at import; never a path from the URL -----------------------


def _roots(batch) -> list[Path]:
    """The folders a batch's files must lie under: kept at import (imported folders and --allow-root),
    else, for batches imported before that, the folders named in its source."""
    roots = (batch.meta or {}).get("roots") or [line for line in (batch.source or "").split("\n") if line]
    return [Path(r) for r in roots]


def _file(path: str | None, *, roots: list[Path], nsfw: bool = False) -> Response:
    if not path or "\x00" in path or Path(path).suffix.lower() not in IMAGE_EXTENSIONS or not Path(path).is_file():
        raise HTTPException(404, "no such image")
    real = Path(path).resolve()  # links followed now, not only at import: a link swapped since is refused
    if not any(real.is_relative_to(root) for root in roots):
        logger.warning("refused to serve %s: it resolves to %s, outside the batch's folders", path, real)
        raise HTTPException(404, "no such image")
    if nsfw:
        return _blurred(path)
    return FileResponse(path)


NSFW_PREVIEW = 512  # px: the size a flagged image is served at, blurred


def _blurred(path: str) -> Response:
    """An image the safety checker flagged is never served as it is: only a heavily blurred copy."""
    import io

    from PIL import Image

    from reliable_ad.data.records import blur_flagged

    try:
        with Image.open(path) as im:
            preview = blur_flagged(im, NSFW_PREVIEW)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise HTTPException(404, "no such image") from e
    buf = io.BytesIO()
    preview.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png")


def _may_see(s, who: Who, task_id: int) -> bool:
    """Admins see every image; an annotator only those of tasks handed to them."""
    return who.is_admin or bool(s.scalar(select(exists().where(
        Assignment.task_id == task_id, Assignment.user_id == who.id))))


@router.get("/media/task/{task_id}/{which}")
def task_media(task_id: Id, which: str, who: Who = Depends(user), db: Database = Depends(get_db)):
    if which not in ("image", "product"):
        raise HTTPException(404, "no such image")
    with db.read() as s:
        task = s.get(Task, task_id)
        if task is None or not _may_see(s, who, task_id):
            raise HTTPException(404, "no such image")
        path = task.image_path if which == "image" else task.product_path
        nsfw = which == "image" and bool((task.meta or {}).get("nsfw"))
        roots = _roots(s.get(Batch, task.batch_id))
    return _file(path, roots=roots, nsfw=nsfw)


@router.get("/media/candidate/{candidate_id}")
def candidate_media(candidate_id: Id, who: Who = Depends(user), db: Database = Depends(get_db)):
    with db.read() as s:
        c = s.get(Candidate, candidate_id)
        if c is None or not _may_see(s, who, c.task_id):
            raise HTTPException(404, "no such image")
        path, nsfw = c.image_path, bool((c.meta or {}).get("nsfw"))
        roots = _roots(s.get(Batch, s.get(Task, c.task_id).batch_id))
    return _file(path, roots=roots, nsfw=nsfw)
