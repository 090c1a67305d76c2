"""The manifest record: one line of a run's ``manifest.jsonl``, written by `generate` and `run` and
read by everything else (resume, summary, report, `inspect`, RFNet's readers, the annotation importer).

One typed record instead of dicts assembled and read in many places, so a writer and its readers
cannot drift apart. Two kinds of record share the class:

- an image record: ``image`` is set (an attempt at one product, with its prompt, seed, placement and,
  in a `run`, RFNet's ``verdict`` and whether it was ``accepted``);
- a failed item: ``error`` is set (a product that could not be loaded or generated, or a bad row of a
  products file, whose location is ``source``).

Paths (``image``, ``product``, ``depth``, ``salience``) are relative to the run folder, never to the
working directory: schema 2 runs copy each product into ``RUN/products/`` so a run folder is
self-contained (move it, import it from anywhere). ``product_source`` keeps the path the user gave.

Schema history (``schema_version``):
    1 (no field)  ``product`` was the path as given on the command line (relative to the working
                  directory the run was started in, or absolute); failed items named it in ``product``.
    2             ``product`` is ``products/<product id><ext>`` inside the run folder; ``product_source``
                  is the given path; failed items carry ``product_source`` and ``source`` ("file:row").
Records of schema 1 still read: their product path resolves from the run folder first, then from the
working directory (where the old run wrote it from).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliable_ad.core.io import append_jsonl, read_jsonl
from reliable_ad.core.labels import CLASS_NAMES

SCHEMA_VERSION = 2
MANIFEST = "manifest.jsonl"
PRODUCTS_DIR = "products"


class RecordError(ValueError):
    """A manifest line that is not a valid record; the message names the field and what it must be."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class VerdictRecord:
    """RFNet's verdict on one image, as stored in a record (``probs``: class name -> probability)."""

    label: str
    label_index: int
    probs: dict[str, float]
    p_available: float
    model: str | None = None  # the inspector's fingerprint (written by `inspect`)

    @classmethod
    def from_json(cls, obj: Any) -> VerdictRecord:
        if not isinstance(obj, Mapping):
            raise RecordError(f"'verdict' must be an object, got {type(obj).__name__}")
        probs = obj.get("probs")
        if isinstance(probs, (list, tuple)):  # a list in class order (exports of other tools)
            names = CLASS_NAMES if len(probs) <= len(CLASS_NAMES) else [f"class {i}" for i in range(len(probs))]
            probs = dict(zip(names, probs))
        if probs is None:
            probs = {}
        if not isinstance(probs, Mapping) or len(probs) > 16 or not all(
                isinstance(k, str) and len(k) <= 100 and _is_number(v) and 0.0 <= v <= 1.0 for k, v in probs.items()):
            raise RecordError(f"verdict probs {str(probs)[:80]} must map at most 16 class names to probabilities in [0, 1]")
        label, index = obj.get("label"), obj.get("label_index")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(CLASS_NAMES):
            label, index = CLASS_NAMES[label], label if index is None else index
        if index is None and isinstance(label, str) and label in CLASS_NAMES:
            index = CLASS_NAMES.index(label)
        if label is None and isinstance(index, int) and 0 <= index < len(CLASS_NAMES):
            label = CLASS_NAMES[index]
        if not isinstance(label, str) or not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise RecordError(f"verdict needs a class name 'label' and an index 'label_index', got "
                              f"{str(label)[:40]!r} and {str(index)[:20]!r}")
        p = obj.get("p_available", probs.get(CLASS_NAMES[0]))
        if not _is_number(p) or not 0.0 <= p <= 1.0:
            raise RecordError(f"verdict p_available {str(p)[:20]!r} must be a probability in [0, 1]")
        model = obj.get("model")
        return cls(label, index, {k: float(v) for k, v in probs.items()}, float(p),
                   model if isinstance(model, str) else None)

    def to_json(self) -> dict:
        out = {"label": self.label, "label_index": self.label_index, "probs": dict(self.probs),
               "p_available": self.p_available}
        if self.model is not None:
            out["model"] = self.model
        return out

    @property
    def uncertainty(self) -> float | None:
        return uncertainty(list(self.probs.values()), self.p_available)


