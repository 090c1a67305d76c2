"""Run the annotation app with uvicorn, and make sure someone can log in as an admin."""

from __future__ import annotations

import logging

from sqlalchemy import select

from reliable_ad.annotation import security
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.models import User

logger = logging.getLogger(__name__)


def ensure_admin(db: Database, config: AnnotationConfig) -> str | None:
    """With no usable admin account, an invite for the user ``admin``; its path, else None."""
    with db.write() as s:
        admins = list(s.scalars(select(User).where(User.role == "admin", User.active.is_(True))))
        if any(u.password_hash for u in admins):
            return None
        user = s.scalar(select(User).where(User.username == "admin"))
        if user is None:
            user, token = security.create_user(s, "admin", "admin", invite_hours=config.invite_hours)
        else:
            user.role, user.active = "admin", True
            token = security.reinvite(s, user, config.invite_hours)
        return f"/invite#{token}"


def serve(config: AnnotationConfig, *, access_log: bool = False) -> None:
    try:
        import uvicorn
    except ModuleNotFoundError as e:
        raise ImportError("serving needs uvicorn and fastapi: pip install fastapi uvicorn") from e
    from reliable_ad.annotation.app import create_app

    db = Database(config.db)
    invite = ensure_admin(db, config)
    host = "localhost" if config.host in ("127.0.0.1", "::1") else config.host
    base = f"http://{host}:{config.port}"
    print(f"annotation server on {base} (database {db.url.split('@')[-1]})", flush=True)
    if invite:
        print(f"no admin can log in yet: open {base}{invite} to set the admin password", flush=True)
    uvicorn.run(create_app(config, db), host=config.host, port=config.port, log_level="warning",
                access_log=access_log, server_header=False)
