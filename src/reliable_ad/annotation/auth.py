"""Who is asking, as FastAPI dependencies: the session cookie names a login (looked up in the
database, cached for a few seconds), state changes need that login's CSRF token, admin calls need
the admin role. The login and invite forms use a double-submit CSRF cookie instead."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request, Response

from reliable_ad.annotation import security
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database

SESSION_COOKIE = "rad_session"
LOGIN_COOKIE = "rad_login"  # double-submit CSRF token of the login and invite forms

# Every id in a URL (path or query): at least 1 and at most what the tables' Integer columns hold on
# every backend (32 bits on PostgreSQL, which refuses a larger number outright), so an id that no
# row can have is answered 422 (out of range) or 404 (no such row), never a database error.
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID)]
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@dataclass(frozen=True)
class Who:
    id: int
    username: str
    role: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class SessionCache:
    """Logins looked up in the last few seconds, so a busy annotator's requests skip one query each.
    This process forgets every login at a logout or a change to a user; another server process
    notices within ``ttl_s``."""

    def __init__(self, ttl_s: float = 5.0, size: int = 10_000):
        self.ttl_s, self.size = ttl_s, size
        self._entries: dict[str, tuple[float, Who]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Who | None:
        entry = self._entries.get(token)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            return None
        return entry[1]

    def put(self, token: str, who: Who) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[token] = (time.monotonic(), who)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_config(request: Request) -> AnnotationConfig:
    return request.app.state.config


def who_of(request: Request) -> Who | None:
    """The logged-in user of a request, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    cache: SessionCache = request.app.state.sessions
    who = cache.get(token)
    if who is None:
        with request.app.state.db.read() as s:
            row = security.find_session(s, token)
            if row is None:
                return None
            who = Who(row.user.id, row.user.username, row.user.role, row.csrf_token)
        cache.put(token, who)
    return who


# async: FastAPI runs a plain function in a worker thread, one hop per dependency; these are cheap
# (the login lookup is cached; a miss is one indexed read)
async def user(request: Request) -> Who:
    who = who_of(request)
    if who is None:
        raise HTTPException(401, "log in first")
    return who


async def writer(request: Request, who: Who = Depends(user)) -> Who:
    if not security.tokens_equal(request.headers.get("x-csrf-token"), who.csrf):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page")
    return who


async def admin(who: Who = Depends(user)) -> Who:
    if not who.is_admin:
        raise HTTPException(403, "admins only")
    return who


async def admin_writer(who: Who = Depends(writer)) -> Who:
    if not who.is_admin:
        raise HTTPException(403, "admins only")
    return who


def client_address(request: Request) -> str:
    """The client's IP address, what failed logins are counted by. Behind a reverse proxy on the same
    machine uvicorn puts the proxy's X-Forwarded-For here (it trusts 127.0.0.1 by default; see
    uvicorn's --forwarded-allow-ips); a header from anyone else is ignored."""
    return request.client.host if request.client else "unknown"


def check_login_csrf(request: Request) -> None:
    if not security.tokens_equal(request.headers.get("x-csrf-token"), request.cookies.get(LOGIN_COOKIE)):
        raise HTTPException(403, "missing or wrong CSRF token; reload the login page")


def set_session_cookie(response: Response, token: str, config: AnnotationConfig) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(config.session_hours * 3600), httponly=True,
                        samesite="lax", secure=config.secure_cookies, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/")
