"""Images inside zip archives, read in place (docs/method.md §3, RF1M ships ~30 zips): list an archive's
members into compact arrays, refuse unsafe members, and read one member's bytes lazily.

A member is addressed as ``<archive>.zip/<member name>``, the convention of Python's zipimport, so a
sample's image path still ends in the image's file name. Archives are opened lazily, once per
process, and dropped after a fork (a handle shared with the parent would share its file offset).
An open archive is its central directory in numpy arrays (~80 bytes per member, against ~500 for
``zipfile``'s ``ZipInfo``), so every DataLoader worker can hold all of RF1M's archives open; members
are read with ``os.pread`` and checked against their CRC. Archives the fast path does not cover
(multi-disk, compression other than stored/deflate) are read through ``zipfile``.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from reliable_ad.data.samples import Problem

__all__ = ["ArchiveMembers", "scan_archives", "find_archives", "unsafe_member", "split_member_path",
           "read_bytes", "file_size", "ARCHIVE_SUFFIX"]

ARCHIVE_SUFFIX = ".zip"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_IMAGE_SUFFIXES = tuple(e.encode() for e in IMAGE_EXTENSIONS)


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be read (zip-slip and friends), or None when it is safe."""
    return _unsafe_name(info.filename.encode("utf-8")) or _unsafe_kind(info.external_attr, info.flag_bits)


def _unsafe_name(name: bytes) -> str | None:
    if name[:1] in (b"/", b"\\") or (name[:1].isalpha() and name[1:2] == b":"):
        return "absolute member name"
    if b"\\" in name or b"\x00" in name:
        return "backslash or NUL in the member name"
    if b"/../" in b"/" + name + b"/":
        return "'..' in the member name"
    return None


def _unsafe_kind(external_attr: int, flags: int) -> str | None:
    if stat.S_ISLNK(external_attr >> 16):
        return "symbolic link"
    if flags & 0x1:
        return "encrypted member"
    return None


@dataclass
class ArchiveMembers:
    """Every safe image member of a set of archives, in compact arrays (no ZipInfo kept)."""

    archives: list[str]  # absolute archive paths
    names: np.ndarray  # bytes (S), member names, UTF-8
    archive: np.ndarray  # int16, index into ``archives``
    sizes: np.ndarray  # int64, uncompressed member sizes

    def path(self, j: int) -> str:
        """``<archive>/<member>`` of member ``j``."""
        return f"{self.archives[int(self.archive[j])]}/{self.names[j].decode('utf-8')}"


def find_archives(root: str | os.PathLike) -> list[str]:
    """The zip archives of an RF1M folder: ``root/*.zip`` and ``root/images/*.zip``, sorted."""
    root = Path(root)
    found = [*root.glob(f"*{ARCHIVE_SUFFIX}"), *(root / "images").glob(f"*{ARCHIVE_SUFFIX}")]
    return sorted(str(p.resolve()) for p in found if p.is_file())


_CENTRAL = struct.Struct("<4s6H3L5H2L")  # a central directory entry's fixed 46 bytes
_EOCD, _EOCD64_LOCATOR, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


def _central_directory(f) -> bytes | None:
    """The raw central directory of an open zip file, or None where the fast path does not apply
    (multi-disk archives, odd layouts: zipfile reads those)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    f.seek(max(0, end - 65_557))  # the end record (22 bytes) plus the longest comment
    tail = f.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        return None
    disk, _, _, entries, size, offset = struct.unpack_from("<4H2L", tail, at + 4)
    if disk or entries == 0xFFFF or size == 0xFFFFFFFF or offset == 0xFFFFFFFF:  # zip64: its own end record
        locator = tail.rfind(_EOCD64_LOCATOR, 0, at)
        if locator < 0:
            return None
        f.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = f.read(56)
        if record[:4] != _EOCD64:
            return None
        size, offset = struct.unpack_from("<2Q", record, 40)
    f.seek(offset)
    data = f.read(size)
    return data if len(data) == size else None


class _Entry(NamedTuple):
    name: bytes  # UTF-8
    size: int  # uncompressed
    compressed: int
    offset: int  # of the local header
    method: int
    crc: int
    unsafe: str | None  # why it must not be read, or None


def _zip64(extra: bytes, values: list[int]) -> list[int]:
    """(size, compressed, offset) with the saturated 32-bit ones taken from the zip64 extra field."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        if tag == 1:
            field = at + 4
            for k, value in enumerate(values):
                if value == 0xFFFFFFFF and field + 8 <= at + 4 + length:
                    values[k] = struct.unpack_from("<Q", extra, field)[0]
                    field += 8
            break
        at += 4 + length
    return values


