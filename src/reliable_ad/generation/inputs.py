"""What the user hands us: product images with optional captions and presets.

Accepted: image files (with an optional sidecar caption `<stem>.txt`), folders of images, and products
files (CSV or JSON Lines with `image`, optional `caption`, `preset`; paths relative to the file).
Whatever cannot be used is an `InputProblem` naming where it is and what to do; nothing is skipped
silently (only hidden files, such as .DS_Store, in a folder).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CAPTION_SUFFIX = ".txt"
PRODUCTS_FILE_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class ProductInput:
    path: str
    caption: str | None = None  # None: no caption given (the caption branch then sees "")
    preset: str | None = None  # None: the run's preset


@dataclass(frozen=True)
class InputProblem:
    """An input that gives no product: `source` says where ("products.csv:3", a file in a folder),
    `message` what is wrong and the fix (without repeating `source`)."""

    source: str
    message: str


def _sidecar_caption(path: Path) -> str | None:
    side = path.with_suffix(CAPTION_SUFFIX)
    if side.is_file():
        return side.read_text(encoding="utf-8").strip()
    return None


class _PresetCheck:
    """`check_preset` with each name checked once; None accepts every name."""

    def __init__(self, check: Callable[[str], object] | None):
        self.check, self.seen = check, {}

    def __call__(self, name: str) -> str | None:
        """The problem with preset `name`, or None when it exists."""
        if self.check is None:
            return None
        if name not in self.seen:
            try:
                self.check(name)
                self.seen[name] = None
            except ValueError as e:
                self.seen[name] = str(e)
        return self.seen[name]


def _from_record(rec: dict, base: Path, check_preset: _PresetCheck) -> ProductInput:
    """A products-file row as an input; ValueError (problem and fix, no location) for a bad row."""
    image = rec.get("image") or rec.get("path")
    if not image:
        raise ValueError("no 'image' given; each row needs the product image path (relative to the products file)")
    p = Path(str(image)).expanduser()
    p = p if p.is_absolute() else base / p
    caption = rec.get("caption")
    caption = None if caption is None or str(caption) == "" else str(caption)
    preset = rec.get("preset") or None
    if preset is not None:
        preset = str(preset)
        problem = check_preset(preset)
        if problem:
            raise ValueError(f"{problem}; fix the row's preset, or leave it empty to use the run's")
    return ProductInput(str(p), caption if caption is not None else _sidecar_caption(p), preset)


def _read_products_file(path: Path, check_preset: _PresetCheck) -> tuple[list[ProductInput], list[InputProblem]]:
    items: list[ProductInput] = []
    problems: list[InputProblem] = []
    base = path.parent
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                try:
                    items.append(_from_record(row, base, check_preset))
                except ValueError as e:
                    problems.append(InputProblem(f"{path}:{i}", str(e)))
    else:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"not valid JSON ({e}); write one JSON object per line, "
                                     'e.g. {"image": "shoe.png", "caption": "a red shoe"}') from None
                if not isinstance(rec, dict):
                    raise ValueError('expected a JSON object per line, e.g. {"image": "shoe.png"}; '
                                     f"got {type(rec).__name__}")
                items.append(_from_record(rec, base, check_preset))
            except ValueError as e:
                problems.append(InputProblem(f"{path}:{i}", str(e)))
    return items, problems


def _read_folder(folder: Path) -> tuple[list[ProductInput], list[InputProblem]]:
    """The images of a folder (not its sub-folders) with their captions; anything else is a problem."""
    items: list[ProductInput] = []
    problems: list[InputProblem] = []
    entries = sorted(f for f in folder.iterdir() if not f.name.startswith("."))
    image_stems = {f.stem for f in entries if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES}
    supported = ", ".join(IMAGE_SUFFIXES)
    for f in entries:
        suffix = f.suffix.lower()
        if f.is_dir():
            problems.append(InputProblem(str(f), "a folder inside a products folder is not searched; "
                                         "pass it as an argument of its own to use its images"))
        elif suffix in IMAGE_SUFFIXES:
            items.append(ProductInput(str(f), _sidecar_caption(f)))
        elif suffix == CAPTION_SUFFIX:
            if f.stem not in image_stems:
                problems.append(InputProblem(str(f), f"a caption file without an image: no {f.stem}.png (or another "
                                             f"image type: {supported}) beside it; name it after its image, "
                                             "or move it out of the folder"))
        elif suffix in PRODUCTS_FILE_SUFFIXES:
            problems.append(InputProblem(str(f), "a products file inside a products folder is not read; "
                                         "pass it as an argument of its own"))
        else:
            problems.append(InputProblem(str(f), f"unsupported file type {suffix or '(no extension)'}; convert it to "
                                         f"PNG (folders are read for {supported} images and their .txt captions)"))
    return items, problems


def read_product_inputs(
    args: list[str], *, check_preset: Callable[[str], object] | None = None
) -> tuple[list[ProductInput], list[InputProblem]]:
    """Expand the command-line arguments into product inputs; bad entries become problems.

    `check_preset(name)` raises ValueError (naming the presets there are) for a preset a products-file
    row names but which does not exist, e.g. ``lambda name: get_preset(name, presets_file)``; that row
    is then a problem, found before any work starts. None: rows' presets are not checked here.
    """
    items: list[ProductInput] = []
    problems: list[InputProblem] = []
    check = _PresetCheck(check_preset)
    for arg in args:
        p = Path(arg).expanduser()
        if p.is_dir():
            more, bad = _read_folder(p)
        elif p.suffix.lower() in PRODUCTS_FILE_SUFFIXES and p.is_file():
            more, bad = _read_products_file(p, check)
        elif p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES:
            supported = ", ".join(IMAGE_SUFFIXES)
            more, bad = [], [InputProblem(str(p), f"unsupported file type {p.suffix.lower() or '(no extension)'}; "
                                               f"convert it to PNG (products are {supported} images, or a "
                                               f"{' / '.join(PRODUCTS_FILE_SUFFIXES)} products file)")]
        else:
            # missing or unreadable images are reported per product by the loader, with the fix
            more, bad = [ProductInput(str(p), _sidecar_caption(p) if p.is_file() else None)], []
        items += more
        problems += bad
    return items, problems
