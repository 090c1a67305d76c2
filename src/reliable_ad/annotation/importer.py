"""`reliable-ad annotate import`: generation runs, RF1M-style folders and sets of runs to compare
become batches of tasks.

All or nothing: every record is checked before anything is written, and the batch is written in
one transaction, so a malformed or oversized import leaves the database as it was and the error
names the file, line and fix. Importing the same source again adds only what is new (a run that
went on generating), so imports can be repeated safely.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert, select

from reliable_ad.annotation.config import QUEUE_ORDERS
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import label_index
from reliable_ad.annotation.models import Batch, Candidate, Task
from reliable_ad.data.records import ManifestRecord, RecordError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
MANIFEST = "manifest.jsonl"
MAX_TEXT = 10_000  # characters of a caption or prompt
MAX_PATH = 4096
MAX_META = 20_000  # characters of a record's kept fields, as JSON
META_KEYS = ("prompt", "negative_prompt", "seed", "preset", "attempt", "run_seed", "product_hash", "slots")
_CHUNK = 1000


class ImportRejected(ValueError):
    """Nothing was imported; ``problems`` lists every reason found ("file:line: message")."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(
            f"import of {source} refused, nothing was imported; {len(problems)} problem(s):\n  {shown}{more}\n"
            "fix the records, or pass --skip-problems to import only the valid ones"
        )


@dataclass
class ImportSummary:
    batch: str
    batch_id: int
    kind: str
    added: int = 0  # new tasks
    present: int = 0  # tasks the batch had already
    failed_generations: int = 0  # manifest records of failed generations (no image), not imported
    unmatched: int = 0  # preference: images without a counterpart in another run
    problems: list[str] = field(default_factory=list)  # skipped records, with --skip-problems


@dataclass
class Limits:
    max_bytes: int = 512 * 1024 * 1024
    max_records: int = 2_000_000


# ---------------------------------------------------------------------------------------------
# Reading and checking


def _check_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImportRejected(str(path), [
            f"{path}: {size:,} bytes is over the import limit of {limits.max_bytes:,} bytes; split the file, "
            "or raise the limit with --max-import-bytes"])


