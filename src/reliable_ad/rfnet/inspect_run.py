"""`reliable-ad inspect RUN_DIR`: an RFNet verdict for every image of a generation run.

Each image record of ``manifest.jsonl`` gets ``verdict``: `Verdict.to_dict()` plus ``model``, the
inspector's fingerprint (model, weights hash, estimators). Resumable and loss-free in two stages:

1. Verdicts are appended to ``RUN_DIR/verdicts.jsonl`` as they are made (one fsynced line each; a
   kill loses at most the batch in flight). Images with a verdict from the same model, in either
   file, are skipped on a rerun.
2. The verdicts are merged into ``manifest.jsonl`` by rewriting it to a temporary file and renaming
   it over the old one; lines without a new verdict are copied byte for byte. The manifest is
   re-read right before the rename and the merge redone if it changed meanwhile (a generation run
   appending to it), so no record is lost; ``verdicts.jsonl`` stays as the journal, and a later
   ``inspect`` merges anything a crash left unmerged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reliable_ad.data.records import read_records
from reliable_ad.core.io import append_jsonl, atomic_write_bytes, read_jsonl

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
VERDICTS = "verdicts.jsonl"


@dataclass
class InspectSummary:
    run_dir: Path
    model: str  # the inspector's fingerprint
    inspected: int = 0
    skipped: int = 0  # already had a verdict from this model
    failed: dict[str, str] = field(default_factory=dict)  # image -> error
    counts: dict[str, int] = field(default_factory=dict)  # class -> images, over the whole run, this model
    accepted: int | None = None  # images the judge's acceptance rule accepts, over the whole run, this model
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _read_image(path: Path, *, keep_alpha: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        return np.array(im.convert("RGBA" if keep_alpha and has_alpha else "RGB"), dtype=np.uint8)


def _cached_maps(run: Path, spec) -> dict[str, bool]:
    """Which kinds of ``RUN_DIR/modalities`` were made with the inspector's estimators."""
    from reliable_ad.modalities.cache import read_meta

    meta = read_meta(run) or {}
    return {kind: getattr(spec, kind) is not None and meta.get(kind) == getattr(spec, kind)
            for kind in ("depth", "salience")}


def inspect_run(run_dir: str | os.PathLike, inspector, *, progress: bool = True,
                accept: Callable[[int, float], bool] | None = None) -> InspectSummary:
    """Add the ``inspector``'s verdict to every image record of ``RUN_DIR/manifest.jsonl``; see the module doc."""
    from tqdm.auto import tqdm

    from reliable_ad.modalities.cache import map_path

    t0 = time.perf_counter()
    run = Path(run_dir)
    manifest = run / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{str(run)!r} has no {MANIFEST}; pass a folder written by `reliable-ad generate`")
    fp = inspector.fingerprint
    summary = InspectSummary(run, fp)
    records = [r for r in read_records(manifest) if r.is_image]
    journal = {r["image"]: r["verdict"] for r in read_jsonl(run / VERDICTS, repair=True) if r.get("model") == fp}
    todo = []
    for r in records:
        if (r.verdict is not None and r.verdict.model == fp) or r.image in journal:
            summary.skipped += 1
        else:
            todo.append(r)
    cached = _cached_maps(run, inspector.spec)
    bar = tqdm(total=len(todo), desc="inspecting", unit="img", disable=not progress)
    for start in range(0, len(todo), inspector.batch_size):
        batch, products, generated = [], [], []
        for r in todo[start : start + inspector.batch_size]:
            try:
                product = r.resolve(run, "product")
                if product is None:
                    raise ValueError("the record names no product image")
                products.append(_read_image(product, keep_alpha=True))
                generated.append(_read_image(run / r.image, keep_alpha=False))
                batch.append(r)
            except (OSError, ValueError) as e:
                products, generated = products[: len(batch)], generated[: len(batch)]
                summary.failed[r.image] = f"cannot read its images: {e}"
                logger.error("inspect: %s skipped: %s", r.image, e)
        if batch:
            maps = {kind: [str(p) if (p := map_path(run, kind, r.image)).is_file() else None for r in batch]
                    if use else None for kind, use in cached.items()}
            try:
                verdicts = inspector.inspect(products, generated, [r.caption or "" for r in batch], **maps)
            except Exception as e:  # noqa: BLE001 - one failed batch must not end the run
                logger.exception("inspect: a batch failed")
                for r in batch:
                    summary.failed[r.image] = f"inspection failed: {e}"
                verdicts = []
            for r, v in zip(batch, verdicts):
                entry = {**v.to_dict(), "model": fp}
                append_jsonl(run / VERDICTS, {"image": r.image, "model": fp, "verdict": entry})
                journal[r.image] = entry
                summary.inspected += 1
        bar.update(min(inspector.batch_size, len(todo) - start))
    bar.close()
    merge_verdicts(run, journal)
    verdicts = [r.verdict for r in read_records(manifest) if r.verdict is not None and r.verdict.model == fp]
    summary.counts = dict(Counter(v.label for v in verdicts if v.label))
    if accept is not None:
        summary.accepted = sum(bool(accept(v.label_index, v.p_available)) for v in verdicts)
    summary.seconds = time.perf_counter() - t0
    summary.timings = dict(inspector.timings)
    return summary


def merge_verdicts(run: str | os.PathLike, verdicts: dict[str, dict], *, attempts: int = 10) -> int:
    """Write ``verdicts`` (image -> verdict dict) into the run's manifest atomically; returns records changed."""
    manifest = Path(run) / MANIFEST
    for _ in range(attempts):
        before = manifest.stat()
        raw = manifest.read_bytes()
        lines = raw.split(b"\n")
        changed = 0
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line: kept byte for byte, the generation run repairs its own file
            verdict = verdicts.get(record.get("image")) if isinstance(record, dict) else None
            if verdict is not None and not record.get("error") and record.get("verdict") != verdict:
                record["verdict"] = verdict
                lines[i] = json.dumps(record, ensure_ascii=False, default=str).encode("utf-8")
                changed += 1
        if not changed:
            return 0
        after = manifest.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            continue  # appended to while we merged: merge again
        atomic_write_bytes(manifest, b"\n".join(lines))
        return changed
    raise RuntimeError(f"{manifest} kept changing while verdicts were merged; rerun `reliable-ad inspect` "
                       f"when the generation run has finished (the verdicts are kept in {VERDICTS})")
