"""WebDataset tar shards of labelled samples (docs/method.md §3), so RFNet training on RF1M's million
images streams large sequential files instead of opening a million small ones.

Each sample is a group of tar members sharing a key (WebDataset's convention: the key is the member
name up to the first dot of its file name)::

    <key>.png | .jpg | .webp    the generated image I_g, bytes as in the release
    <key>.product.<ext>         the product image I_o, when the sample has one
    <key>.txt                   the caption (UTF-8)
    <key>.cls                   the class index (ASCII digits), in ``class_names`` of shards.json
    <key>.depth.npy, <key>.salience.npy   the cached maps, when the modality cache has them
    <key>.json                  {"image", "product_id", "source"}: where the sample came from

Keys are the sample's position in the list given to :func:`write_shards` (9 digits). Samples are
shuffled once (``seed``) before they are cut into shards of about ``shard_size`` bytes, so every
shard mixes products and classes. Shards are written as ``.tmp`` and renamed when complete; a rerun
keeps the finished ones, so an interrupted job resumes. ``shards.json`` is the index: the settings,
per-shard counts and class histograms, the failed samples.

We write tar files with the standard library rather than the ``webdataset`` package: exactly-once
reading needs the per-shard sample counts and a fixed order inside each shard, and exact resume needs
skipping members unread; all are simplest to guarantee when we write and read the tar ourselves. The
files stay WebDataset's format (checked by reading them with webdataset 1.0.2).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reliable_ad.core.io import atomic_open, atomic_write_json
from reliable_ad.data.archives import file_size, read_bytes
from reliable_ad.data.samples import Sample

__all__ = ["write_shards", "parse_size", "INDEX_FILE", "shard_name", "ShardSummary"]

logger = logging.getLogger(__name__)

INDEX_FILE = "shards.json"
FORMAT = "reliable-ad webdataset shards v1"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def shard_name(k: int) -> str:
    return f"shard-{k:06d}.tar"


def parse_size(value: str | int) -> int:
    """Bytes of ``1GB``, ``500MB``, ``2.5G``, ``1GiB`` or a plain integer (decimal units; ``i`` binary)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"--shard-size {value!r}: expected bytes such as 1GB, 500MB or 1000000")
        base = 1024 if (m.group(3) or "").lower() == "ib" else 1000
        size = int(float(m.group(1)) * base ** "_KMGT".index(m.group(2).upper() or "_"))
    if size < 1:
        raise ValueError(f"--shard-size {value!r} must be at least 1 byte, e.g. 1GB")
    return size


