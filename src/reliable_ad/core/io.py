"""Atomic writes and content hashes: nothing a user produced is ever left half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter before Python 3.13)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any error the temporary file goes and ``path`` keeps its old content (or stays absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 minus the umask)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_lines(path: str | os.PathLike, lines) -> Path:
    """Stream text lines (each with its newline) to ``path`` atomically, without holding them all."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one record as a single line, flushed and fsynced.

    A single ``write`` of one line is what makes a crash leave either the whole line or, at worst,
    a torn last line; :func:`read_jsonl` drops a torn last line so a resumed run redoes that item.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """Read JSON Lines; a torn (unterminated, unparsable) last line is ignored.

    With ``repair=True`` such a torn tail is cut off the file, so later appends start on a clean line.
    A malformed line in the middle is a real corruption and raises ``ValueError`` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records: list[dict] = []
    good_end = 0
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        is_last = i == len(lines) - 1
        if not line.strip():
            if not is_last:
                good_end += len(line) + 1
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if is_last:  # torn by a crash mid-write
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e}); fix or remove that line") from e
        if is_last:  # parsed but not newline-terminated: complete it
            if repair:
                with open(path, "ab") as f:
                    f.write(b"\n")
            good_end += len(line) + 1
            break
        good_end += len(line) + 1
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