def _read_jsonl(path: Path, limits: Limits, problems: list[str]) -> list[tuple[int, dict]]:
    """(line number, record) of every JSON object line; anything else is a problem."""
    _check_size(path, limits)
    records = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if len(records) >= limits.max_records:
                raise ImportRejected(str(path), [
                    f"{path}: more than {limits.max_records:,} records; split the file, or raise --max-import-records"])
            try:
                record = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                torn = "" if raw.endswith(b"\n") else " (an unfinished last line: was the run killed?)"
                problems.append(f"{path}:{line_no}: not valid JSON{torn}: {e}")
                continue
            if not isinstance(record, dict):
                problems.append(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
                continue
            records.append((line_no, record))
    return records


class _Files:
    """Existence checks through one listing per folder (fast for a million images)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = str(path.parent)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return path.name in self._names[folder]


_BAD_NAME = re.compile(r"[\x00-\x1f\x7f#]")


def check_file_name(rel: str, what: str) -> str | None:
    """A problem message when a path cannot be written into a label file safely (a tab or newline
    would split its row, ``#`` starts a comment in label files), else None."""
    if _BAD_NAME.search(rel):
        bad = sorted({repr(c)[1:-1] for c in _BAD_NAME.findall(rel)})
        return (f"{what} {rel[:120]!r} has {', '.join(bad)} in its name, which label files cannot hold; "
                "rename the file")
    return None


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(r) for r in roots)


def _image_file(value, base: Path, files: _Files, what: str, roots: list[Path]) -> Path | str:
    """An existing image file named by a record (relative to ``base``), or a problem message. The
    path is resolved (symlinks followed) and must lie under one of ``roots`` (the imported folder, and
    the folders an admin allowed with ``--allow-root``): nothing outside is imported or served."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PATH or "\x00" in value:
        return f"{what!r} must be a file path string, got {str(value)[:80]!r}"
    given = Path(value).expanduser()
    candidate = given if given.is_absolute() else base / given
    path = candidate.resolve()
    if not _inside(path, roots):
        allowed = ", ".join(str(r) for r in roots)
        link = Path(os.path.normpath(candidate.absolute())) != path
        return (f"{what} {value!r} {'links to' if link else 'is'} {path}, which leaves the folder {allowed}; only "
                "files inside it are imported: copy the file in, or name its folder with --allow-root DIR")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"{what} {value!r} is not an image ({', '.join(IMAGE_EXTENSIONS)})"
    if not files.exists(path):
        return f"{what} {value!r} not found (looked in {candidate.parent})"
    return path


def _text(value, what: str, limit: int = MAX_TEXT) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what!r} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{what!r} has {len(value):,} characters; at most {limit:,} are kept")
    return value


def _manifest_task(obj: dict, run_dir: Path, files: _Files, roots: list[Path]) -> dict | str:
    """A task row from one manifest line (a :class:`ManifestRecord`), or a problem message."""
    try:
        record = ManifestRecord.from_json(obj)
    except RecordError as e:
        return str(e)
    root = run_dir.resolve()
    image = _image_file(record.image, run_dir, files, "image", [root])
    if isinstance(image, str):
        return image
    key = image.relative_to(root).as_posix()
    bad = check_file_name(key, "image")
    if bad:
        return bad
    product = None
    if record.product is not None:
        where = record.resolve(run_dir, "product")  # schema 1: relative to the cwd of the old run
        product = _image_file(str(where), run_dir, files, "product", [root, *roots])
        if isinstance(product, str):
            return product
    try:
        caption = _text(record.caption, "caption")
        product_id = _text(record.product_id or (record.product_hash or "")[:16]
                           or (product or image).stem, "product_id", 255)
        meta = {k: getattr(record, k) for k in META_KEYS if getattr(record, k) is not None}
        if record.nsfw:  # the safety checker flagged the image: the media routes serve it blurred
            meta["nsfw"] = True
        if len(json.dumps(meta, default=str)) > MAX_META:
            raise ValueError(f"prompt and settings take over {MAX_META:,} characters")
    except ValueError as e:
        return str(e)
    reference = None
    if record.label is not None:
        reference = label_index(record.label)
        if reference is None:
            return f"label {record.label!r} is not 0..5 or a class name"
    rfnet_label, probs, unsure = None, None, None
    if record.verdict is not None:
        rfnet_label = label_index(record.verdict.label_index)
        probs = list(record.verdict.probs.values())
        unsure = record.verdict.uncertainty
    return {
        "key": key, "image_path": str(image), "product_path": str(product) if product else None,
        "product_id": product_id, "caption": caption, "meta": meta, "reference_label": reference,
        "rfnet_label": rfnet_label, "rfnet_probs": probs, "uncertainty": unsure,
    }


def _run_manifest(path: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, manifest) from a run folder or its manifest file."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST).is_file():
            raise FileNotFoundError(f"{p} has no {MANIFEST}; pass a generation run folder")
        return p, p / MANIFEST
    if p.is_file():
        return p.parent, p
    raise FileNotFoundError(f"{p} does not exist")


def read_run(path: str | os.PathLike, limits: Limits, problems: list[str],
             allow_roots: list[Path] | None = None) -> tuple[list[dict], int]:
    """Task rows of a generation run (one per generated image) and the number of failed items.
    Every file must lie inside the run folder or under ``allow_roots``."""
    run_dir, manifest = _run_manifest(path)
    roots = [Path(r).resolve() for r in allow_roots or ()]
    files = _Files()
    rows, seen, failed = [], {}, 0
    for line_no, record in _read_jsonl(manifest, limits, problems):
        if record.get("error"):
            failed += 1
            continue
        row = _manifest_task(record, run_dir, files, roots)
        if isinstance(row, str):
            problems.append(f"{manifest}:{line_no}: {row}")
        elif row["key"] in seen:
            first = seen[row["key"]]
            problems.append(f"{manifest}:{line_no}: image {row['key']!r} is listed again (first on line {first})")
        else:
            seen[row["key"]] = line_no
            seed = record.get("seed")
            row["seed_key"] = (record.get("product_hash") or row["product_id"], seed if isinstance(seed, int) else None)
            rows.append(row)
    return rows, failed


def read_rf1m_folder(root: str | os.PathLike, limits: Limits, problems: list[str],
                     allow_roots: list[Path] | None = None, label_codes: str | None = None) -> list[dict]:
    """Task rows of an RF1M-style folder, read by RFNet's own reader (numeric labels by ``label_codes``,
    default the release's 1..6); its labels become reference labels."""
    from reliable_ad.data.readers import LABEL_FILE_NAMES, read_rf1m

    root = Path(root)
    label_file = next((root / n for n in LABEL_FILE_NAMES if (root / n).is_file()), None)
    if label_file is None:
        raise FileNotFoundError(f"{root} has neither {MANIFEST} nor a label file ({', '.join(LABEL_FILE_NAMES)})")
    _check_size(label_file, limits)
    result = read_rf1m(root, unsuitable="keep", label_codes=label_codes)
    problems.extend(f"{p.file}:{p.line}: {p.message}" for p in result.problems)
    if len(result.samples) > limits.max_records:
        raise ImportRejected(str(label_file), [f"{label_file}: more than {limits.max_records:,} records; "
                                               "split the file, or raise --max-import-records"])
    rows, resolved_root = [], root.resolve()
    roots = [resolved_root, *(Path(r).resolve() for r in allow_roots or ())]
    files = _Files()
    for sample in result.samples:
        where = sample.source.replace(label_file.name, str(label_file), 1)
        image = _image_file(sample.image, root, files, "image", [resolved_root])
        if isinstance(image, str):
            problems.append(f"{where}: {image}")
            continue
        product = None
        if sample.product is not None:
            product = _image_file(sample.product, root, files, "product", roots)
            if isinstance(product, str):
                problems.append(f"{where}: {product}")
                continue
        bad = check_file_name(image.relative_to(resolved_root).as_posix(), "image")
        if bad:
            problems.append(f"{where}: {bad}")
            continue
        if len(sample.caption) > MAX_TEXT:
            problems.append(f"{where}: caption has {len(sample.caption):,} characters; at most {MAX_TEXT:,}")
            continue
        rows.append({
            "key": image.relative_to(resolved_root).as_posix(), "image_path": str(image),
            "product_path": str(product) if product else None, "product_id": sample.product_id[:255],
            "caption": sample.caption,
            "meta": {}, "reference_label": sample.label, "rfnet_label": None, "rfnet_probs": None,
            "uncertainty": None,
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Writing


def _finish_problems(source: str, problems: list[str], skip_problems: bool) -> None:
    if problems and not skip_problems:
        raise ImportRejected(source, problems)
    for p in problems[:20]:
        logger.warning("skipped: %s", p)


def _batch(s, name: str, kind: str, source: str, k: int, order: str, roots: list[Path] | None = None) -> Batch:
    """The batch ``name`` (created, or the existing one of the same kind); ``roots`` (the imported folders
    and the admin's --allow-root folders) are kept in its meta: the media routes serve only files under them."""
    batch = s.scalar(select(Batch).where(Batch.name == name))
    if batch is None:
        batch = Batch(name=name, kind=kind, source=source, k=k, order=order, active=True, meta={})
        s.add(batch)
        s.flush()
    elif batch.kind != kind:
        article = "an" if batch.kind[:1] in "aeiou" else "a"  # an availability batch, a preference batch
        raise ValueError(f"batch {name!r} exists as {article} {batch.kind} batch; choose another --name")
    elif source not in batch.source.split("\n"):
        batch.source = f"{batch.source}\n{source}"
    if roots:
        known = list((batch.meta or {}).get("roots") or [])
        batch.meta = {**(batch.meta or {}), "roots": known + [str(r) for r in roots if str(r) not in known]}
    return batch


def _check_options(name: str, k: int, order: str) -> None:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError(f"batch name {name!r} must be 1-200 characters")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50:
        raise ValueError(f"k={k!r} must be 1..50 answers per item")
    if order not in QUEUE_ORDERS:
        raise ValueError(f"order={order!r} must be one of {QUEUE_ORDERS}")


def _shuffle_key(key: str) -> float:
    return random.Random(key).random()


def import_availability(db: Database, source: str | os.PathLike, *, name: str | None = None, k: int = 2,
                        order: str = "sequential", limits: Limits | None = None,
                        skip_problems: bool = False, allow_roots: list[str | os.PathLike] | None = None,
                        label_codes: str | None = None) -> ImportSummary:
    """Import one generation run (its manifest) or an RF1M-style folder as an availability batch.

    Files must lie inside the imported folder (after following links) or under ``allow_roots``."""
    limits = limits or Limits()
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist; pass a generation run folder, its manifest.jsonl "
                                "or an RF1M folder")
    if name is None:
        name = (src if src.is_dir() else src.parent).resolve().name
    _check_options(name, k, order)
    problems: list[str] = []
    failed = 0
    if (src.is_dir() and (src / MANIFEST).is_file()) or src.is_file():
        rows, failed = read_run(src, limits, problems, allow_roots)
    else:
        rows = read_rf1m_folder(src, limits, problems, allow_roots, label_codes)
    _finish_problems(str(src), problems, skip_problems)
    if not rows:  # never an empty batch that annotators would then see
        shown = "".join(f"\n  {p}" for p in problems[:5])
        raise ValueError(f"{src} holds no image that can be imported ({len(problems)} with problems, {failed} failed "
                         f"item(s)); nothing was imported{shown}")
    with db.write() as s:
        folder = (src if src.is_dir() else src.parent).resolve()
        batch = _batch(s, name, "availability", str(src.resolve()), k, order,
                       [folder, *(Path(r).resolve() for r in allow_roots or ())])
        present = set(s.scalars(select(Task.key).where(Task.batch_id == batch.id)))
        new = [r for r in rows if r["key"] not in present]
        for start in range(0, len(new), _CHUNK):
            s.execute(insert(Task), [
                {**{c: r[c] for c in r if c != "seed_key"}, "batch_id": batch.id, "needed": batch.k,
                 "shuffle": _shuffle_key(r["key"])} for r in new[start:start + _CHUNK]])
        summary = ImportSummary(batch.name, batch.id, "availability", added=len(new), present=len(rows) - len(new),
                                failed_generations=failed, problems=problems)
    logger.info("imported %d new items into %r (%d present already)", summary.added, summary.batch, summary.present)
    return summary


def import_preference(db: Database, runs: list[str | os.PathLike], *, methods: list[str] | None = None,
                      name: str | None = None, k: int = 2, limits: Limits | None = None,
                      skip_problems: bool = False, allow_roots: list[str | os.PathLike] | None = None,
                      ) -> ImportSummary:
    """Import runs of different methods (same products, same seeds) as a preference batch: each
    product and seed found in two or more runs becomes one set to rank."""
    limits = limits or Limits()
    if len(runs) < 2:
        raise ValueError(f"a preference batch compares runs: pass two or more run folders, got {len(runs)}")
    dirs = [_run_manifest(r)[0] for r in runs]
    methods = list(methods) if methods else [d.resolve().name for d in dirs]
    if len(methods) != len(dirs):
        raise ValueError(f"{len(methods)} method names for {len(dirs)} runs; give one name per run")
    if len(set(methods)) != len(methods) or not all(isinstance(m, str) and 0 < len(m) <= 200 for m in methods):
        raise ValueError(f"method names {methods} must be distinct; pass --methods NAME ... to name the runs")
    name = name or "compare-" + "-".join(methods)
    _check_options(name[:200], k, "sequential")
    name = name[:200]
    problems: list[str] = []
    groups: dict[tuple, dict] = {}
    n_images = 0
    for method, run_dir in zip(methods, dirs, strict=True):
        rows, _ = read_run(run_dir, limits, problems, allow_roots)
        for row in rows:
            product_key, seed = row["seed_key"]
            if seed is None:
                problems.append(f"{run_dir / MANIFEST}: image {row['key']!r} has no 'seed'; sets to rank group "
                                "images made with the same seed")
                continue
            n_images += 1
            group = groups.setdefault((str(product_key), seed), {"task": row, "candidates": {}})
            group["candidates"].setdefault(method, row)
    _finish_problems(", ".join(map(str, runs)), problems, skip_problems)
    sets = {key: g for key, g in groups.items() if len(g["candidates"]) >= 2}
    unmatched = sum(len(g["candidates"]) for key, g in groups.items() if key not in sets)
    with db.write() as s:
        batch = _batch(s, name, "preference", "\n".join(str(d.resolve()) for d in dirs), k, "sequential",
                       [d.resolve() for d in dirs] + [Path(r).resolve() for r in allow_roots or ()])
        present = set(s.scalars(select(Task.key).where(Task.batch_id == batch.id)))
        added = 0
        for (product_key, seed), group in sets.items():
            key = f"{product_key}:{seed}"
            if key in present:
                continue
            first = group["task"]
            task = Task(batch_id=batch.id, key=key, product_id=first["product_id"], product_path=first["product_path"],
                        caption=first["caption"], image_path=None, meta={"seed": seed, **first["meta"]},
                        needed=batch.k, shuffle=_shuffle_key(key))
            task.candidates = [Candidate(position=i, method=m, image_path=row["image_path"],
                                         meta={"key": row["key"], **({"nsfw": True} if row["meta"].get("nsfw") else {})})
                               for i, (m, row) in enumerate(group["candidates"].items())]
            s.add(task)
            added += 1
        s.flush()
        summary = ImportSummary(batch.name, batch.id, "preference", added=added, present=len(sets) - added,
                                unmatched=unmatched, problems=problems)
    logger.info("imported %d sets to rank into %r from %d images (%d without a counterpart)",
                added, name, n_images, unmatched)
    return summary
