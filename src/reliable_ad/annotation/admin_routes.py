"""The admin API: batch statistics and settings, the disagreement review, accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from reliable_ad.annotation import queue, security, stats
from reliable_ad.annotation.agreement import json_safe
from reliable_ad.annotation.auth import Id, Who, admin, admin_writer, get_config, get_db
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.models import ROLES, User

router = APIRouter(prefix="/api/admin")


class ResolveBody(BaseModel):
    label: int | None = Field(default=None, ge=0, le=5)  # null clears an earlier decision


class BatchBody(BaseModel):
    k: int | None = Field(default=None, ge=1, le=50)
    order: str | None = Field(default=None, max_length=32)
    active: bool | None = None


class NewUserBody(BaseModel):
    username: str = Field(max_length=64)
    role: str = Field(default="annotator", max_length=16)
    password: str | None = Field(default=None, max_length=1024)  # None: an invite link instead


class UserBody(BaseModel):
    active: bool | None = None
    role: str | None = Field(default=None, max_length=16)
    reinvite: bool = False


@router.get("/batches/{batch_id}/stats")
def batch_stats(batch_id: Id, who: Who = Depends(admin), db: Database = Depends(get_db)):
    return json_safe(stats.batch_stats(db, batch_id))


@router.get("/batches/{batch_id}/disagreements")
def batch_disagreements(batch_id: Id, limit: Annotated[int, Query(ge=1, le=500)] = 50, who: Who = Depends(admin),
                        db: Database = Depends(get_db)):
    return stats.disagreements(db, batch_id, limit)


@router.post("/batches/{batch_id}")
def change_batch(batch_id: Id, body: BatchBody, who: Who = Depends(admin_writer), db: Database = Depends(get_db)):
    return stats.update_batch(db, batch_id, k=body.k, order=body.order, active=body.active)


@router.post("/tasks/{task_id}/resolve")
def resolve(task_id: Id, body: ResolveBody, who: Who = Depends(admin_writer), db: Database = Depends(get_db)):
    return stats.resolve(db, task_id, body.label, who.id)


@router.get("/users")
def users(who: Who = Depends(admin), db: Database = Depends(get_db)):
    with db.read() as s:
        return [{"id": u.id, "username": u.username, "role": u.role, "active": u.active,
                 "invited": u.password_hash is None} for u in s.scalars(select(User).order_by(User.id))]


@router.post("/users")
def add_user(body: NewUserBody, who: Who = Depends(admin_writer), db: Database = Depends(get_db),
             config: AnnotationConfig = Depends(get_config)):
    with db.write() as s:
        new, invite = security.create_user(s, body.username, body.role, password=body.password,
                                           invite_hours=config.invite_hours)
        return {"id": new.id, "username": new.username, "role": new.role,
                "invite_url": f"/invite#{invite}" if invite else None}


@router.post("/users/{user_id}")
def change_user(user_id: Id, body: UserBody, request: Request, who: Who = Depends(admin_writer),
                db: Database = Depends(get_db), config: AnnotationConfig = Depends(get_config)):
    with db.write() as s:
        target = s.get(User, user_id)
        if target is None:
            raise queue.NotFound(f"no user {user_id}")
        if target.id == who.id and (body.active is False or body.role == "annotator"):
            raise queue.Conflict("you cannot lock yourself out; ask another admin")
        if body.role is not None:
            if body.role not in ROLES:
                raise ValueError(f"role {body.role!r} must be one of {ROLES}")
            target.role = body.role
        if body.active is not None:
            target.active = body.active
        invite = security.reinvite(s, target, config.invite_hours) if body.reinvite else None
        result = {"id": target.id, "username": target.username, "role": target.role, "active": target.active,
                  "invite_url": f"/invite#{invite}" if invite else None}
    request.app.state.sessions.clear()  # a disabled or demoted user's cached login goes at once
    return result
