"""Precomputed depth and salience maps on disk, so training and inspection skip the estimators.

Layout (its paths are `reliable_ad.data.maps`), inside a generation run folder (with ``manifest.jsonl``)
or an RF1M-style dataset folder::

    <root>/modalities/meta.json                            {"depth": name, "salience": name, "size": S, ...}
    <root>/modalities/depth/<image relative path>.npy      float16 (S, S) in [0, 1], near = 1
    <root>/modalities/salience/<image relative path>.npy   float16 (S, S) in [0, 1], salient = 1

    <root>/modalities/throughput/rank-<r>-of-<n>.json     images/s and map bytes per image of the last run

Each map is written atomically; a rerun skips the maps that exist, so an interrupted job resumes.
A folder's maps all come from one estimator per kind: a rerun naming another is refused.
Several processes (``accelerate launch`` / ``torchrun``, or ``rank``/``world_size``) split the work:
process r computes ``sorted(images)[r::world_size]``; each writes its own throughput record, so a user
can plan a million-image run from a small one (docs/benchmarks.md).
Images inside zip archives (``<archive>.zip/<member>``) are read in place; their maps live under
``modalities/<kind>/<archive>.zip/<member>.npy``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, read_jsonl
from reliable_ad.data.maps import CACHE_DIR, KINDS, MAP_SUFFIX, META_FILE, cache_root, map_path  # noqa: F401

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


@dataclass
class CacheSummary:
    root: Path
    images: int = 0  # images the folder lists
    written: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    skipped: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})  # already cached
    failed: dict[str, str] = field(default_factory=dict)  # image relative path -> error
    bytes_written: int = 0  # map bytes this run wrote
    seconds: float = 0.0  # time spent computing (estimators and writes)
    images_per_second: float | None = None
    bytes_per_image: float | None = None  # map bytes per image (every kind together)

    @property
    def ok(self) -> bool:
        return not self.failed


def read_meta(root: str | os.PathLike) -> dict[str, Any] | None:
    """``modalities/meta.json`` of ``root``, or None when there is no cache."""
    path = cache_root(root) / META_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); delete {CACHE_DIR}/ and rebuild the cache") from e
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object; delete {CACHE_DIR}/ and rebuild the cache")
    return data


def list_images(root: str | os.PathLike, *, label_codes: str | None = None) -> tuple[list[str], list[str]]:
    """(image paths relative to ``root``, problems) of a run folder (manifest.jsonl) or an RF1M folder
    (``label_codes``: what its integer labels mean, `reliable_ad.data.label_codes`)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{str(root)!r} is not a folder; pass a generation run or an RF1M dataset folder")
    problems: list[str] = []
    if (root / MANIFEST).is_file():
        records = read_jsonl(root / MANIFEST)
        images = [r["image"] for r in records if not r.get("error") and isinstance(r.get("image"), str)]
        return list(dict.fromkeys(images)), problems
    from reliable_ad.data.readers import read_rf1m

    samples, read_problems = read_rf1m(root, unsuitable="keep", label_codes=label_codes)
    problems += [f"{p.file}:{p.line}: {p.message}" for p in read_problems]
    base = os.path.abspath(root)
    images = []
    for s in samples:
        rel = os.path.relpath(s.image, base)
        if rel.startswith(".."):
            problems.append(f"{s.source}: image {s.image!r} lies outside {base!r}; not cached")
        else:
            images.append(rel.replace(os.sep, "/"))
    return images, problems


def _check_meta(root: Path, names: dict[str, str | None], size: int) -> dict[str, Any]:
    """The updated meta; refuses estimators or a size that differ from the maps already cached."""
    meta = read_meta(root) or {}
    if meta and meta.get("size") != size:
        raise ValueError(
            f"{cache_root(root)} holds maps of size {meta.get('size')}, not {size}; pass --size {meta.get('size')} "
            f"to resume, or delete {cache_root(root)} to rebuild"
        )
    for kind, name in names.items():
        if name is not None and meta.get(kind) not in (None, name):
            raise ValueError(
                f"{cache_root(root) / kind} was computed with {kind} estimator {meta[kind]!r}, not {name!r}; "
                f"pass --{kind} {meta[kind]} to resume, or delete that folder to rebuild with {name!r}"
            )
    new = {**meta, "size": size, "format": "npy float16, values in [0, 1]"}
    new.update({kind: name for kind, name in names.items() if name is not None})
    return new


