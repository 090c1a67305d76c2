"""What the user hands us: product images with optional captions and presets.

Accepted: image files (with an optional sidecar caption `<stem>.txt`), folders of images, and products
files (CSV or JSON Lines with `image`, optional `caption`, `preset`; paths relative to the file).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ProductInput:
    path: str
    caption: str | None = None  # None: no caption given (the caption branch then sees "")
    preset: str | None = None  # None: the run's preset


@dataclass(frozen=True)
class InputProblem:
    source: str
    message: str


def _sidecar_caption(path: Path) -> str | None:
    side = path.with_suffix(".txt")
    if side.is_file():
        return side.read_text(encoding="utf-8").strip()
    return None


def _from_record(rec: dict, base: Path, where: str) -> ProductInput:
    image = rec.get("image") or rec.get("path")
    if not image:
        raise ValueError(f"{where}: no 'image' field; each row needs the product image path")
    p = Path(str(image)).expanduser()
    p = p if p.is_absolute() else base / p
    caption = rec.get("caption")
    caption = None if caption is None or str(caption) == "" else str(caption)
    return ProductInput(str(p), caption if caption is not None else _sidecar_caption(p), rec.get("preset") or None)


def _read_products_file(path: Path) -> tuple[list[ProductInput], list[InputProblem]]:
    items: list[ProductInput] = []
    problems: list[InputProblem] = []
    base = path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                try:
                    items.append(_from_record(row, base, f"{path}:{i}"))
                except ValueError as e:
                    problems.append(InputProblem(f"{path}:{i}", str(e)))
    else:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}:{i}: expected a JSON object per line")
                items.append(_from_record(rec, base, f"{path}:{i}"))
            except (ValueError, json.JSONDecodeError) as e:
                problems.append(InputProblem(f"{path}:{i}", str(e)))
    return items, problems


def read_product_inputs(args: list[str]) -> tuple[list[ProductInput], list[InputProblem]]:
    """Expand the command-line arguments into product inputs; bad entries become problems."""
    items: list[ProductInput] = []
    problems: list[InputProblem] = []
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append(ProductInput(str(f), _sidecar_caption(f)))
        elif p.suffix.lower() in (".csv", ".jsonl") and p.is_file():
            more, bad = _read_products_file(p)
            items += more
            problems += bad
        else:
            # missing or unreadable images are reported per product by the loader, with the fix
            items.append(ProductInput(str(p), _sidecar_caption(p) if p.is_file() else None))
    return items, problems
