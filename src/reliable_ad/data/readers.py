"""Labelled generated images (docs/method.md §3): read the public RF1M release, our generation
manifests and annotation exports into compact :class:`Sample` lists (RFNet's training and
evaluation data, the annotation importer's RF1M folders).

RF1M layout. This is our reading of the public release; its exact layout is not in hand, so
:func:`read_rf1m` is tolerant and every rule below lives in this module::

    <root>/
      images/...                      generated images, any sub-folders
      labels.txt                      one line per generated image: "<relative path> <label>"
      products/<product id>.png       optional product images (.png, .jpg, .jpeg or .webp)
      captions.json | captions.tsv    optional captions keyed by product id

- Label file: ``label_file`` if given, else the first of :data:`LABEL_FILE_NAMES` in ``root``.
  Path and label are separated by a tab, a comma or white space. The label is an integer 0..5 or a
  class name, case-insensitive, with spaces, underscores and hyphens ignored (``space_mismatch``
  == ``Space Mismatch``). Blank lines, ``#`` comments and a header line are skipped.
- An image path is relative to the label file's folder, to ``root`` or to ``root/images``; the
  first of these that holds the file wins (one directory listing per folder, never a stat per file).
- Product id: the generated image's stem with a trailing ``_<digits>`` attempt suffix removed
  (``images/12345_3.png`` -> ``12345``); an id that itself ends in ``_<digits>`` is cut too, which
  only groups products more coarsely (safe for splits). The product image is
  ``products/<product id>.<ext>``, else ``products/<image stem>.<ext>``, else None.
- Captions: a JSON object ``{key: caption}`` or TSV lines ``key<TAB>caption``; the key is the
  product id, else the image stem. No caption gives "".
- Label 5, Unsuitable (the source product photo is bad), is dropped (default), kept as class 5,
  or merged into a named class: ``unsuitable="drop" | "keep" | "merge:<class name>"``.

Readers never fail on one item: a malformed line, an unknown label, a duplicate or a missing file
is recorded as a :class:`Problem` (file, line, message), skipped, and counted in a logged summary.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from reliable_ad.core.labels import CLASS_NAMES, UNSUITABLE
from reliable_ad.data.records import iter_manifest

__all__ = [
    "CLASS_NAMES", "UNSUITABLE", "Sample", "Problem", "ReadResult", "parse_label", "policy_class_names",
    "read_rf1m", "read_captions", "read_manifest", "read_annotation_export",
]

logger = logging.getLogger(__name__)

LABEL_FILE_NAMES = ("labels.txt", "label.txt", "labels.tsv", "labels.csv", "annotations.txt")
CAPTION_FILE_NAMES = ("captions.json", "captions.tsv", "captions.txt")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # in order of preference
_ATTEMPT_SUFFIX = re.compile(r"_\d+$")
_NAME_TO_INDEX = {re.sub(r"[\s_\-]+", "", n).lower(): i for i, n in enumerate((*CLASS_NAMES, UNSUITABLE))}


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled generated image. Paths are strings (a ``Path`` costs several times the memory)."""

    image: str  # the generated image I_g
    product: str | None  # the product image I_o, None when the release has none for it
    caption: str  # the product caption, "" when unknown
    label: int  # class index; -1 only for unlabelled manifest records read with require_label=False
    product_id: str  # the grouping key for splits
    source: str  # "<file name>:<line number>" it was read from
    depth: str | None = None  # cached depth map I_d (.png or .npy)
    salience: str | None = None  # cached salience map I_s (.png or .npy)
    agreement: float | None = None  # share of annotator votes for the label, when votes were given


class Problem(NamedTuple):
    file: str
    line: int  # 1-based; 0 when the problem is not tied to a line
    message: str


class ReadResult(NamedTuple):
    samples: list[Sample]
    problems: list[Problem]


# ---------------------------------------------------------------------------------------------
# Labels


@lru_cache(maxsize=4096)
def _label_from_str(token: str) -> int | None:
    token = token.strip()
    if token.isdigit():
        return int(token) if int(token) <= 5 else None
    return _NAME_TO_INDEX.get(re.sub(r"[\s_\-]+", "", token).lower())


