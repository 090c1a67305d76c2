"""The work queue: hand tasks to annotators, take their answers, undo and skip.

Invariants, which hold under any number of concurrent annotators on SQLite or PostgreSQL:
- a task's ``needed`` is k minus its open and answered assignments, never below zero: a claim is a
  conditional ``UPDATE ... SET needed = needed - 1 WHERE needed > 0``, atomic on both backends;
- (task, annotator) is unique, so nobody is shown a task twice, and nobody answers one twice;
- a held task goes back to the queue when its holder lets it sit: after a short hold
  (``HOLD_SECONDS``) when they have not answered or skipped anything in the batch since shortly
  before they were handed it (someone who opened the page and left), after the lease otherwise;
  each request for tasks renews the holder's hold, and the page asks while the annotator works.
  A late answer still counts when the task has room for it;
- an answer is given once: the same answer again (a retried request) changes nothing, a different
  one (from a second tab) is refused; undo reopens an answer to change it.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from reliable_ad.annotation.agreement import parse_ranking
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Batch, Candidate, Task, utcnow

__all__ = ["NotFound", "Conflict", "claim", "answer_label", "answer_ranking", "skip", "undo", "task_payload",
           "expire_leases", "HOLD_SECONDS", "ANSWERED_ELSEWHERE"]


class NotFound(LookupError):
    """No such thing for this user (also what another annotator's assignment looks like)."""


class Conflict(RuntimeError):
    """The request is valid but the state does not allow it (e.g. the task has its k answers)."""


# Items handed to someone who has not started working on the batch (no answer or skip since shortly
# before) are held this long, so an admin glancing at a batch keeps nothing from annotators for
# long; the page renews the hold while its user is active (see static/common.js, keepHold).
HOLD_SECONDS = 120
ANSWERED_ELSEWHERE = "you already answered this item in another tab; reload to continue"

_EXPIRY_EVERY = timedelta(seconds=15)
_last_expiry: dict[tuple[str, int], datetime] = {}
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


def expire_leases(s, batch_id: int, lease_seconds: int, now: datetime | None = None, *,
                  hold_seconds: int | None = None) -> int:
    """Return held-but-unanswered tasks to the queue; the count.

    An open assignment goes back when it was handed out (or last renewed) over ``lease_seconds``
    ago or, with ``hold_seconds``, over ``hold_seconds`` ago to a holder whose latest answer or skip
    in the batch is older than ``hold_seconds`` before that hand-out: someone who has not started
    working, like an admin who opened the page and left.
    """
    now = now or utcnow()
    lease_cutoff = now - timedelta(seconds=lease_seconds)
    hold = timedelta(seconds=hold_seconds) if hold_seconds is not None else None
    cutoff = lease_cutoff if hold is None else max(lease_cutoff, now - hold)
    held = s.execute(
        select(Assignment.id, Assignment.task_id, Assignment.user_id, Assignment.leased_at).where(
            Assignment.batch_id == batch_id, Assignment.state == "open", Assignment.leased_at < cutoff)
    ).all()
    last_work: dict[int, datetime] = {}
    if hold is not None and held:
        last_work = dict(s.execute(
            select(Assignment.user_id, func.max(Assignment.answered_at)).where(
                Assignment.batch_id == batch_id, Assignment.user_id.in_({r.user_id for r in held}),
                Assignment.answered_at.is_not(None)).group_by(Assignment.user_id)).all())

    def stale(row) -> bool:
        if row.leased_at < lease_cutoff:
            return True
        if hold is None or row.leased_at >= now - hold:
            return False
        worked = last_work.get(row.user_id)
        return worked is None or worked < row.leased_at - hold

    n = 0
    for row in filter(stale, held):
        done = s.execute(update(Assignment).where(Assignment.id == row.id, Assignment.state == "open")
                         .values(state="expired"))
        if done.rowcount:
            s.execute(update(Task).where(Task.id == row.task_id).values(needed=Task.needed + 1))
            n += 1
    return n


def _maybe_expire(db: Database, s, batch_id: int, lease_seconds: int, hold_seconds: int | None,
                  now: datetime) -> None:
    key = (db.url, batch_id)
    with _expiry_lock:
        last = _last_expiry.get(key)
        if last is not None and timedelta(0) <= now - last < _EXPIRY_EVERY:
            return
        _last_expiry[key] = now
    expire_leases(s, batch_id, lease_seconds, now, hold_seconds=hold_seconds)


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


def claim(db: Database, batch_id: int, user_id: int, count: int, *, lease_seconds: int = 1800,
          hold_seconds: int | None = HOLD_SECONDS) -> list[dict]:
    """The user's open tasks in a batch, topped up to ``count`` (the one shown plus those preloaded),
    oldest first. Fewer when the batch has no more work for this user. Renews the hold on the tasks
    the user has (see :func:`expire_leases` for how long a hold lasts)."""
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
            now = utcnow()
            # renew first, so a user who comes back keeps what nobody has taken over yet
            s.execute(update(Assignment).where(Assignment.user_id == user_id, Assignment.batch_id == batch_id,
                                               Assignment.state == "open").values(leased_at=now))
            _maybe_expire(db, s, batch_id, lease_seconds, hold_seconds, now)
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


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _answer(db: Database, assignment_id: int, user_id: int, kind: str, answer_of) -> dict:
    """Record an answer: ``answer_of(assignment)`` gives the columns to set (validated there).

    An open task is answered in one statement when the answer needs no look at the assignment
    (``answer_of`` takes None then). An answered one keeps its answer: the same answer again is a
    retried request and changes nothing; a different one, from a second tab, is refused."""
    fast = answer_of(None)

    def result(a_id: int, batch_id: int, values: dict) -> dict:
        return {"assignment": a_id, "batch": batch_id, "state": "answered", "label": values.get("label"),
                "ranking": values.get("ranking"), "duration_ms": values.get("duration_ms")}

    def run():
        with db.write() as s:
            if fast is not None:  # the common case in one statement: an open task of the right kind
                done = s.execute(update(Assignment).where(
                    Assignment.id == assignment_id, Assignment.user_id == user_id, Assignment.state == "open",
                    exists().where(Batch.id == Assignment.batch_id, Batch.kind == kind),
                ).values(state="answered", answered_at=utcnow(), **fast).returning(Assignment.batch_id)).first()
                if done is not None:
                    return result(assignment_id, done.batch_id, fast)
            a = _own(s, assignment_id, user_id)
            batch_kind = s.scalar(select(Batch.kind).where(Batch.id == a.batch_id))
            if batch_kind != kind:
                raise ValueError(f"assignment {assignment_id} is {_article(batch_kind)} task, "
                                 f"not {_article(kind)} task")
            values = answer_of(a)
            if a.state == "answered":
                if all(getattr(a, column) == value for column, value in values.items() if column != "duration_ms"):
                    return result(a.id, a.batch_id, {c: getattr(a, c) for c in ("label", "ranking", "duration_ms")})
                raise Conflict(ANSWERED_ELSEWHERE)
            if a.state in ("expired", "skipped"):
                _retake(s, a)
            for column, value in values.items():
                setattr(a, column, value)
            a.state = "answered"
            a.answered_at = utcnow()
            return result(a.id, a.batch_id, values)

    return _retry(run)


def _duration(duration_ms) -> int | None:
    if duration_ms is None:
        return None
    if not isinstance(duration_ms, int) or isinstance(duration_ms, bool) or duration_ms < 0:
        raise ValueError(f"duration_ms={duration_ms!r} must be a non-negative int")
    return min(duration_ms, 24 * 3600 * 1000)


def answer_label(db: Database, assignment_id: int, user_id: int, label: int, duration_ms: int | None = None) -> dict:
    """Record the user's availability label, a class index 0..5 (undo first to change it)."""
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(LABELS):
        raise ValueError(f"label={label!r} must be a class index 0..{len(LABELS) - 1} ({', '.join(LABELS)})")
    values = {"label": label, "duration_ms": _duration(duration_ms)}
    return _answer(db, assignment_id, user_id, "availability", lambda a: values)


def answer_ranking(db: Database, assignment_id: int, user_id: int, ranking, duration_ms: int | None = None) -> dict:
    """Record the user's ranking: what they typed ("312": image numbers as shown, best first) or a
    list of those numbers. Stored as candidate ids, best first, beside the order shown."""
    duration = _duration(duration_ms)

    def answer_of(a: Assignment | None) -> dict | None:
        if a is None:
            return None  # the shown order is needed
        order = a.display_order or []
        positions = parse_ranking(ranking, len(order))
        return {"ranking": [order[p] for p in positions], "duration_ms": duration}

    return _answer(db, assignment_id, user_id, "preference", answer_of)


def skip(db: Database, assignment_id: int, user_id: int) -> dict:
    """Pass a task on to others; the user never gets it back (undo brings it back at once)."""
    def run():
        with db.write() as s:
            a = _own(s, assignment_id, user_id)
            if a.state == "answered":
                raise Conflict(ANSWERED_ELSEWHERE)
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
