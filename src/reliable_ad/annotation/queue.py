"""The work queue: hand tasks to annotators, take their answers, undo and skip.

Invariants, which hold under any number of concurrent annotators on SQLite or PostgreSQL:
- a task's ``needed`` is k minus its open and answered assignments, never below zero: a claim is a
  conditional ``UPDATE ... SET needed = needed - 1 WHERE needed > 0``, atomic on both backends;
- (task, annotator) is unique, so nobody is shown a task twice, and a repeated answer (a retried
  request) changes the one answer instead of adding another;
- a held task that is not answered within the lease goes back to the queue; a late answer still
  counts when the task has room for it.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from reliable_ad.annotation.agreement import parse_ranking
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Batch, Candidate, Task, utcnow

__all__ = ["NotFound", "Conflict", "claim", "answer_label", "answer_ranking", "skip", "undo", "task_payload",
           "expire_leases"]


class NotFound(LookupError):
    """No such thing for this user (also what another annotator's assignment looks like)."""


class Conflict(RuntimeError):
    """The request is valid but the state does not allow it (e.g. the task has its k answers)."""


_EXPIRY_EVERY_S = 15.0
_last_expiry: dict[tuple[str, int], float] = {}
_expiry_lock = threading.Lock()


def _retry(fn, attempts: int = 4):
    """Run a write ``fn`` again after a unique-key race (one user's two tabs) or a deadlock."""
    for i in range(attempts):
        try:
            return fn()
        except (IntegrityError, OperationalError):
            if i == attempts - 1:
                raise
            time.sleep(0.01 * (i + 1))


def expire_leases(s, batch_id: int, lease_seconds: int, now: datetime | None = None) -> int:
    """Return held-but-unanswered tasks older than the lease to the queue; the count."""
    cutoff = (now or utcnow()) - timedelta(seconds=lease_seconds)
    stale = s.execute(
        select(Assignment.id, Assignment.task_id).where(
            Assignment.batch_id == batch_id, Assignment.state == "open", Assignment.leased_at < cutoff)
    ).all()
    n = 0
    for assignment_id, task_id in stale:
        done = s.execute(update(Assignment).where(Assignment.id == assignment_id, Assignment.state == "open")
                         .values(state="expired"))
        if done.rowcount:
            s.execute(update(Task).where(Task.id == task_id).values(needed=Task.needed + 1))
            n += 1
    return n


def _maybe_expire(db: Database, s, batch_id: int, lease_seconds: int) -> None:
    key, now = (db.url, batch_id), time.monotonic()
    with _expiry_lock:
        if now - _last_expiry.get(key, -1e9) < _EXPIRY_EVERY_S:
            return
        _last_expiry[key] = now
    expire_leases(s, batch_id, lease_seconds)


def _order(order: str):
    if order == "uncertainty":
        return (Task.uncertainty.desc().nulls_last(), Task.id)
    if order == "random":
        return (Task.shuffle, Task.id)
    return (Task.id,)


def _display_order(s, task_id: int, user_id: int) -> list[int]:
    ids = list(s.scalars(select(Candidate.id).where(Candidate.task_id == task_id).order_by(Candidate.position)))
    random.Random(f"{task_id}:{user_id}").shuffle(ids)  # per annotator, reproducible, and stored
    return ids


_HELD_COLUMNS = (Assignment.id, Assignment.task_id, Assignment.state, Assignment.label, Assignment.display_order,
                 Task.caption, Task.product_id, Task.product_path.is_not(None).label("has_product"))


def _held(s, batch_id: int, user_id: int) -> list:
    return s.execute(select(*_HELD_COLUMNS).join(Task, Task.id == Assignment.task_id)
                     .where(Assignment.user_id == user_id, Assignment.batch_id == batch_id, Assignment.state == "open")
                     .order_by(Assignment.leased_at, Assignment.id)).all()


def _take(s, is_sqlite: bool, batch, batch_id: int, user_id: int, missing: int) -> None:
    """Hand ``missing`` more tasks of the batch to the user, in queue order, if there are any.

    PostgreSQL: candidates are locked FOR UPDATE SKIP LOCKED, so concurrent claimers take different
    tasks instead of queueing on the same rows. Rows another claimer holds may still have room after
    it commits, so before answering "nothing left" a second round waits for them; it runs only when
    this claim holds no task lock yet, so it cannot close a deadlock cycle. SQLite: writers are
    serialised anyway; spare candidates cover tasks that filled up since the read. On both, the
    conditional update is what guarantees that no task gets more than k.
    """
    seen = exists().where(and_(Assignment.task_id == Task.id, Assignment.user_id == user_id))
    query = (select(Task.id).where(Task.batch_id == batch_id, Task.needed > 0, ~seen)
             .order_by(*_order(batch.order)))
    now = utcnow()
    # SQLite: up to three reads with spares; PostgreSQL: skip locked rows, then wait for them
    rounds = ("spare",) * 3 if is_sqlite else ("skip_locked", "wait")
    got_none = True
    for how in rounds:
        if how == "spare":
            candidates = s.scalars(query.limit(missing + 8)).all()
        else:
            locked = query.limit(missing).with_for_update(of=Task, skip_locked=how == "skip_locked")
            candidates = s.scalars(locked).all()
        if how == "wait" and not got_none:
            return  # this claim got some tasks: never wait while holding their locks
        got_none = not candidates
        if got_none and how != "skip_locked":
            return
        for task_id in candidates:
            taken = s.execute(update(Task).where(Task.id == task_id, Task.needed > 0).values(needed=Task.needed - 1))
            if not taken.rowcount:
                continue
            order = _display_order(s, task_id, user_id) if batch.kind == "preference" else None
            s.execute(insert(Assignment).values(task_id=task_id, user_id=user_id, batch_id=batch_id,
                                                state="open", leased_at=now, display_order=order))
            missing -= 1
            if missing == 0:
                return


def claim(db: Database, batch_id: int, user_id: int, count: int, *, lease_seconds: int = 1800) -> list[dict]:
    """The user's open tasks in a batch, topped up to ``count`` (the one shown plus those preloaded),
    oldest first. Fewer when the batch has no more work for this user."""
    if not 1 <= count <= 20:
        raise ValueError(f"count={count} must be 1..20")

    def run():
        with db.write() as s:
            batch = s.execute(select(Batch.kind, Batch.active, Batch.order, Batch.name)
                              .where(Batch.id == batch_id)).first()
            if batch is None:
                raise NotFound(f"no batch {batch_id}")
            if not batch.active:
                raise Conflict(f"batch {batch.name!r} is closed")
            _maybe_expire(db, s, batch_id, lease_seconds)
            held = _held(s, batch_id, user_id)
            missing = count - len(held)
            if missing > 0:
                _take(s, db.is_sqlite, batch, batch_id, user_id, missing)
                held = _held(s, batch_id, user_id)
            return [_payload(row, batch.kind) for row in held]

    return _retry(run)


def _own(s, assignment_id: int, user_id: int) -> Assignment:
    a = s.get(Assignment, assignment_id)
    if a is None or a.user_id != user_id:
        raise NotFound(f"no assignment {assignment_id} of yours")
    return a


def _retake(s, a: Assignment) -> None:
    """An expired or skipped assignment answered after all: it needs a free slot of its task."""
    taken = s.execute(update(Task).where(Task.id == a.task_id, Task.needed > 0).values(needed=Task.needed - 1))
    if not taken.rowcount:
        raise Conflict("this item already has all its answers from other annotators; yours was not needed")


def _answer(db: Database, assignment_id: int, user_id: int, kind: str, set_answer, fast: dict | None = None) -> dict:
    def run():
        with db.write() as s:
            if fast is not None:  # the common case in one statement: an open (or answered) task of the right kind
                done = s.execute(update(Assignment).where(
                    Assignment.id == assignment_id, Assignment.user_id == user_id,
                    Assignment.state.in_(("open", "answered")),
                    exists().where(Batch.id == Assignment.batch_id, Batch.kind == kind),
                ).values(state="answered", answered_at=utcnow(), **fast).returning(Assignment.batch_id)).first()
                if done is not None:
                    return {"assignment": assignment_id, "batch": done.batch_id, "state": "answered", **fast}
            a = _own(s, assignment_id, user_id)
            batch_kind = s.scalar(select(Batch.kind).where(Batch.id == a.batch_id))
            if batch_kind != kind:
                raise ValueError(f"assignment {assignment_id} is a {batch_kind} task, not a {kind} task")
            if a.state in ("expired", "skipped"):
                _retake(s, a)
            set_answer(a)
            a.state = "answered"
            a.answered_at = utcnow()
            return {"assignment": a.id, "batch": a.batch_id, "state": a.state, "label": a.label, "ranking": a.ranking,
                    "duration_ms": a.duration_ms}

    return _retry(run)


def _duration(duration_ms) -> int | None:
    if duration_ms is None:
        return None
    if not isinstance(duration_ms, int) or isinstance(duration_ms, bool) or duration_ms < 0:
        raise ValueError(f"duration_ms={duration_ms!r} must be a non-negative int")
    return min(duration_ms, 24 * 3600 * 1000)


def answer_label(db: Database, assignment_id: int, user_id: int, label: int, duration_ms: int | None = None) -> dict:
    """Record (or change) the user's availability label, a class index 0..5."""
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(LABELS):
        raise ValueError(f"label={label!r} must be a class index 0..{len(LABELS) - 1} ({', '.join(LABELS)})")
    duration = _duration(duration_ms)

    def set_answer(a: Assignment) -> None:
        a.label = label
        a.duration_ms = duration

    return _answer(db, assignment_id, user_id, "availability", set_answer, {"label": label, "duration_ms": duration})


def answer_ranking(db: Database, assignment_id: int, user_id: int, ranking, duration_ms: int | None = None) -> dict:
    """Record the user's ranking: what they typed ("1423": image numbers as shown, best first) or a
    list of those numbers. Stored as candidate ids, best first, beside the order shown."""
    duration = _duration(duration_ms)

    def set_answer(a: Assignment) -> None:
        order = a.display_order or []
        positions = parse_ranking(ranking, len(order))
        a.ranking = [order[p] for p in positions]
        a.duration_ms = duration

    return _answer(db, assignment_id, user_id, "preference", set_answer)


def skip(db: Database, assignment_id: int, user_id: int) -> dict:
    """Pass a task on to others; the user never gets it back (undo brings it back at once)."""
    def run():
        with db.write() as s:
            a = _own(s, assignment_id, user_id)
            if a.state == "answered":
                raise Conflict("this item is answered already; undo first to change the answer")
            if a.state == "open":
                s.execute(update(Task).where(Task.id == a.task_id).values(needed=Task.needed + 1))
            if a.state in ("open", "expired"):
                a.state = "skipped"
                a.answered_at = utcnow()
            return {"assignment": a.id, "batch": a.batch_id, "state": a.state}

    return _retry(run)


def undo(db: Database, batch_id: int, user_id: int) -> dict:
    """Reopen the user's latest answer or skip in a batch and return that task, to be shown again.
    Repeated undos go further back."""
    def run():
        with db.write() as s:
            a = s.scalars(
                select(Assignment).where(Assignment.user_id == user_id, Assignment.batch_id == batch_id,
                                         Assignment.state.in_(("answered", "skipped")))
                .order_by(Assignment.answered_at.desc(), Assignment.id.desc()).limit(1)).first()
            if a is None:
                raise NotFound("nothing to undo in this batch")
            undone = a.state
            if a.state == "skipped":
                _retake(s, a)
            a.state, a.label, a.ranking, a.answered_at, a.duration_ms = "open", None, None, None, None
            a.leased_at = utcnow()
            kind = s.scalar(select(Batch.kind).where(Batch.id == batch_id))
            s.flush()
            return {**task_payload(s, a.id, kind), "undone": undone}

    return _retry(run)


def _payload(row, kind: str) -> dict:
    """What the page needs to show one assignment. Blind: no method names, no RFNet verdict."""
    out = {
        "assignment": row.id,
        "task": row.task_id,
        "kind": kind,
        "state": row.state,
        "caption": row.caption,
        "product_id": row.product_id,
        "product_url": f"/media/task/{row.task_id}/product" if row.has_product else None,
    }
    if kind == "availability":
        out["image_url"] = f"/media/task/{row.task_id}/image"
        out["label"] = row.label
    else:
        out["candidates"] = [{"id": cid, "number": i + 1, "url": f"/media/candidate/{cid}"}
                             for i, cid in enumerate(row.display_order or [])]
    return out


def task_payload(s, assignment_id: int, kind: str) -> dict:
    """The page's view of one assignment (see :func:`_payload`)."""
    row = s.execute(select(*_HELD_COLUMNS).join(Task, Task.id == Assignment.task_id)
                    .where(Assignment.id == assignment_id)).one()
    return _payload(row, kind)
