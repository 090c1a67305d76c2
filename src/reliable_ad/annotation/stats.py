"""What the admin page shows: progress, per-annotator throughput, agreement, class distributions,
the disagreement review queue, preference results; and the admin's actions on batches and tasks."""

from __future__ import annotations

import statistics
from datetime import timedelta
from itertools import combinations

from sqlalchemy import case, func, select, update

from reliable_ad.annotation.agreement import cohen_kappa, fleiss_kappa, majority
from reliable_ad.annotation.config import QUEUE_ORDERS
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.exporter import preference_rankings, preference_summary
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Batch, Task, User, utcnow
from reliable_ad.annotation.queue import NotFound

MIN_PAIR_OVERLAP = 5  # items two annotators both labelled before their Cohen's kappa is reported
_IDLE_GAP_S = 300  # a pause longer than this between answers is not counted as working time


def batch_list(db: Database, user_id: int | None = None) -> list[dict]:
    """Every batch with its size and progress; with ``user_id``, also that user's answers."""
    with db.read() as s:
        batches = list(s.scalars(select(Batch).order_by(Batch.id)))
        sizes = dict(s.execute(select(Task.batch_id, func.count()).group_by(Task.batch_id)).all())
        answered = dict(s.execute(select(Assignment.batch_id, func.count()).where(Assignment.state == "answered")
                                  .group_by(Assignment.batch_id)).all())
        mine = {}
        if user_id is not None:
            mine = dict(s.execute(select(Assignment.batch_id, func.count()).where(
                Assignment.state == "answered", Assignment.user_id == user_id).group_by(Assignment.batch_id)).all())
    return [{
        "id": b.id, "name": b.name, "kind": b.kind, "k": b.k, "order": b.order, "active": b.active,
        "tasks": sizes.get(b.id, 0), "answers": answered.get(b.id, 0),
        "progress": answered.get(b.id, 0) / (b.k * sizes[b.id]) if sizes.get(b.id) else 0.0,
        "mine": mine.get(b.id, 0),
    } for b in batches]


def _get_batch(s, batch_id: int) -> Batch:
    batch = s.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return batch


def throughput(rows: list[tuple]) -> dict:
    """From one annotator's (answered_at, duration_ms) rows: answers, answers in the last hour,
    median seconds per answer, and answers per working hour (pauses over 5 minutes left out)."""
    times = sorted(t for t, _ in rows if t is not None)
    durations = [d / 1000 for _, d in rows if d is not None]
    now = utcnow()
    worked = sum(min((b - a).total_seconds(), _IDLE_GAP_S) for a, b in zip(times, times[1:]))
    return {
        "answers": len(rows),
        "last_hour": sum(t > now - timedelta(hours=1) for t in times),
        "median_seconds": statistics.median(durations) if durations else None,
        "per_hour": len(times) / (worked / 3600) if worked > 0 else None,
        "last_answer": times[-1].isoformat(timespec="seconds") + "Z" if times else None,
    }


def agreement(votes_by_task: dict[int, dict[int, int]], users: dict[int, str]) -> dict:
    """Fleiss' kappa over items with two or more labels, and Cohen's kappa of every pair of
    annotators with enough items in common (their mean is Light's kappa)."""
    counts = []
    pairs: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for votes in votes_by_task.values():
        if len(votes) < 2:
            continue
        row = [0] * len(LABELS)
        for label in votes.values():
            row[label] += 1
        counts.append(row)
        for a, b in combinations(sorted(votes), 2):
            la, lb = pairs.setdefault((a, b), ([], []))
            la.append(votes[a])
            lb.append(votes[b])
    cohen = []
    for (a, b), (la, lb) in sorted(pairs.items()):
        if len(la) >= MIN_PAIR_OVERLAP:
            cohen.append({"a": users.get(a, str(a)), "b": users.get(b, str(b)), "items": len(la),
                          "kappa": cohen_kappa(la, lb)})
    defined = [c["kappa"] for c in cohen if c["kappa"] is not None]
    return {
        "items": len(counts),
        "fleiss_kappa": fleiss_kappa(counts),
        "cohen_pairs": cohen,
        "cohen_mean": sum(defined) / len(defined) if defined else None,
    }


