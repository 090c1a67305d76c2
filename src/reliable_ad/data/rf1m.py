"""The RF1M release (docs/method.md §3), read as given: a label file plus images in folders or inside
zip archives (never unpacked), indexed into compact arrays so a million rows fit in well under 1 GB.

Layout. This is our reading of the public release; every rule below lives in this module::

    <root>/
      label.txt | labels.txt          one line per generated image: "<relative path> <label>"
      images/... or *.zip             generated images, in folders or zip archives (root/*.zip, root/images/*.zip)
      products/<product id>.png       optional product images (.png, .jpg, .jpeg or .webp)
      captions.json | captions.tsv    optional captions keyed by product id

- Label file: ``label_file`` if given, else the first of :data:`LABEL_FILE_NAMES` in ``root``.
  Path and label are separated by a tab, a comma or white space. The label is a class name,
  case-insensitive, spaces, underscores and hyphens ignored (``space_mismatch`` == ``Space Mismatch``),
  or an integer code read through a named mapping (`reliable_ad.data.label_codes`; default ``rf1m``, the
  release README's 1..6). A code the mapping lacks refuses the whole file: a wrong mapping would
  mislabel every line. Blank lines, ``#`` comments and a header line are skipped. Every read logs the
  class histogram (INFO).
- Image: relative to the label file's folder, to ``root`` or to ``root/images`` (one directory listing
  per folder, never a stat per file), else a zip member named exactly so, else the member with the same
  file name when that name is unique among the archives. Unsafe members (absolute names, ``..``,
  symbolic links, encrypted) are refused (`reliable_ad.data.archives`).
- Product id: the image stem without a trailing ``_<digits>`` attempt suffix (``12345_3.png`` ->
  ``12345``). Product image ``products/<product id>.<ext>``, else ``products/<image stem>.<ext>``.
- Captions: a JSON object ``{key: caption}`` or TSV ``key<TAB>caption``; key the product id, else stem.
- Unsuitable is dropped (default), kept as class 5, or merged: ``unsuitable="drop" | "keep" | "merge:<class>"``.

A malformed line, an unknown class name, a duplicate or a missing file is a :class:`Problem` (file,
line, message), skipped and counted in a logged summary; the read goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.data.archives import ArchiveMembers, find_archives, scan_archives
from reliable_ad.data.label_codes import RAW_NAMES, LabelCodes, log_class_histogram, name_to_raw, resolve_label_codes
from reliable_ad.data.samples import Problem, ReadResult, Sample

__all__ = ["RF1MIndex", "build_index", "read_rf1m", "read_captions", "label_map", "policy_class_names",
           "LABEL_FILE_NAMES", "log_summary"]

logger = logging.getLogger("reliable_ad.data.readers")  # one logger for every reader's summaries

LABEL_FILE_NAMES = ("labels.txt", "label.txt", "labels.tsv", "labels.csv", "annotations.txt")
CAPTION_FILE_NAMES = ("captions.json", "captions.tsv", "captions.txt")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")  # in order of preference
ATTEMPT_SUFFIX = re.compile(r"_\d+$")
_CODED_LINE = re.compile(r"(\S.*?)[\t, ]+(\d+)").fullmatch  # what _split_label_line makes of such a line


# --- labels ------------------------------------------------------------------------------------------


def label_map(unsuitable: str) -> tuple[int | None, ...]:
    """Raw label 0..5 -> final class index, or None where the sample is dropped."""
    if unsuitable == "drop":
        return (0, 1, 2, 3, 4, None)
    if unsuitable == "keep":
        return (0, 1, 2, 3, 4, 5)
    if isinstance(unsuitable, str) and unsuitable.startswith("merge:"):
        target = name_to_raw(unsuitable[6:])
        if target is not None and target != 5:
            return (0, 1, 2, 3, 4, target)
    raise ValueError(
        f"unsuitable={unsuitable!r} is not a policy; use 'drop', 'keep' or 'merge:<class>' "
        f"with <class> one of {CLASS_NAMES}"
    )


def policy_class_names(unsuitable: str = "drop") -> tuple[str, ...]:
    """The class names a reader's labels index into under an Unsuitable policy."""
    return RAW_NAMES if label_map(unsuitable)[5] == 5 else CLASS_NAMES


def _is_label(token: str) -> bool:
    return token.isdigit() or name_to_raw(token) is not None