def _raw_label(value: Any) -> int | None:
    """0..5 (5 = Unsuitable) from an int or a class name; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 0 <= value <= 5 else None
    if isinstance(value, str):
        return _label_from_str(value)
    return None


def parse_label(value: Any) -> int:
    """Raw class index 0..5 of an int or a tolerant class name (5 is Unsuitable)."""
    raw = _raw_label(value)
    if raw is None:
        raise ValueError(f"label {value!r} is neither an int 0..5 nor one of {(*CLASS_NAMES, UNSUITABLE)}")
    return raw


def _label_map(unsuitable: str) -> tuple[int | None, ...]:
    """Raw label 0..5 -> final class index, or None where the sample is dropped."""
    if unsuitable == "drop":
        return (0, 1, 2, 3, 4, None)
    if unsuitable == "keep":
        return (0, 1, 2, 3, 4, 5)
    if isinstance(unsuitable, str) and unsuitable.startswith("merge:"):
        target = _NAME_TO_INDEX.get(re.sub(r"[\s_\-]+", "", unsuitable[6:]).lower())
        if target is not None and target != 5:
            return (0, 1, 2, 3, 4, target)
    raise ValueError(
        f"unsuitable={unsuitable!r} is not a policy; use 'drop', 'keep' or 'merge:<class>' "
        f"with <class> one of {CLASS_NAMES}"
    )


def policy_class_names(unsuitable: str = "drop") -> tuple[str, ...]:
    """The class names a reader's labels index into under an Unsuitable policy."""
    return (*CLASS_NAMES, UNSUITABLE) if _label_map(unsuitable)[5] == 5 else CLASS_NAMES


# ---------------------------------------------------------------------------------------------
# Files