def uncertainty(probs: list[float] | None, p_available: float | None) -> float | None:
    """RFNet's uncertainty about one image in [0, 1]: the entropy of ``probs`` over its maximum (0 sure,
    1 uniform), else the binary entropy of ``p_available``; None with neither. Orders the annotation
    queue's active-learning mode."""
    if probs and len(probs) >= 2 and all(_is_number(p) for p in probs):
        total = float(sum(probs))
        if total > 0:
            ps = [float(p) / total for p in probs]
            return -sum(p * math.log(p) for p in ps if p > 0) / math.log(len(ps))
    if _is_number(p_available) and 0.0 <= p_available <= 1.0:
        return -sum(q * math.log2(q) for q in (float(p_available), 1.0 - float(p_available)) if q > 0)
    return None


# field name -> allowed JSON types (None always allowed for optional fields)
_STR, _INT, _NUM, _BOOL, _DICT = (str,), (int,), (int, float), (bool,), (dict,)
_TYPE_NAMES = {_STR: "a string", _INT: "an integer", _NUM: "a number", _BOOL: "true or false", _DICT: "an object"}
_TYPES: dict[str, tuple[type, ...]] = {
    "image": _STR, "product": _STR, "product_source": _STR, "product_hash": _STR, "product_id": _STR,
    "caption": _STR, "caption_given": _BOOL, "preset": _STR, "prompt": _STR, "negative_prompt": _STR,
    "slots": _DICT, "run_seed": _INT, "attempt": _INT, "seed": _INT, "variation": _DICT, "image_scale": _NUM,
    "size": _INT, "placement": _DICT, "model": _DICT, "sampling": _DICT, "nsfw": _BOOL, "seconds": _NUM,
    "inspect_seconds": _NUM, "rfnet": _STR, "accepted": _BOOL, "process": _INT, "depth": _STR,
    "salience": _STR, "ai_label": _STR, "error": _STR, "source": _STR, "reliable_ad_version": _STR,
    "created": _STR,
}