def _entries_fast(data: bytes) -> Iterator[_Entry]:
    """The entries of a raw central directory."""
    at, n = 0, len(data)
    unpack = _CENTRAL.unpack_from
    while at + 46 <= n:
        (sig, _, _, flags, method, _, _, crc, compressed, size, name_len, extra_len, comment_len, _, _, attr,
         offset) = unpack(data, at)
        if sig != b"PK\x01\x02":
            raise zipfile.BadZipFile(f"bad central directory entry at byte {at}")
        name = data[at + 46: at + 46 + name_len]
        if 0xFFFFFFFF in (size, compressed, offset):
            size, compressed, offset = _zip64(data[at + 46 + name_len: at + 46 + name_len + extra_len],
                                              [size, compressed, offset])
        at += 46 + name_len + extra_len + comment_len
        if not flags & 0x800 and not name.isascii():  # legacy names are cp437, as zipfile reads them
            name = name.decode("cp437").encode("utf-8")
        yield _Entry(name, size, compressed, offset, method, crc, _unsafe_name(name) or _unsafe_kind(attr, flags))


def _members(path: str) -> Iterator[_Entry]:
    with open(path, "rb") as f:
        data = _central_directory(f)
    if data is not None:
        yield from _entries_fast(data)
        return
    with zipfile.ZipFile(path) as zf:
        for i in zf.infolist():
            yield _Entry(i.filename.encode("utf-8"), i.file_size, i.compress_size, i.header_offset, i.compress_type,
                         i.CRC, unsafe_member(i))


def scan_archives(paths: list[str], problems: list[Problem]) -> ArchiveMembers:
    """List the image members of ``paths`` from their central directories, one archive at a time, no
    per-member object kept. Unsafe members and unreadable archives are recorded and skipped."""
    names: list[bytes] = []
    owner: list[int] = []
    sizes: list[int] = []
    kept: list[str] = []
    for path in paths:
        k = len(kept)
        listed = len(names)
        try:
            for name, size, *_, reason in _members(path):
                if name.endswith(b"/") or not name.lower().endswith(_IMAGE_SUFFIXES):
                    continue
                if reason:
                    problems.append(Problem(path, 0, f"member {name.decode('utf-8', 'replace')!r} refused: {reason}"))
                    continue
                names.append(name)
                sizes.append(size)
        except (OSError, zipfile.BadZipFile, struct.error) as e:
            del names[listed:], sizes[listed:]
            problems.append(Problem(path, 0, f"cannot read zip archive: {e}; the archive is skipped"))
            continue
        kept.append(path)
        owner.extend([k] * (len(names) - listed))
    if len(kept) > np.iinfo(np.int16).max:
        raise ValueError(f"{len(kept)} archives; at most {np.iinfo(np.int16).max} are supported, merge some")
    return ArchiveMembers(kept, np.array(names, dtype=bytes) if names else np.zeros(0, "S1"),
                          np.array(owner, dtype=np.int16), np.array(sizes, dtype=np.int64))


_KNOWN_ARCHIVES: set[str] = set()  # archives seen to exist (an absent one is asked again next time)


def _is_file(path: str) -> bool:
    if path not in _KNOWN_ARCHIVES and os.path.isfile(path):
        _KNOWN_ARCHIVES.add(path)
    return path in _KNOWN_ARCHIVES


