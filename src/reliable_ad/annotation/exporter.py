"""`reliable-ad annotate export`: labels in the forms RFNet trains from, and rankings for evaluation.

- JSON Lines, one record per labelled image with every vote (``votes``, ``annotations``), an
  adjudicated ``label`` when an admin settled a disagreement, and paths relative to the file:
  :func:`reliable_ad.data.readers.read_annotation_export` reads it as it is.
- RF1M-style folder: ``labels.txt`` (majority or adjudicated label per image), ``captions.json``
  and ``products/``, named so that :func:`reliable_ad.data.readers.read_rf1m` pairs them up.
- Preference JSON Lines: every ranking with the order it was shown in, plus a summary (mean rank,
  pairwise win rates with 95% intervals).
- Pairwise preference JSON in HPSv3's training-data form (a list of ``prompt``, ``path1`` the
  preferred image, ``path2`` the other, ``confidence`` the share of annotators who preferred it),
  for reward models trained on human preference pairs.
- Label Studio tasks and labeling configs: :mod:`reliable_ad.annotation.label_studio`.
Every file is written atomically: a failed export leaves the previous one intact.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from reliable_ad.annotation.agreement import json_safe, majority, mean_ranks, pairwise_wins
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Batch, Candidate, Task, User
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, atomic_write_lines, atomic_write_text

logger = logging.getLogger(__name__)

_ATTEMPT_SUFFIX = re.compile(r"_\d+$")  # read_rf1m's product-id rule: image stem minus "_<digits>"
_CHUNK = 5000


@dataclass
class ExportSummary:
    path: Path
    records: int = 0  # images (or sets) written
    votes: int = 0  # labels (or rankings) in them
    below_min_votes: int = 0  # images left out for having fewer votes than asked


def _batches(s, kind: str, names: list[str] | None) -> list[Batch]:
    query = select(Batch).where(Batch.kind == kind).order_by(Batch.id)
    batches = list(s.scalars(query))
    if names:
        known = {b.name for b in batches}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"no {kind} batch named {missing}; {kind} batches: {sorted(known) or 'none'}")
        batches = [b for b in batches if b.name in names]
    return batches


def _answered(s, batch_ids: list[int]) -> Iterator[tuple[Task, list[tuple]]]:
    """Tasks of the batches, in id order, each with its answers (user name, assignment)."""
    last = 0
    while True:
        tasks = list(s.scalars(select(Task).where(Task.batch_id.in_(batch_ids), Task.id > last)
                               .order_by(Task.id).limit(_CHUNK)))
        if not tasks:
            return
        last = tasks[-1].id
        answers: dict[int, list[tuple]] = {}
        rows = s.execute(
            select(Assignment, User.username).join(User, User.id == Assignment.user_id)
            .where(Assignment.task_id.in_([t.id for t in tasks]), Assignment.state == "answered")
            .order_by(Assignment.answered_at, Assignment.id))
        for assignment, username in rows:
            answers.setdefault(assignment.task_id, []).append((username, assignment))
        for task in tasks:
            yield task, answers.get(task.id, [])


def _rel(path: str | None, folder: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive
        return path


def _iso(dt) -> str | None:
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


def _collect_votes(db: Database, names: list[str] | None, min_votes: int) -> tuple[dict[str, dict], int]:
    """Image path -> merged record (votes of the same image in several batches are pooled)."""
    if not isinstance(min_votes, int) or min_votes < 1:
        raise ValueError(f"min_votes={min_votes!r} must be an int >= 1")
    images: dict[str, dict] = {}
    with db.read() as s:
        batches = _batches(s, "availability", names)
        batch_names = {b.id: b.name for b in batches}
        for task, answers in _answered(s, list(batch_names)):
            entry = images.setdefault(task.image_path, {
                "task": task, "batches": [], "annotations": [], "final": None})
            entry["batches"].append(batch_names[task.batch_id])
            if task.final_label is not None:
                entry["final"] = task.final_label
            entry["annotations"] += [
                {"annotator": user, "label": LABELS[a.label], "answered_at": _iso(a.answered_at),
                 "duration_ms": a.duration_ms} for user, a in answers if a.label is not None]
    kept = {p: e for p, e in images.items() if len(e["annotations"]) >= min_votes}
    return kept, len(images) - len(kept)


def export_jsonl(db: Database, out: str | os.PathLike, *, batches: list[str] | None = None,
                 min_votes: int = 1) -> ExportSummary:
    """One JSON line per labelled image, every vote included; readable by read_annotation_export."""
    out = Path(out).absolute()
    images, below = _collect_votes(db, batches, min_votes)
    summary = ExportSummary(out, below_min_votes=below)

    def lines() -> Iterator[str]:
        for path, e in images.items():
            t: Task = e["task"]
            votes = [a["label"] for a in e["annotations"]]
            top = majority(LABELS.index(v) for v in votes)
            record = {
                "image": _rel(path, out.parent),
                "product": _rel(t.product_path, out.parent),
                "caption": t.caption,
                "product_id": t.product_id,
                "votes": votes,
                "agreement": round(top[1], 4),
                "annotations": e["annotations"],
                "batch": e["batches"][0] if len(e["batches"]) == 1 else e["batches"],
                "key": t.key,
                "reference_label": LABELS[t.reference_label] if t.reference_label is not None else None,
                "rfnet_label": LABELS[t.rfnet_label] if t.rfnet_label is not None else None,
            }
            if e["final"] is not None:
                record["label"] = LABELS[e["final"]]  # adjudicated: read_annotation_export prefers it
            summary.records += 1
            summary.votes += len(votes)
            yield json.dumps(record, ensure_ascii=False) + "\n"

    atomic_write_lines(out, lines())
    logger.info("wrote %d images with %d votes to %s", summary.records, summary.votes, out)
    return summary


def export_rf1m(db: Database, out_dir: str | os.PathLike, *, batches: list[str] | None = None,
                min_votes: int = 1) -> ExportSummary:
    """An RF1M-style folder: labels.txt (image path relative to it, tab, class name), captions.json
    and products/<product id>.<ext>, so read_rf1m(out_dir) gives back images, labels, captions and
    products."""
    out_dir = Path(out_dir).absolute()
    images, below = _collect_votes(db, batches, min_votes)
    summary = ExportSummary(out_dir / "labels.txt", below_min_votes=below)
    # read_rf1m keys products and captions by the image stem minus "_<digits>", else the stem;
    # where two different products share such an id, they are keyed by their stems instead
    by_id: dict[str, set] = {}
    for path, e in images.items():
        stem = Path(path).stem
        by_id.setdefault(_ATTEMPT_SUFFIX.sub("", stem) or stem, set()).add((e["task"].product_path, e["task"].caption))
    lines = [f"# reliable-ad annotation export: {len(images)} images; majority label, ties to the lower class, "
             "or an admin's decision\n"]
    captions: dict[str, str] = {}
    products: dict[str, str] = {}
    for path, e in images.items():
        t: Task = e["task"]
        votes = [LABELS.index(a["label"]) for a in e["annotations"]]
        label = e["final"] if e["final"] is not None else majority(votes)[0]
        lines.append(f"{_rel(path, out_dir)}\t{LABELS[label]}\n")
        stem = Path(path).stem
        pid = _ATTEMPT_SUFFIX.sub("", stem) or stem
        key = pid if len(by_id[pid]) == 1 else stem
        if t.caption:
            captions[key] = t.caption
        if t.product_path:
            products[key] = t.product_path
        summary.records += 1
        summary.votes += len(votes)
    for key, src in products.items():
        atomic_write_bytes(out_dir / "products" / f"{key}{Path(src).suffix.lower()}", Path(src).read_bytes())
    atomic_write_json(out_dir / "captions.json", captions)
    atomic_write_text(out_dir / "labels.txt", "".join(lines))
    logger.info("wrote %d labelled images to %s", summary.records, out_dir)
    return summary


def preference_rankings(db: Database, batches: list[str] | None = None) -> list[dict]:
    """One record per set to rank, with every ranking (methods best first, and as shown)."""
    records = []
    with db.read() as s:
        chosen = _batches(s, "preference", batches)
        names = {b.id: b.name for b in chosen}
        for task, answers in _answered(s, list(names)):
            candidates = {c.id: c for c in s.scalars(select(Candidate).where(Candidate.task_id == task.id))}
            rankings = []
            for user, a in answers:
                if not a.ranking:
                    continue
                shown = a.display_order or []
                sep = "," if len(shown) > 9 else ""
                rankings.append({
                    "annotator": user,
                    "ranking": [candidates[c].method for c in a.ranking],
                    "shown": [candidates[c].method for c in shown],
                    "typed": sep.join(str(shown.index(c) + 1) for c in a.ranking),
                    "answered_at": _iso(a.answered_at),
                    "duration_ms": a.duration_ms,
                })
            records.append({
                "batch": names[task.batch_id], "key": task.key, "product_id": task.product_id,
                "product": task.product_path, "caption": task.caption, "prompt": task.meta.get("prompt"),
                "seed": task.meta.get("seed"),
                "candidates": [{"method": c.method, "image": c.image_path} for c in candidates.values()],
                "rankings": rankings,
            })
    return records


def preference_summary(records: list[dict]) -> dict:
    rankings = [r["ranking"] for rec in records for r in rec["rankings"]]
    return {"sets": len(records), "rankings": len(rankings), "mean_rank": mean_ranks(rankings),
            "pairwise": pairwise_wins(rankings)}


def export_preference(db: Database, out: str | os.PathLike, *, batches: list[str] | None = None) -> ExportSummary:
    """Rankings as JSON Lines at ``out`` and their aggregate at ``out`` with ``.summary.json``."""
    out = Path(out).absolute()
    records = preference_rankings(db, batches)
    atomic_write_lines(out, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    summary = preference_summary(records)
    atomic_write_json(out.with_name(out.stem + ".summary.json"), json_safe(summary))
    return ExportSummary(out, records=len(records), votes=summary["rankings"])



@dataclass
class PairwiseSummary(ExportSummary):
    ties: int = 0  # pairs the annotators split evenly on: no preferred image, left out


def preference_pairs(records: list[dict]) -> tuple[list[dict], int]:
    """Every two candidates of a ranked set as one pair, preferred first (HPSv3's ``path1``), with the
    share of the set's rankings that preferred it as ``confidence``; and the number of ties left out."""
    pairs, ties = [], 0
    for rec in records:
        images = {c["method"]: c["image"] for c in rec["candidates"]}
        rankings = [r["ranking"] for r in rec["rankings"]]
        for a, b in itertools.combinations(sorted(images), 2):
            a_wins = sum(r.index(a) < r.index(b) for r in rankings if a in r and b in r)
            b_wins = sum(r.index(b) < r.index(a) for r in rankings if a in r and b in r)
            if a_wins + b_wins == 0:
                continue
            if a_wins == b_wins:
                ties += 1
                continue
            (win, n_win), (lose, n_lose) = sorted(((a, a_wins), (b, b_wins)), key=lambda m: -m[1])
            pairs.append({
                "prompt": rec["prompt"] or rec["caption"], "path1": images[win], "path2": images[lose],
                "confidence": round(n_win / (n_win + n_lose), 4),
                "method1": win, "method2": lose, "votes": [n_win, n_lose], "annotators": n_win + n_lose,
                "caption": rec["caption"], "batch": rec["batch"], "key": rec["key"], "product_id": rec["product_id"],
            })
    return pairs, ties


def export_pairwise_json(db: Database, out: str | os.PathLike, *, batches: list[str] | None = None,
                         min_votes: int = 1) -> PairwiseSummary:
    """Preference pairs as one JSON list at ``out``, in HPSv3's training-data keys (``prompt``, ``path1``
    preferred, ``path2``, ``confidence``) plus ours; image paths are absolute, as HPSv3 opens them."""
    if not isinstance(min_votes, int) or min_votes < 1:
        raise ValueError(f"--min-votes {min_votes!r}: expected an int >= 1 (annotators who judged a pair)")
    out = Path(out).absolute()
    pairs, ties = preference_pairs(preference_rankings(db, batches))
    kept = [p for p in pairs if p["annotators"] >= min_votes]
    atomic_write_json(out, kept)
    logger.info("wrote %d preference pairs to %s (%d ties left out)", len(kept), out, ties)
    return PairwiseSummary(out, records=len(kept), votes=sum(p["annotators"] for p in kept),
                           below_min_votes=len(pairs) - len(kept), ties=ties)