@dataclass
class ManifestRecord:
    """One line of ``manifest.jsonl``; see the module docstring for the two kinds and the paths."""

    image: str | None = None
    product: str | None = None
    product_source: str | None = None
    product_hash: str | None = None
    product_id: str | None = None
    caption: str | None = None
    caption_given: bool | None = None
    preset: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None
    slots: dict | None = None
    run_seed: int | None = None
    attempt: int | None = None
    seed: int | None = None
    variation: dict | None = None
    image_scale: float | None = None
    size: int | None = None
    placement: dict | None = None
    model: dict | None = None
    sampling: dict | None = None
    nsfw: bool | None = None
    seconds: float | None = None
    inspect_seconds: float | None = None
    rfnet: str | None = None
    verdict: VerdictRecord | None = None
    accepted: bool | None = None
    process: int | None = None
    label: Any = None  # a human label (class index or name), e.g. in a hand-labelled manifest
    depth: str | None = None
    salience: str | None = None
    ai_label: str | None = None
    error: str | None = None
    source: str | None = None  # where a failed item came from ("products.csv:3")
    reliable_ad_version: str | None = None
    created: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept on rewrite

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_json(cls, obj: Any) -> ManifestRecord:
        """A record from one parsed line; raises :class:`RecordError` naming the bad field."""
        if not isinstance(obj, Mapping):
            raise RecordError(f"expected a JSON object, got {type(obj).__name__}")
        version = obj.get("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecordError(f"schema_version {version!r} must be a positive integer")
        if version > SCHEMA_VERSION:
            raise RecordError(f"schema_version {version} is newer than this reliable-ad reads ({SCHEMA_VERSION}); "
                              "upgrade reliable-ad")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "schema_version"}
        values: dict[str, Any] = {}
        for key, value in obj.items():
            if key not in known:
                continue
            if key == "verdict":
                values[key] = None if value is None else VerdictRecord.from_json(value)
                continue
            types = _TYPES.get(key)
            if value is not None and types is not None:
                ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
                if not ok or (isinstance(value, float) and not math.isfinite(value)):
                    raise RecordError(f"{key!r} must be {_TYPE_NAMES[types]}, got {str(value)[:80]!r}")
            values[key] = value
        if not values.get("image") and not values.get("error"):
            raise RecordError("a record needs an 'image' (a generated image) or an 'error' (a failed item)")
        if version == 1 and values.get("product_source") is None:
            values["product_source"] = values.get("product")
        extra = {k: v for k, v in obj.items() if k not in known and k != "schema_version"}
        return cls(**values, schema_version=version, extra=extra)

    def to_json(self) -> dict:
        """The line's JSON object: ``schema_version`` first, unset optional fields left out."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        for f in dataclasses.fields(self):
            if f.name in ("schema_version", "extra"):
                continue
            value = getattr(self, f.name)
            if value is None and f.name != "error":
                continue
            if f.name == "error" and value is None and self.image is None:
                continue
            out[f.name] = value.to_json() if isinstance(value, VerdictRecord) else value
        out.update(self.extra)
        return out

    def to_line(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, default=str) + "\n"

    # ------------------------------------------------------------------ meaning
    @property
    def failed(self) -> bool:
        return bool(self.error)

    @property
    def is_image(self) -> bool:
        return not self.error and isinstance(self.image, str) and bool(self.image)

    @property
    def identity(self) -> tuple[str | None, int | None]:
        """What makes an image unique in a run: (product content hash, attempt)."""
        return self.product_hash, self.attempt

    @property
    def where(self) -> str:
        """How a failed item is named to the user: its products-file row, else the path given."""
        return self.source or self.product_source or self.product or "(unknown product)"

    def resolve(self, run_dir: str | os.PathLike, key: str = "image") -> Path | None:
        """The file a path field names, resolved from the run folder (for schema 1 products, from the
        working directory when the run folder has no such file)."""
        value = getattr(self, key)
        if not value:
            return None
        p = Path(value).expanduser()
        if p.is_absolute():
            return p
        run_path = Path(run_dir) / p
        if key == "product" and self.schema_version < 2 and not run_path.exists():
            return Path.cwd() / p
        return run_path


def iter_manifest(path: str | os.PathLike) -> Iterator[tuple[int, ManifestRecord | str]]:
    """(line number, record or problem message) for every non-blank line; a torn last line (a run
    killed mid-write) is a problem like any other, which readers report."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                torn = "" if raw.endswith(b"\n") else " (an unfinished last line: was the run killed?)"
                yield line_no, f"not valid JSON{torn}: {e}"
                continue
            try:
                yield line_no, ManifestRecord.from_json(obj)
            except RecordError as e:
                yield line_no, str(e)


def read_records(path: str | os.PathLike, *, repair: bool = False) -> list[ManifestRecord]:
    """Every record of a manifest a run wrote (resume, summary, report); a torn last line is dropped
    (cut off the file with ``repair=True``), any other bad line raises naming the file and line."""
    out = []
    for i, obj in enumerate(read_jsonl(path, repair=repair), 1):
        try:
            out.append(ManifestRecord.from_json(obj))
        except RecordError as e:
            raise ValueError(f"{path}: record {i}: {e}; fix or remove that line") from e
    return out


def append_record(path: str | os.PathLike, record: ManifestRecord) -> None:
    """Append one record as one fsynced line (see :func:`reliable_ad.core.io.append_jsonl`)."""
    append_jsonl(path, record.to_json())


# ---------------------------------------------------------------------------------------------
# Images the safety checker flagged (``nsfw``)

NSFW_CAPTION = "flagged by the safety checker"
NSFW_BLUR = 16  # Gaussian radius in px at 160 px (scaled with the size), applied twice


def blur_flagged(image, size: int = 160):
    """What may be shown of an image a record marks ``nsfw``: shrunk to fit ``size`` and blurred beyond
    recognition (the run report's thumbnails, the annotation app's media route). A PIL image in and out."""
    from PIL import ImageFilter

    im = image.convert("RGB")
    im.thumbnail((size, size))
    radius = max(NSFW_BLUR, NSFW_BLUR * max(im.size) // 160)
    return im.filter(ImageFilter.GaussianBlur(radius)).filter(ImageFilter.GaussianBlur(radius))