def split_member_path(path: str) -> tuple[str, str] | None:
    """(archive, member) of ``<archive>.zip/<member>``, or None for a plain file path (one stat per
    archive per process, not one per member)."""
    cut = path.find(ARCHIVE_SUFFIX + "/")
    while cut >= 0:
        archive = path[: cut + len(ARCHIVE_SUFFIX)]
        if _is_file(archive):
            return archive, path[cut + len(ARCHIVE_SUFFIX) + 1:]
        cut = path.find(ARCHIVE_SUFFIX + "/", cut + 1)
    return None


class _Archive:
    """One archive opened in this process: its member table (sorted names, offsets, sizes) and a file
    descriptor read with ``os.pread`` (no shared offset, so threads need no lock)."""

    def __init__(self, path: str):
        self.path = path
        self.zf: zipfile.ZipFile | None = None
        entries = [e for e in _members(path) if not e.name.endswith(b"/")]
        names = np.array([e.name for e in entries], dtype=bytes) if entries else np.zeros(0, "S1")
        order = np.argsort(names, kind="stable")
        self.names = names[order]
        table = np.array([(e.size, e.compressed, e.offset, e.method, e.crc) for e in entries],
                         dtype=np.int64).reshape(-1, 5)
        self.table = table[order]
        self.unsafe = {e.name: e.unsafe for e in entries if e.unsafe}
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)
        if self.zf is not None:
            self.zf.close()

    def _row(self, member: str) -> np.ndarray:
        key = member.encode("utf-8")
        if key in self.unsafe:
            raise ValueError(f"{self.path}: member {member!r} refused: {self.unsafe[key]}")
        j = int(np.searchsorted(self.names, key))
        if j >= len(self.names) or self.names[j] != key:
            raise FileNotFoundError(f"{self.path} has no member {member!r}")
        return self.table[j]

    def size(self, member: str) -> int:
        return int(self._row(member)[0])

    def read(self, member: str) -> bytes:
        size, compressed, offset, method, crc = (int(v) for v in self._row(member))
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # rare: let zipfile decompress it
            self.zf = self.zf or zipfile.ZipFile(self.path)
            return self.zf.read(member)
        header = os.pread(self.fd, 30, offset)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{self.path}: no local header for {member!r} at byte {offset}")
        name_len, extra_len = struct.unpack_from("<2H", header, 26)
        raw = os.pread(self.fd, compressed, offset + 30 + name_len + extra_len)
        data = raw if method == zipfile.ZIP_STORED else zlib.decompress(raw, -15)
        if len(data) != size or zlib.crc32(data) != crc:
            raise zipfile.BadZipFile(f"{self.path}: member {member!r} is corrupt (size or CRC mismatch)")
        return data


class _OpenArchives:
    """The archives this process has opened (least recently used closed past ``keep``), never
    inherited by a fork."""

    def __init__(self, keep: int = 256):
        self.keep = keep
        self.pid = os.getpid()
        self.open: OrderedDict[str, _Archive] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: str) -> _Archive:
        with self.lock:
            if self.pid != os.getpid():  # forked: open our own
                self.open = OrderedDict()
                self.pid = os.getpid()
            archive = self.open.pop(path, None) or _Archive(path)
            self.open[path] = archive
            while len(self.open) > self.keep:
                self.open.popitem(last=False)[1].close()
            return archive


_ARCHIVES = _OpenArchives()


def file_size(path: str) -> int:
    """Bytes of a file, or of a zip member addressed as ``<archive>.zip/<member>`` (uncompressed)."""
    parts = split_member_path(path)
    if parts is None:
        return os.path.getsize(path)
    return _ARCHIVES.get(parts[0]).size(parts[1])


def read_bytes(path: str) -> bytes:
    """The bytes of a file, or of a zip member addressed as ``<archive>.zip/<member>``."""
    parts = split_member_path(path)
    if parts is None:
        with open(path, "rb") as f:
            return f.read()
    try:
        return _ARCHIVES.get(parts[0]).read(parts[1])
    except (zipfile.BadZipFile, zlib.error) as e:
        raise OSError(f"{path}: {e}") from e