class _FolderIndex:
    """Existence checks through one directory listing per folder: a million stat calls are slow
    on network disks, one listing is not."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def names(self, folder: str) -> frozenset[str]:
        names = self._names.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except OSError:
                names = frozenset()
            self._names[folder] = names
        return names

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        return name in self.names(folder)


class _ImageResolver:
    """Finds a label file's relative image path in the first base folder that holds it; each folder
    is listed once, however many lines name it."""

    def __init__(self, bases: Sequence[str]) -> None:
        self.bases = list(dict.fromkeys(bases))
        self._files = _FolderIndex()
        self._folders: dict[str, list[tuple[str, frozenset[str]]]] = {}  # relative folder -> candidates

    def resolve(self, rel: str) -> tuple[str, bool]:
        """(path, found); a path that is not found is placed under the first base."""
        rel_dir, _, name = rel.rpartition("/")
        candidates = self._folders.get(rel_dir)
        if candidates is None:
            paths = dict.fromkeys(os.path.normpath(os.path.join(b, rel_dir)) for b in self.bases)
            candidates = self._folders[rel_dir] = [(folder, self._files.names(folder)) for folder in paths]
        for folder, names in candidates:
            if name in names:
                return folder + os.sep + name, True
        return candidates[0][0] + os.sep + name, False


def _product_files(folder: str | None) -> dict[str, str]:
    """Image stem -> path for the product folder; .png wins over .jpg and so on."""
    if not folder or not os.path.isdir(folder):
        return {}
    best: dict[str, tuple[int, str]] = {}
    for name in os.listdir(folder):
        stem, ext = os.path.splitext(name)
        rank = IMAGE_EXTENSIONS.index(ext.lower()) if ext.lower() in IMAGE_EXTENSIONS else -1
        if rank >= 0 and (stem not in best or rank < best[stem][0]):
            best[stem] = (rank, os.path.join(folder, name))
    return {stem: path for stem, (_, path) in best.items()}


def read_captions(path: str | os.PathLike, problems: list[Problem] | None = None) -> dict[str, str]:
    """Captions from a JSON object ``{key: caption}`` or TSV ``key<TAB>caption`` lines.

    Bad entries go to ``problems`` (when given) and are skipped; a first TSV line whose key is
    ``product_id``, ``id`` or ``key`` is taken as a header.
    """
    path = os.fspath(path)
    problems = [] if problems is None else problems
    captions: dict[str, str] = {}
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8-sig") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            problems.append(Problem(path, 0, f"cannot read captions: {e}"))
            return captions
        if not isinstance(data, dict):
            problems.append(Problem(path, 0, f"expected a JSON object {{key: caption}}, got {type(data).__name__}"))
            return captions
        for key, caption in data.items():
            if isinstance(caption, str):
                captions[str(key)] = caption
            else:
                problems.append(Problem(path, 0, f"caption of {key!r} is {type(caption).__name__}, not a string"))
        return captions
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if not sep or not key.strip():
                problems.append(Problem(path, line_no, f"expected 'key<TAB>caption', got {line[:80]!r}"))
            elif not (line_no == 1 and key.strip().lower() in ("product_id", "id", "key")):
                captions[key.strip()] = caption.strip()
    return captions


def _find_first(folder: str, given: str | os.PathLike | None, names: Sequence[str], what: str) -> str | None:
    if given is not None:
        path = os.path.join(folder, os.fspath(given))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {path!r} does not exist")
        return path
    return next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)


def _split_label_line(text: str) -> tuple[str, int] | str:
    """(relative path, raw label) or an error message. Tab, then comma, then white space; with
    white space the label is the last word or the last two (class names have at most two words)."""
    for sep in ("\t", ","):
        if sep in text:
            path, _, label = text.rpartition(sep)
            raw = _label_from_str(label)
            if raw is not None and path.strip():
                return path.strip(), raw
    words = text.rsplit(None, 2)
    for n_label_words in (1, 2):
        if len(words) > n_label_words:
            raw = _label_from_str(" ".join(words[-n_label_words:]))
            if raw is not None:
                return text.rsplit(None, n_label_words)[0].strip(), raw
    return f"expected '<image path> <label>' with label 0..5 or a class name, got {text[:120]!r}"


def read_rf1m(
    root: str | os.PathLike,
    *,
    label_file: str | os.PathLike | None = None,
    unsuitable: str = "drop",
    captions: str | os.PathLike | None = None,
    products: str | os.PathLike | None = "products",
    check_files: bool = True,
) -> ReadResult:
    """Read an RF1M-style release (layout in the module docstring) into samples and problems.

    ``label_file``, ``captions`` and ``products`` are relative to ``root`` (or absolute);
    ``products=None`` reads no product images. ``check_files=False`` skips the missing-image
    check (a missing image then keeps the label file's path under the first candidate folder).
    """
    label_map = _label_map(unsuitable)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"RF1M root {root!r} is not a folder; pass the folder holding the labels and images")
    label_path = _find_first(root, label_file, LABEL_FILE_NAMES, "label file")
    if label_path is None:
        raise FileNotFoundError(f"no label file in {root!r}; looked for {LABEL_FILE_NAMES}, or pass label_file=")
    problems: list[Problem] = []
    caption_path = _find_first(root, captions, CAPTION_FILE_NAMES, "captions file")
    caption_of = read_captions(caption_path, problems) if caption_path else {}
    product_of = _product_files(os.path.join(root, os.fspath(products)) if products is not None else None)
    images = _ImageResolver([os.path.dirname(label_path), root, os.path.join(root, "images")])
    source_name = os.path.basename(label_path)
    samples: list[Sample] = []
    seen: set[str] = set()
    shared_ids: dict[str, str] = {}  # one string object per product id
    n_dropped = n_no_product = 0
    first_content = True
    with open(label_path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parsed = _split_label_line(text)
            if isinstance(parsed, str):
                if not (first_content and ("label" in text.lower() or "class" in text.lower())):  # else a header
                    problems.append(Problem(label_path, line_no, parsed))
                first_content = False
                continue
            first_content = False
            rel, raw = parsed
            rel = rel.replace("\\", "/")
            if rel in seen:
                problems.append(Problem(label_path, line_no, f"duplicate entry for {rel!r}; the first one is kept"))
                continue
            seen.add(rel)
            label = label_map[raw]
            if label is None:
                n_dropped += 1
                continue
            image, found = images.resolve(rel)
            if not found and check_files:
                problems.append(Problem(label_path, line_no, f"image {rel!r} not found under {images.bases}"))
                continue
            name = os.path.basename(image)
            stem = name.rpartition(".")[0] or name
            pid = _ATTEMPT_SUFFIX.sub("", stem) or stem
            pid = shared_ids.setdefault(pid, pid)
            product = product_of.get(pid) or product_of.get(stem)
            n_no_product += product is None
            caption = caption_of.get(pid) or caption_of.get(stem) or ""
            samples.append(Sample(image, product, caption, label, pid, f"{source_name}:{line_no}"))
    _log_summary("RF1M", label_path, samples, problems, dropped_unsuitable=n_dropped, without_product=n_no_product)
    return ReadResult(samples, problems)


def _log_summary(kind: str, path: str, samples: list, problems: list[Problem], **counts: int) -> None:
    extra = "".join(f", {v} {k.replace('_', ' ')}" for k, v in counts.items() if v)
    logger.info("%s %s: %d samples%s, %d problems", kind, path, len(samples), extra, len(problems))
    if problems:
        shown = "; ".join(f"line {p.line}: {p.message}" for p in problems[:5])
        logger.warning("%s %s: %d lines skipped (%s%s)", kind, path, len(problems), shown,
                       "; ..." if len(problems) > 5 else "")


# ---------------------------------------------------------------------------------------------
# Our own JSON Lines: generation manifests and annotation exports


def _iter_jsonl(path: str, problems: list[Problem]) -> Iterator[tuple[int, dict]]:
    """Records with their line numbers; an unparsable line (a torn last line too) is a problem."""
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(Problem(path, line_no, f"not valid JSON ({e.msg})"))
                continue
            if not isinstance(record, dict):
                problems.append(Problem(path, line_no, f"expected a JSON object, got {type(record).__name__}"))
                continue
            yield line_no, record


def _record_sample(record: dict, folder: str, label: int, source: str, files: _FolderIndex | None,
                   agreement: float | None = None) -> Sample | str:
    """A Sample from a manifest or export record, or an error message. Paths are relative to the
    file's folder; a named file (image, product, depth, salience) that is missing is an error."""
    paths: dict[str, str | None] = {}
    for key in ("image", "product", "depth", "salience"):
        value = record.get(key)
        if value is None and key != "image":
            paths[key] = None
            continue
        if not isinstance(value, str) or not value:
            return f"{key!r} must be a non-empty path string, got {value!r}"
        path = os.path.normpath(os.path.join(folder, value))
        if files is not None and not files.exists(path):
            return f"{key} {value!r} not found"
        paths[key] = path
    caption = record.get("caption") or ""
    if not isinstance(caption, str):
        return f"'caption' must be a string, got {type(caption).__name__}"
    pid = record.get("product_id") or record.get("product_hash")
    if not pid:
        named = paths["product"] or paths["image"]
        pid = os.path.splitext(os.path.basename(named))[0]
        pid = pid if paths["product"] else (_ATTEMPT_SUFFIX.sub("", pid) or pid)
    return Sample(paths["image"], paths["product"], caption, label, str(pid), source,
                  paths["depth"], paths["salience"], agreement)


def read_manifest(
    path: str | os.PathLike, *, require_label: bool = True, unsuitable: str = "drop", check_files: bool = True,
    use_verdicts: bool = False,
) -> ReadResult:
    """Read our generation manifest (JSON Lines, one record per generated image).

    Records are :class:`reliable_ad.data.records.ManifestRecord` lines: ``image`` and ``product``
    relative to the manifest's folder (a schema-1 product may be relative to the working directory
    the run was started in), ``product_hash``, ``caption``, optional ``depth``/``salience``, and
    ``label`` (int or class name: a human label). RFNet's own
    ``verdict`` is a prediction, not ground truth: it is used as the label only with
    ``use_verdicts=True`` (e.g. to distil one reviewer into another), so that training on an inspected
    run never silently learns from the model's own guesses.
    Records with ``error`` set are generation failures and are skipped; records without a label are
    skipped unless ``require_label=False``, which gives them label -1. The product id is
    ``product_id``, else ``product_hash``, else the product file's stem.
    """
    label_map = _label_map(unsuitable)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"manifest {path!r} does not exist")
    folder, name = os.path.split(path)
    files = _FolderIndex() if check_files else None
    samples: list[Sample] = []
    problems: list[Problem] = []
    n_failed = n_unlabelled = n_dropped = 0
    for line_no, record in iter_manifest(path):
        if isinstance(record, str):
            problems.append(Problem(path, line_no, record))
            continue
        if record.failed:
            n_failed += 1
            continue
        value = record.label
        if value is None and use_verdicts and record.verdict is not None:
            value = record.verdict.label
        if value is None:
            if require_label:
                n_unlabelled += 1
                continue
            label: int | None = -1
        else:
            raw = _raw_label(value)
            if raw is None:
                problems.append(Problem(path, line_no, f"label {value!r} is not 0..5 or a class name"))
                continue
            label = label_map[raw]
        if label is None:
            n_dropped += 1
            continue
        fields = {k: getattr(record, k) for k in ("image", "product", "depth", "salience", "caption", "product_id",
                                                  "product_hash")}
        product = record.resolve(folder, "product")
        if product is not None and record.schema_version < 2:  # schema 1: the product may be cwd-relative
            fields["product"] = str(product)
        sample = _record_sample(fields, folder, label, f"{name}:{line_no}", files)
        if isinstance(sample, str):
            problems.append(Problem(path, line_no, sample))
        else:
            samples.append(sample)
    _log_summary("manifest", path, samples, problems, failed_generations=n_failed, unlabelled=n_unlabelled,
                 dropped_unsuitable=n_dropped)
    return ReadResult(samples, problems)


