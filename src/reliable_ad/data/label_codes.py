"""Label codes: what the numbers in an RF1M ``label.txt`` mean (docs/method.md §1), as an explicit,
named mapping, so a file numbered in another order is refused instead of silently mislabelled.

Codes map to *raw* class indices: 0..4 are `reliable_ad.core.labels.CLASS_NAMES` (the model's output
order), 5 is Unsuitable. Class names in a label file ("Space Mismatch", ``space_mismatch``) need no
mapping and always work.

- ``rf1m`` (default): the release README's numbering, 1 Available, 2 Unsuitable, 3 Space Mismatch,
  4 Size Mismatch, 5 Indistinctiveness, 6 Shape Hallucination.
- ``paper0``: 0..5 in the paper's class order with Unsuitable last (this package before 0.x read
  every integer this way).
- a JSON or YAML file ``{code: class name}``, e.g. ``{"0": "Available", "1": "Space Mismatch", ...}``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import numpy as np

from reliable_ad.core.labels import CLASS_NAMES, UNSUITABLE

__all__ = ["LabelCodes", "LABEL_CODES", "DEFAULT_LABEL_CODES", "RAW_NAMES", "resolve_label_codes", "name_to_raw",
           "class_histogram", "log_class_histogram"]

logger = logging.getLogger(__name__)

RAW_NAMES: tuple[str, ...] = (*CLASS_NAMES, UNSUITABLE)  # raw index -> name; 5 is Unsuitable
_NAME_TO_RAW = {re.sub(r"[\s_\-]+", "", n).lower(): i for i, n in enumerate(RAW_NAMES)}


@lru_cache(maxsize=4096)
def name_to_raw(token: str) -> int | None:
    """Raw class index of a tolerant class name (case, spaces, ``_`` and ``-`` ignored), else None."""
    return _NAME_TO_RAW.get(re.sub(r"[\s_\-]+", "", token).lower())


@dataclass(frozen=True)
class LabelCodes:
    """A named mapping from the integer codes of a label file to raw class indices (0..5)."""

    name: str  # "rf1m", "paper0", or the mapping file's path
    codes: Mapping[int, int]  # code -> raw class index

    def __post_init__(self) -> None:
        bad = {c: r for c, r in self.codes.items() if not (isinstance(c, int) and c >= 0 and 0 <= r < len(RAW_NAMES))}
        if bad or not self.codes:
            raise ValueError(f"label codes {self.name!r}: {bad or 'no codes'} must map codes >= 0 to class indices "
                             f"0..{len(RAW_NAMES) - 1} ({', '.join(RAW_NAMES)})")

    def raw(self, code: int) -> int | None:
        return self.codes.get(code)

    def describe(self) -> str:
        return ", ".join(f"{c} {RAW_NAMES[r]}" for c, r in sorted(self.codes.items()))

    def unknown_code_error(self, code: int, where: str) -> ValueError:
        """The refusal of a code the mapping lacks: names the code, the line, the mapping and the fix."""
        others = [n for n, m in LABEL_CODES.items() if n != self.name and code in m.codes]
        hint = f"--label-codes {others[0]} ({LABEL_CODES[others[0]].describe()})" if others else "--label-codes NAME"
        return ValueError(
            f"{where}: label code {code} is not in the label-code mapping {self.name!r} ({self.describe()}); "
            f"the file numbers its classes differently: pass {hint}, or a JSON/YAML file {{code: class name}}"
        )


LABEL_CODES: dict[str, LabelCodes] = {
    "rf1m": LabelCodes("rf1m", {1: 0, 2: 5, 3: 1, 4: 2, 5: 3, 6: 4}),
    "paper0": LabelCodes("paper0", {i: i for i in range(len(RAW_NAMES))}),
}
DEFAULT_LABEL_CODES = "rf1m"


def _from_file(path: str) -> LabelCodes:
    from reliable_ad.core.config import load_config_file

    try:
        data: Any = load_config_file(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--label-codes {path!r}: cannot read the mapping file ({e}); "
                         "write JSON or YAML {code: class name}") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--label-codes {path!r}: expected a non-empty mapping {{code: class name}}, "
                         f"got {type(data).__name__}")
    codes: dict[int, int] = {}
    for key, value in data.items():
        code = int(key) if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()) else None
        raw = name_to_raw(value) if isinstance(value, str) else None
        if code is None or raw is None:
            raise ValueError(f"--label-codes {path!r}: entry {key!r}: {value!r} must map an integer code >= 0 to "
                             f"one of {RAW_NAMES}")
        codes[code] = raw
    return LabelCodes(path, codes)


def resolve_label_codes(spec: str | os.PathLike | LabelCodes | None = None) -> LabelCodes:
    """A mapping by name (``rf1m``, ``paper0``), from a JSON/YAML file, or as given; None = ``rf1m``."""
    if isinstance(spec, LabelCodes):
        return spec
    spec = DEFAULT_LABEL_CODES if spec is None else os.fspath(spec)
    if spec in LABEL_CODES:
        return LABEL_CODES[spec]
    if os.path.isfile(spec):
        return _from_file(spec)
    raise ValueError(f"--label-codes {spec!r} is neither a mapping name ({', '.join(LABEL_CODES)}) nor a file; "
                     f"rf1m is the release README's order ({LABEL_CODES['rf1m'].describe()}), paper0 is "
                     f"({LABEL_CODES['paper0'].describe()})")


def class_histogram(raw_labels: np.ndarray | list[int]) -> dict[str, int]:
    """Rows per class name (raw indices 0..5), every class listed."""
    counts = np.bincount(np.asarray(raw_labels, dtype=np.int64), minlength=len(RAW_NAMES))
    return {name: int(counts[i]) for i, name in enumerate(RAW_NAMES)}


def log_class_histogram(path: str, raw_labels: np.ndarray | list[int], codes: LabelCodes) -> dict[str, int]:
    """Log (INFO) the class histogram of a label file: a wrong mapping shows at once as odd shares."""
    hist = class_histogram(raw_labels)
    total = max(1, sum(hist.values()))
    shown = ", ".join(f"{name} {n} ({100 * n / total:.1f}%)" for name, n in hist.items())
    logger.info("%s: classes with label codes %r: %s", path, codes.name, shown)
    return hist
