"""Database tables of the annotation app (SQLAlchemy 2 ORM); Alembic migrations create them.

A *batch* is one imported run (or RF1M folder, or set of runs to compare). Its *tasks* are what an
annotator answers: one generated image to label (availability), or one product's images from
several methods to rank (preference; the images are its *candidates*). An *assignment* is one
annotator's hold on, and answer to, one task; (task, user) is unique, so nobody sees a task twice,
and ``Task.needed`` counts the assignments still wanted, so every task ends with exactly k answers.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("annotator", "admin")
BATCH_KINDS = ("availability", "preference")
# open: held, not answered yet; answered: labelled or ranked; skipped: passed on; expired: held too long
ASSIGNMENT_STATES = ("open", "answered", "skipped", "expired")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC: one meaning on every backend


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    password_hash: Mapped[str | None] = mapped_column(String(255))  # None until an invite is accepted
    invite_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the invite token
    invite_expires: Mapped[datetime | None] = mapped_column(DateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuthSession(Base):
    __tablename__ = "auth_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    user: Mapped[User] = relationship(lazy="joined")


class Batch(Base):
    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # availability | preference
    source: Mapped[str] = mapped_column(Text)  # what was imported (folders), for the record
    k: Mapped[int] = mapped_column(Integer)  # answers wanted per task
    order: Mapped[str] = mapped_column(String(16), default="sequential")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("batch_id", "key", name="uq_tasks_batch_key"),
        # the queue: open tasks of a batch (a partial index stays small as tasks fill up)
        Index("ix_tasks_open", "batch_id", "id", sqlite_where=text("needed > 0"), postgresql_where=text("needed > 0")),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(1024))  # the image's path in its run, or the product and seed
    product_id: Mapped[str] = mapped_column(String(255))
    product_path: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str] = mapped_column(Text, default="")
    image_path: Mapped[str | None] = mapped_column(Text)  # availability tasks only
    meta: Mapped[dict] = mapped_column(JSON, default=dict)  # prompt, seed, preset, attempt, ...
    reference_label: Mapped[int | None] = mapped_column(Integer)  # a label that came with the import (RF1M)
    rfnet_label: Mapped[int | None] = mapped_column(Integer)  # an inspected run's verdict
    rfnet_probs: Mapped[list | None] = mapped_column(JSON)
    uncertainty: Mapped[float | None] = mapped_column(Float)  # RFNet's, for the active-learning order
    shuffle: Mapped[float] = mapped_column(Float, default=0.0)  # fixed random key for the random order
    needed: Mapped[int] = mapped_column(Integer)  # assignments still wanted (k minus open and answered)
    final_label: Mapped[int | None] = mapped_column(Integer)  # an admin's decision on a disagreement
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    candidates: Mapped[list[Candidate]] = relationship(order_by="Candidate.position", lazy="select")


class Candidate(Base):
    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # import order; annotators see their own shuffle
    method: Mapped[str] = mapped_column(String(200))
    image_path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict] = mapped_column(JSON, default=dict)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id", name="uq_assignments_task_user"),
        Index("ix_assignments_user_state", "user_id", "state"),
        Index("ix_assignments_task_state", "task_id", "state"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="open")
    label: Mapped[int | None] = mapped_column(Integer)  # availability: class index 0..5
    ranking: Mapped[list | None] = mapped_column(JSON)  # preference: candidate ids, best first
    display_order: Mapped[list | None] = mapped_column(JSON)  # preference: candidate ids as shown
    leased_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # when last handed to the annotator
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)  # time the annotator spent, from the page
    task: Mapped[Task] = relationship(lazy="joined", innerjoin=True)