def read_annotation_export(
    path: str | os.PathLike, *, unsuitable: str = "drop", check_files: bool = True
) -> ReadResult:
    """Read an annotation export: JSON Lines with ``image``, ``product``, ``caption`` and ``label``
    or ``votes`` (a list of labels). Votes give the majority label, ties to the lowest class index;
    ``Sample.agreement`` is the share of votes for the final label. With both, ``label`` (an
    adjudicated decision) wins. Majority is taken over raw labels, before the Unsuitable policy.
    """
    label_map = _label_map(unsuitable)
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation export {path!r} does not exist")
    folder, name = os.path.split(path)
    files = _FolderIndex() if check_files else None
    samples: list[Sample] = []
    problems: list[Problem] = []
    n_dropped = 0
    for line_no, record in _iter_jsonl(path, problems):
        votes = record.get("votes")
        raw_votes: list[int | None] = []
        if votes is not None:
            raw_votes = [_raw_label(v) for v in votes] if isinstance(votes, list) else [None]
            if not raw_votes or None in raw_votes:
                problems.append(Problem(path, line_no, f"votes {votes!r} must be a non-empty list of labels"))
                continue
        if record.get("label") is not None:
            raw = _raw_label(record["label"])
            if raw is None:
                problems.append(Problem(path, line_no, f"label {record['label']!r} is not 0..5 or a class name"))
                continue
        elif raw_votes:
            tally = [raw_votes.count(k) for k in range(6)]
            raw = tally.index(max(tally))  # the first maximum: ties go to the lowest index
        else:
            problems.append(Problem(path, line_no, "record has neither 'label' nor 'votes'"))
            continue
        agreement = raw_votes.count(raw) / len(raw_votes) if raw_votes else None
        label = label_map[raw]
        if label is None:
            n_dropped += 1
            continue
        sample = _record_sample(record, folder, label, f"{name}:{line_no}", files, agreement)
        if isinstance(sample, str):
            problems.append(Problem(path, line_no, sample))
        else:
            samples.append(sample)
    _log_summary("annotation export", path, samples, problems, dropped_unsuitable=n_dropped)
    return ReadResult(samples, problems)