def batch_stats(db: Database, batch_id: int) -> dict:
    with db.read() as s:
        batch = _get_batch(s, batch_id)
        n_tasks = s.scalar(select(func.count()).select_from(Task).where(Task.batch_id == batch_id)) or 0
        states = dict(s.execute(select(Assignment.state, func.count()).where(Assignment.batch_id == batch_id)
                                .group_by(Assignment.state)).all())
        users = dict(s.execute(select(User.id, User.username)).all())
        answers = s.execute(select(Assignment.task_id, Assignment.user_id, Assignment.label, Assignment.answered_at,
                                   Assignment.duration_ms)
                            .where(Assignment.batch_id == batch_id, Assignment.state == "answered")).all()
        rfnet = dict(s.execute(select(Task.id, Task.rfnet_label).where(Task.batch_id == batch_id,
                                                                       Task.rfnet_label.is_not(None))).all())
        resolved = s.scalar(select(func.count()).select_from(Task).where(Task.batch_id == batch_id,
                                                                         Task.final_label.is_not(None))) or 0
    per_task: dict[int, dict[int, int]] = {}
    per_user: dict[int, list[tuple]] = {}
    for task_id, user_id, label, answered_at, duration in answers:
        if label is not None:
            per_task.setdefault(task_id, {})[user_id] = label
        per_user.setdefault(user_id, []).append((answered_at, duration))
    answered_per_task: dict[int, int] = {}
    for task_id, *_ in answers:
        answered_per_task[task_id] = answered_per_task.get(task_id, 0) + 1
    out = {
        "batch": {"id": batch.id, "name": batch.name, "kind": batch.kind, "k": batch.k, "order": batch.order,
                  "active": batch.active, "source": batch.source},
        "progress": {
            "tasks": n_tasks,
            "complete": sum(c >= batch.k for c in answered_per_task.values()),
            "started": len(answered_per_task),
            "answers": len(answers),
            "wanted": n_tasks * batch.k,
            "open": states.get("open", 0), "skipped": states.get("skipped", 0), "expired": states.get("expired", 0),
            "resolved": resolved,
        },
        "annotators": sorted(({"user": users.get(u, str(u)), **throughput(rows)} for u, rows in per_user.items()),
                             key=lambda r: -r["answers"]),
    }
    if batch.kind == "availability":
        out["agreement"] = agreement(per_task, users)
        votes = [0] * len(LABELS)
        majorities = [0] * len(LABELS)
        rf_counts = [0] * len(LABELS)
        rf_agree = rf_total = 0
        for task_id, task_votes in per_task.items():
            for label in task_votes.values():
                votes[label] += 1
            top = majority(task_votes.values())[0]
            majorities[top] += 1
            if task_id in rfnet:
                rf_total += 1
                rf_agree += rfnet[task_id] == top
        for label in rfnet.values():
            if label is not None and 0 <= label < len(LABELS):
                rf_counts[label] += 1
        out["classes"] = {"names": list(LABELS), "votes": votes, "majority": majorities, "rfnet": rf_counts,
                          "rfnet_vs_majority": rf_agree / rf_total if rf_total else None, "rfnet_items": rf_total}
    else:
        out["preference"] = preference_summary(preference_rankings(db, [batch.name]))
    return out


def disagreements(db: Database, batch_id: int, limit: int = 50) -> list[dict]:
    """Items whose labels differ and that no admin has settled, least agreement first."""
    with db.read() as s:
        batch = _get_batch(s, batch_id)
        if batch.kind != "availability":
            return []
        rows = s.execute(
            select(Assignment.task_id, User.username, Assignment.label).join(User, User.id == Assignment.user_id)
            .join(Task, Task.id == Assignment.task_id)
            .where(Assignment.batch_id == batch_id, Assignment.state == "answered", Task.final_label.is_(None),
                   Assignment.label.is_not(None))).all()
        votes: dict[int, list[tuple[str, int]]] = {}
        for task_id, username, label in rows:
            votes.setdefault(task_id, []).append((username, label))
        split = {t: v for t, v in votes.items() if len(v) >= 2 and len({label for _, label in v}) > 1}
        ranked = sorted(split, key=lambda t: (majority(label for _, label in split[t])[1], t))[:limit]
        tasks = {t.id: t for t in s.scalars(select(Task).where(Task.id.in_(ranked)))}
    return [{
        "task": t, "caption": tasks[t].caption, "product_id": tasks[t].product_id,
        "image_url": f"/media/task/{t}/image",
        "product_url": f"/media/task/{t}/product" if tasks[t].product_path else None,
        "votes": [{"user": u, "label": LABELS[label]} for u, label in split[t]],
        "rfnet_label": LABELS[tasks[t].rfnet_label] if tasks[t].rfnet_label is not None else None,
    } for t in ranked]


def resolve(db: Database, task_id: int, label: int | None, admin_id: int) -> dict:
    """An admin's final label for a task (None clears it); exports prefer it to the majority."""
    if label is not None and (not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(LABELS)):
        raise ValueError(f"label={label!r} must be a class index 0..{len(LABELS) - 1} or null")
    with db.write() as s:
        task = s.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        task.final_label = label
        task.resolved_by = admin_id if label is not None else None
        return {"task": task.id, "final_label": label}


def update_batch(db: Database, batch_id: int, *, k: int | None = None, order: str | None = None,
                 active: bool | None = None) -> dict:
    """Change a batch's k (each task's remaining need is recomputed), queue order or open state."""
    with db.write() as s:
        batch = _get_batch(s, batch_id)
        if order is not None:
            if order not in QUEUE_ORDERS:
                raise ValueError(f"order={order!r} must be one of {QUEUE_ORDERS}")
            batch.order = order
        if active is not None:
            if not isinstance(active, bool):
                raise ValueError(f"active={active!r} must be true or false")
            batch.active = active
        if k is not None and k != batch.k:
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50:
                raise ValueError(f"k={k!r} must be 1..50")
            batch.k = k
            held = (select(func.count()).select_from(Assignment)
                    .where(Assignment.task_id == Task.id, Assignment.state.in_(("open", "answered")))
                    .scalar_subquery())
            s.execute(update(Task).where(Task.batch_id == batch_id)
                      .values(needed=case((held >= k, 0), else_=k - held)))
        return {"id": batch.id, "k": batch.k, "order": batch.order, "active": batch.active}