def _split_label_line(text: str) -> tuple[str, str] | str:
    """(relative path, label token) or an error message. Tab, then comma, then white space; with
    white space the label is the last word or the last two (class names have at most two words)."""
    for sep in ("\t", ","):
        if sep in text:
            path, _, label = text.rpartition(sep)
            if path.strip() and _is_label(label.strip()):
                return path.strip(), label.strip()
    words = text.rsplit(None, 2)
    for n_label_words in (1, 2):
        if len(words) > n_label_words:
            label = " ".join(words[-n_label_words:])
            if _is_label(label):
                return text.rsplit(None, n_label_words)[0].strip(), label
    return f"expected '<image path> <label>' with a label code or a class name, got {text[:120]!r}"


@dataclass
class LabelRows:
    """A label file's rows in file order: compact arrays, no per-row objects."""

    paths: np.ndarray  # bytes (S), relative image paths with '/' separators, UTF-8
    raw: np.ndarray  # int8, raw class 0..5 (5 = Unsuitable)
    lines: np.ndarray  # int32, 1-based line numbers


def read_label_rows(path: str, codes: LabelCodes, problems: list[Problem]) -> LabelRows:
    """Parse a label file; bad lines become problems, a code outside ``codes`` raises ValueError."""
    paths: list[bytes] = []
    raw: list[int] = []
    lines: list[int] = []
    seen: set[bytes] = set()
    first_content = True
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            fast = _CODED_LINE(text)  # "<path> <code>", nearly every line of the release
            parsed = fast.groups() if fast else _split_label_line(text)
            if isinstance(parsed, str):
                if not (first_content and ("label" in text.lower() or "class" in text.lower())):  # else a header
                    problems.append(Problem(path, line_no, parsed))
                first_content = False
                continue
            first_content = False
            rel, token = parsed
            if token.isdigit():
                value = codes.raw(int(token))
                if value is None:
                    raise codes.unknown_code_error(int(token), f"{path}:{line_no}")
            else:
                value = name_to_raw(token)
            key = (rel.replace("\\", "/") if "\\" in rel else rel).encode("utf-8")
            if key in seen:
                problems.append(Problem(path, line_no, f"duplicate entry for {rel!r}; the first one is kept"))
                continue
            seen.add(key)
            paths.append(key)
            raw.append(value)
            lines.append(line_no)
    del seen
    return LabelRows(np.array(paths, dtype=bytes) if paths else np.zeros(0, "S1"), np.array(raw, dtype=np.int8),
                     np.array(lines, dtype=np.int32))


# --- the index ---------------------------------------------------------------------------------------


def _basename(names: np.ndarray) -> np.ndarray:
    return np.char.rpartition(names, b"/")[:, 2] if names.size else names