def plan_shards(sizes: np.ndarray, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of consecutive samples, each closed once it holds ``shard_size`` bytes."""
    ranges: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, size in enumerate(sizes.tolist()):
        total += size
        if total >= shard_size:
            ranges.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(sizes):
        ranges.append((start, len(sizes)))
    return ranges


def _members(sample: Sample, key: str) -> list[tuple[str, bytes]]:
    """The tar members of one sample; every file is read before any is written, so a bad sample
    leaves nothing behind in the shard."""
    ext = os.path.splitext(sample.image)[1].lower() or ".png"
    out = [(f"{key}{ext}", read_bytes(sample.image))]
    if sample.product is not None:
        out.append((f"{key}.product{os.path.splitext(sample.product)[1].lower()}", read_bytes(sample.product)))
    for kind in ("depth", "salience"):
        path = getattr(sample, kind)
        if path is not None:
            out.append((f"{key}.{kind}{os.path.splitext(path)[1].lower()}", read_bytes(path)))
    meta = {"image": sample.image, "product_id": sample.product_id, "source": sample.source}
    out += [(f"{key}.txt", sample.caption.encode("utf-8")), (f"{key}.cls", str(sample.label).encode("ascii")),
            (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
    return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # no clock in the bytes: reruns give equal shards
    tar.addfile(info, io.BytesIO(data))


@dataclass
class ShardSummary:
    out: Path
    shards: list[dict[str, Any]] = field(default_factory=list)  # per shard: name, count, bytes, classes, ...
    written: int = 0  # shards written by this call
    skipped: int = 0  # shards already complete
    failed: list[dict[str, str]] = field(default_factory=list)  # {key, source, error}

    @property
    def ok(self) -> bool:
        return not self.failed


def _write_one(path: Path, samples: Sequence[Sample], positions: Sequence[int], order: np.ndarray,
               class_names: Sequence[str], bar) -> dict[str, Any]:
    """Write one shard atomically; its stats (count, bytes, classes, cached maps, failed samples)."""
    classes = [0] * len(class_names)
    failed: list[dict[str, str]] = []
    count = 0
    cached = {"depth": 0, "salience": 0}
    with atomic_open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for pos in positions:
            i = int(order[pos])
            sample, key = samples[i], f"{i:09d}"
            try:
                members = _members(sample, key)
            except (OSError, ValueError, KeyError) as e:  # one bad sample is recorded, the shard goes on
                failed.append({"key": key, "source": sample.source, "error": f"{type(e).__name__}: {e}"})
                logger.error("shard %s: %s (%s) skipped: %s", path.name, key, sample.source, e)
            else:
                for name, data in members:
                    _add(tar, name, data)
                count += 1
                classes[sample.label] += 1
                for kind in cached:
                    cached[kind] += getattr(sample, kind) is not None
            bar.update(1)
    return {"name": path.name, "count": count, "bytes": path.stat().st_size,
            "classes": dict(zip(class_names, classes)), "with_cached": cached, "failed": failed}


def write_shards(samples: Sequence[Sample], out_dir: str | os.PathLike, *, class_names: Sequence[str],
                 shard_size: int | str = "1GB", seed: int = 0, settings: dict[str, Any] | None = None,
                 progress: bool = True) -> ShardSummary:
    """Write ``samples`` as WebDataset shards into ``out_dir`` (module docstring); resumable.

    ``class_names`` name the labels' indices; ``settings`` (the source, label codes, Unsuitable policy,
    split, ...) are stored in the index, and a rerun with other settings is refused.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    size = parse_size(shard_size)
    settings = {**(settings or {}), "seed": seed, "shard_size": size, "samples": len(samples),
                "class_names": list(class_names)}
    previous = _read_index(out)
    if previous is not None and previous.get("settings") != settings:
        raise ValueError(
            f"{out / INDEX_FILE} was written with other settings ({previous.get('settings')}, now {settings}); "
            "rerun with the same options to resume, or choose a new --out"
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    if previous is not None:
        plan = [tuple(r) for r in previous["plan"]]
    else:
        sizes = np.fromiter((_sample_size(samples[int(i)]) for i in order), dtype=np.int64, count=len(samples))
        plan = plan_shards(sizes, size)
    done = {s["name"]: s for s in (previous or {}).get("shards", [])}
    summary = ShardSummary(out)
    index = {"format": FORMAT, "complete": False, "settings": settings, "plan": [list(r) for r in plan],
             "shards": [], "failed": []}
    bar = tqdm(total=len(samples), desc="shards", unit="sample", disable=not progress)
    for k, (start, end) in enumerate(plan):
        path = out / shard_name(k)
        if path.is_file() and path.name in done:
            stats = done[path.name]
            summary.skipped += 1
            bar.update(end - start)
        else:
            stats = _write_one(path, samples, range(start, end), order, class_names, bar)
            summary.written += 1
        summary.shards.append(stats)
        summary.failed += stats["failed"]
        index["shards"], index["failed"] = summary.shards, summary.failed
        atomic_write_json(out / INDEX_FILE, index)  # after every shard: a resumed run trusts what it lists
    bar.close()
    totals = np.sum([list(s["classes"].values()) for s in summary.shards], axis=0) if summary.shards else []
    index.update(complete=True, samples=int(sum(s["count"] for s in summary.shards)),
                 class_histogram=dict(zip(class_names, (int(v) for v in totals))),
                 with_cached={k: int(sum(s["with_cached"][k] for s in summary.shards)) for k in ("depth", "salience")})
    atomic_write_json(out / INDEX_FILE, index)
    logger.info("%s: %d shards (%d written, %d already complete), %d samples, %d failed; classes %s", out,
                len(plan), summary.written, summary.skipped, index["samples"], len(summary.failed),
                index["class_histogram"])
    return summary


def _sample_size(sample: Sample) -> int:
    """Bytes a sample adds to a shard, for planning; a missing file counts 0 (it will fail later)."""
    total = 1536 + len(sample.caption.encode("utf-8"))  # tar headers and the small members
    for path in (sample.image, sample.product, sample.depth, sample.salience):
        if path is not None:
            try:
                total += file_size(path)
            except (OSError, KeyError, ValueError):
                pass
    return total


def _read_index(out: Path) -> dict[str, Any] | None:
    path = out / INDEX_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and its shards to rewrite them") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a shard index of this format ({FORMAT!r}); choose another --out")
    return data
