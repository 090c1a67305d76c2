"""Contact sheets of SynthAd scenes: one row per class, to see at a glance that each scene looks like
the class it claims (and, with verdicts, what the oracle made of it)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from reliable_ad.core.labels import CLASS_NAMES

LABEL_WIDTH = 150  # px of the left margin holding each row's class name


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] | None = None, *,
                  scale: int = 2, gap: int = 4, background: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 grid of equally sized (S, S, 3) uint8 images, scaled up `scale` times (nearest),
    with an optional title at the left of each row."""
    if not rows or not any(rows):
        raise ValueError("contact_sheet needs at least one row with an image")
    S = next(img for row in rows for img in row).shape[0] * scale
    columns = max(len(r) for r in rows)
    margin = LABEL_WIDTH if row_titles else 0
    sheet = np.full((len(rows) * (S + gap) + gap, margin + columns * (S + gap) + gap, 3), background, np.uint8)
    for r, row in enumerate(rows):
        y = gap + r * (S + gap)
        for c, img in enumerate(row):
            x = margin + gap + c * (S + gap)
            sheet[y:y + S, x:x + S] = cv2.resize(img, (S, S), interpolation=cv2.INTER_NEAREST)
        if row_titles:
            cv2.putText(sheet, str(row_titles[r]), (6, y + S // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return sheet


def class_sheet(scenes: Sequence, *, per_class: int = 8, scale: int = 2) -> np.ndarray:
    """A contact sheet of scenes (objects with `image` and `label`), one row per class."""
    rows = [[s.image for s in scenes if s.label == k][:per_class] for k in range(len(CLASS_NAMES))]
    titles = [name for name, row in zip(CLASS_NAMES, rows) if row]
    return contact_sheet([row for row in rows if row], titles, scale=scale)


def save_png(image: np.ndarray, path: str | os.PathLike) -> str:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    from reliable_ad.synthad.dataset import _png
    from reliable_ad.core.io import atomic_write_bytes

    return str(atomic_write_bytes(path, _png(image)))