def _lookup(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Position in ``table`` of each key, -1 where absent or where the table holds it twice."""
    if not table.size or not keys.size:
        return np.full(keys.shape, -1, dtype=np.int64)
    order = np.argsort(table, kind="stable")
    ordered = table[order]
    pos = np.searchsorted(ordered, keys)
    pos_c = np.minimum(pos, len(ordered) - 1)
    hit = ordered[pos_c] == keys
    unique = np.minimum(pos_c + 1, len(ordered) - 1)
    twice = (pos_c + 1 < len(ordered)) & (ordered[unique] == keys)
    return np.where(hit & ~twice, order[pos_c], -1)


@dataclass
class RF1MIndex:
    """Each label row -> (archive, member) or a plain file, without holding a decoded image."""

    root: str
    label_path: str
    codes: LabelCodes
    rows: LabelRows
    members: ArchiveMembers
    member_of_row: np.ndarray  # int32 index into ``members``, -1 when the image is not in an archive
    problems: list[Problem] = field(default_factory=list)
    histogram: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows.lines)

    def rel(self, i: int) -> str:
        return self.rows.paths[i].decode("utf-8")

    def archived(self, i: int) -> str | None:
        """``<archive>.zip/<member>`` of row ``i``, or None when it is not in an archive."""
        j = int(self.member_of_row[i])
        return self.members.path(j) if j >= 0 else None


def _find_first(folder: str, given: str | os.PathLike | None, names: Sequence[str], what: str) -> str | None:
    if given is not None:
        path = os.path.join(folder, os.fspath(given))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} {path!r} does not exist")
        return path
    return next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)


def build_index(root: str | os.PathLike, *, label_file: str | os.PathLike | None = None,
                label_codes: str | LabelCodes | None = None, archives: bool = True) -> RF1MIndex:
    """Parse the label file and list the archives; match rows to members (exact name, else a unique
    file name). Logs the class histogram. ``archives=False`` skips the archives (folder releases)."""
    codes = resolve_label_codes(label_codes)
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"RF1M root {root!r} is not a folder; pass the folder holding the labels and images")
    label_path = _find_first(root, label_file, LABEL_FILE_NAMES, "label file")
    if label_path is None:
        raise FileNotFoundError(f"no label file in {root!r}; looked for {LABEL_FILE_NAMES}, or pass label_file=")
    problems: list[Problem] = []
    rows = read_label_rows(label_path, codes, problems)
    members = scan_archives(find_archives(root) if archives else [], problems)
    member_of_row = _lookup(rows.paths, members.names)
    missing = member_of_row < 0
    if missing.any() and members.names.size:
        member_of_row[missing] = _lookup(_basename(rows.paths[missing]), _basename(members.names))
    hist = log_class_histogram(label_path, rows.raw, codes)
    return RF1MIndex(root, label_path, codes, rows, members, member_of_row.astype(np.int32), problems, hist)


# --- files, products and captions ------------------------------------------------------------------


class FolderIndex:
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
        self._files = FolderIndex()
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


def log_summary(kind: str, path: str, samples: list, problems: list[Problem], **counts: int) -> None:
    extra = "".join(f", {v} {k.replace('_', ' ')}" for k, v in counts.items() if v)
    logger.info("%s %s: %d samples%s, %d problems", kind, path, len(samples), extra, len(problems))
    if problems:
        shown = "; ".join(f"line {p.line}: {p.message}" for p in problems[:5])
        logger.warning("%s %s: %d lines skipped (%s%s)", kind, path, len(problems), shown,
                       "; ..." if len(problems) > 5 else "")


# --- samples -----------------------------------------------------------------------------------------


def read_rf1m(
    root: str | os.PathLike,
    *,
    label_file: str | os.PathLike | None = None,
    unsuitable: str = "drop",
    captions: str | os.PathLike | None = None,
    products: str | os.PathLike | None = "products",
    check_files: bool = True,
    label_codes: str | LabelCodes | None = None,
) -> ReadResult:
    """Read an RF1M-style release (layout in the module docstring) into samples and problems.

    ``label_file``, ``captions`` and ``products`` are relative to ``root`` (or absolute);
    ``products=None`` reads no product images. ``check_files=False`` skips the missing-image
    check (a missing image then keeps the label file's path under the first candidate folder).
    ``label_codes``: the meaning of integer labels (name or mapping file; default ``rf1m``).
    """
    policy = label_map(unsuitable)
    index = build_index(root, label_file=label_file, label_codes=label_codes)
    root, label_path = index.root, index.label_path
    problems = index.problems
    caption_path = _find_first(root, captions, CAPTION_FILE_NAMES, "captions file")
    caption_of = read_captions(caption_path, problems) if caption_path else {}
    product_of = _product_files(os.path.join(root, os.fspath(products)) if products is not None else None)
    images = _ImageResolver([os.path.dirname(label_path), root, os.path.join(root, "images")])
    source_name = os.path.basename(label_path)
    samples: list[Sample] = []
    shared_ids: dict[str, str] = {}  # one string object per product id
    n_dropped = n_no_product = 0
    for i in range(len(index)):
        label = policy[index.rows.raw[i]]
        if label is None:
            n_dropped += 1
            continue
        line_no = int(index.rows.lines[i])
        rel = index.rel(i)
        image, found = images.resolve(rel)
        member = None if found else index.archived(i)
        if member is not None:
            image, found = member, True
        if not found and check_files:
            problems.append(Problem(label_path, line_no, f"image {rel!r} not found under {images.bases} "
                                                         f"nor in {len(index.members.archives)} zip archive(s)"))
            continue
        name = image.rpartition("/")[2].rpartition(os.sep)[2]
        stem = name.rpartition(".")[0] or name
        pid = ATTEMPT_SUFFIX.sub("", stem) or stem
        pid = shared_ids.setdefault(pid, pid)
        product = product_of.get(pid) or product_of.get(stem)
        n_no_product += product is None
        caption = caption_of.get(pid) or caption_of.get(stem) or ""
        samples.append(Sample(image, product, caption, label, pid, f"{source_name}:{line_no}"))
    log_summary("RF1M", label_path, samples, problems, dropped_unsuitable=n_dropped, without_product=n_no_product)
    return ReadResult(samples, problems)