def _save_map(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float16))
    atomic_write_bytes(path, buffer.getvalue())


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    from reliable_ad.data.archives import read_bytes

    with Image.open(io.BytesIO(read_bytes(str(path)))) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def build_cache(
    root: str | os.PathLike,
    *,
    depth: str | None = "dpt-hybrid",
    salience: str | None = "u2netp",
    size: int = 384,
    batch_size: int = 8,
    device: str | None = None,
    estimators: dict[str, Any] | None = None,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    label_codes: str | None = None,
) -> CacheSummary:
    """Compute the maps every image of ``root`` lacks (see the module docstring); resumable.

    ``depth``/``salience``: estimator names (None skips that kind); ``estimators`` may give the built
    estimators instead (keyed by kind, their names still recorded from ``depth``/``salience``).
    ``rank``/``world_size``: this process's share (default: the launcher's RANK and WORLD_SIZE, else 0 of 1).
    An image that cannot be read or mapped is recorded in ``summary.failed`` and the job goes on.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    names = {"depth": depth, "salience": salience}
    if not any(names.values()):
        raise ValueError("both depth and salience are None; name at least one estimator")
    rank, world_size = _share(rank, world_size)
    meta = _check_meta(root, names, size)
    images, problems = list_images(root, label_codes=label_codes)
    for p in problems:
        logger.warning("%s", p)
    images = sorted(images)[rank::world_size]
    summary = CacheSummary(root, images=len(images))
    kinds = [k for k in KINDS if names[k]]
    todo: list[tuple[str, list[str]]] = []  # (image, kinds missing)
    for image in images:
        missing = [k for k in kinds if not map_path(root, k, image).is_file()]
        for k in kinds:
            summary.skipped[k] += k not in missing
        if missing:
            todo.append((image, missing))
    if rank == 0:
        atomic_write_json(cache_root(root) / META_FILE, meta)
    if not todo:
        return summary

    if estimators is None:
        from reliable_ad.modalities.registry import build_depth, build_salience

        builders = {"depth": build_depth, "salience": build_salience}
        estimators = {k: builders[k](names[k], size=size, device=device) for k in kinds}
    bar = tqdm(total=len(todo), desc=f"modalities {rank}/{world_size}", unit="img", disable=not progress)
    started = time.perf_counter()
    for start in range(0, len(todo), batch_size):
        _cache_batch(root, todo[start : start + batch_size], estimators, summary)
        bar.update(min(batch_size, len(todo) - start))
    bar.close()
    _record_throughput(root, summary, time.perf_counter() - started, rank, world_size,
                       {"batch_size": batch_size, "size": size, "device": str(device), **names})
    return summary


def _share(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size) given, else the launcher's (RANK / WORLD_SIZE), else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if isinstance(world_size, bool) or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size; pass --rank R "
                         "--world-size N or start the processes with accelerate launch / torchrun")
    return rank, world_size


def _record_throughput(root: Path, summary: CacheSummary, seconds: float, rank: int, world_size: int,
                       settings: dict[str, Any]) -> None:
    """Images per second and map bytes per image of this process's run, logged and kept on disk."""
    done = max(summary.written.values())
    if not done:
        return
    summary.seconds = seconds
    summary.images_per_second = done / max(seconds, 1e-9)
    summary.bytes_per_image = summary.bytes_written / done
    record = {"images": done, "seconds": round(seconds, 3), "images_per_second": round(summary.images_per_second, 3),
              "bytes_per_image": round(summary.bytes_per_image), "rank": rank, "world_size": world_size, **settings}
    atomic_write_json(cache_root(root) / "throughput" / f"rank-{rank}-of-{world_size}.json", record)
    logger.info("modalities %d/%d: %d images in %.1f s (%.2f images/s, %.0f bytes of maps per image); "
                "1,000,000 images would take %.1f h on %d such processes and %.1f GB",
                rank, world_size, done, seconds, summary.images_per_second, summary.bytes_per_image,
                1e6 / summary.images_per_second / 3600 / world_size, world_size, summary.bytes_per_image * 1e6 / 1e9)


def _cache_batch(root: Path, batch: list[tuple[str, list[str]]], estimators: dict[str, Any],
                 summary: CacheSummary) -> None:
    import torch

    loaded: list[tuple[str, list[str], np.ndarray]] = []
    for image, missing in batch:
        try:
            loaded.append((image, missing, _read_rgb(root / image)))
        except (OSError, ValueError) as e:
            summary.failed[image] = f"cannot read image: {e}"
            logger.error("modalities: %s skipped: cannot read image: %s", image, e)
    for kind in KINDS:
        items = [(image, rgb) for image, missing, rgb in loaded if kind in missing and image not in summary.failed]
        if not items:
            continue
        try:
            with torch.no_grad():
                maps = estimators[kind]([rgb for _, rgb in items])
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the job; retry one by one
            logger.warning("modalities: %s batch failed (%s); retrying image by image", kind, e)
            maps = None
        for j, (image, rgb) in enumerate(items):
            try:
                if maps is None:
                    with torch.no_grad():
                        one = estimators[kind]([rgb])[0]
                else:
                    one = maps[j]
                path = map_path(root, kind, image)
                _save_map(path, one[0].float().cpu().numpy())
                summary.written[kind] += 1
                summary.bytes_written += path.stat().st_size
            except Exception as e:  # noqa: BLE001 - recorded, the job goes on
                summary.failed[image] = f"{kind} failed: {e}"
                logger.error("modalities: %s skipped: %s failed: %s", image, kind, e)


def attach_cached_maps(
    samples: Sequence[Any], root: str | os.PathLike, *, depth: str | None = None, salience: str | None = None
) -> tuple[list[Any], dict[str, int]]:
    """Samples (data.readers.Sample) with the cached map paths of ``root`` filled in where they exist.

    Paths already set on a sample are kept. ``depth``/``salience`` name the estimators the model
    expects: a cache made with another estimator is not attached (its maps would mislead the model),
    with a warning. Returns (samples, number attached per kind).
    """
    from reliable_ad.data.rf1m import FolderIndex

    root = Path(root)
    meta = read_meta(root)
    counts = {k: 0 for k in KINDS}
    if meta is None:
        return list(samples), counts
    expected = {"depth": depth, "salience": salience}
    usable = []
    for kind in KINDS:
        if meta.get(kind) is None:
            continue
        if expected[kind] is not None and meta[kind] != expected[kind]:
            logger.warning("%s: cached %s maps come from %r, the model expects %r; computing them instead",
                           cache_root(root), kind, meta[kind], expected[kind])
            continue
        usable.append(kind)
    if not usable:
        return list(samples), counts
    base = os.path.abspath(root)
    files = FolderIndex()
    out = []
    for s in samples:
        rel = os.path.relpath(s.image, base).replace(os.sep, "/")
        changes = {}
        if not rel.startswith(".."):
            for kind in usable:
                path = str(map_path(base, kind, rel))
                if getattr(s, kind) is None and files.exists(path):
                    changes[kind] = path
                    counts[kind] += 1
        out.append(replace(s, **changes) if changes else s)
    return out, counts
