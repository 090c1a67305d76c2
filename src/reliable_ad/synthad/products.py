"""SynthAd products: procedural RGBA cut-outs of ten product categories, each with a size class, a
real-world height range, a body colour and simple shading, and a caption ("a large red suitcase").

A product is drawn in unit coordinates (height 1) at 2x supersampling and reduced with area
averaging, so its edges carry soft alpha like a real cut-out. Everything follows from the seed.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import cv2
import numpy as np

from reliable_ad.synthad.world import GOLD, RGB, SIZE_CLASSES, color_distance

# Body colours: saturated or dark, far from every wall, surface and reference colour (see world.py).
PRODUCT_COLORS: dict[str, RGB] = {
    "red": (200, 35, 45),
    "orange": (235, 120, 25),
    "yellow": (230, 190, 20),
    "green": (35, 140, 70),
    "blue": (35, 75, 190),
    "purple": (120, 50, 150),
    "pink": (225, 70, 140),
    "black": (35, 35, 40),
}
ACCENTS: dict[str, RGB] = {"black": (40, 40, 44), "white": (236, 234, 228), "gold": GOLD, "silver": (192, 192, 198)}
LABEL_WHITE: RGB = (236, 232, 220)
SHADE_RANGE = (0.82, 1.12)  # body shading factors; the oracle's product-colour test covers this span


def make_rng(seed: int | np.random.Generator) -> np.random.Generator:
    """A numpy Generator from an int seed (or the Generator itself)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy Generator, got {seed!r} ({type(seed).__name__})")
    return np.random.default_rng(int(seed))


# ----------------------------------------------------------------------------------------------
# Painter: unit-coordinate shapes at supersampling
# ----------------------------------------------------------------------------------------------


class _Painter:
    """Draws in unit coordinates: y in [0, 1] top to bottom, x in [0, aspect]; one unit = the height."""

    def __init__(self, aspect: float, height_px: int, ss: int = 2):
        self.aspect = aspect
        self.height_px = height_px
        self.width_px = max(2, round(aspect * height_px))
        self.k = height_px * ss  # supersampled px per unit
        self.shape = (height_px * ss, self.width_px * ss)
        self.rgb = np.zeros(self.shape + (3,), np.float32)
        self.cover = np.zeros(self.shape, np.float32)

    def _pts(self, pts) -> np.ndarray:
        return np.round(np.asarray(pts, np.float64) * self.k).astype(np.int32)

    def poly(self, pts) -> np.ndarray:
        m = np.zeros(self.shape, np.uint8)
        cv2.fillPoly(m, [self._pts(pts)], 1)
        return m.astype(bool)

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        m = np.zeros(self.shape, np.uint8)
        centre = tuple(int(v) for v in self._pts((cx, cy)))
        axes = (max(1, round(rx * self.k)), max(1, round(ry * self.k)))
        cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1)
        return m.astype(bool)

    def rrect(self, x0, y0, x1, y1, r) -> np.ndarray:
        m = self.rect(x0 + r, y0, x1 - r, y1) | self.rect(x0, y0 + r, x1, y1 - r)
        for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
            m |= self.ellipse(cx, cy, r, r)
        return m

    def arc(self, cx, cy, rx, ry, start, end, width) -> np.ndarray:
        m = np.zeros(self.shape, np.uint8)
        centre = tuple(int(v) for v in self._pts((cx, cy)))
        axes = (max(1, round(rx * self.k)), max(1, round(ry * self.k)))
        cv2.ellipse(m, centre, axes, 0, start, end, 1, max(1, round(width * self.k)))
        return m.astype(bool)

    def paint(self, mask: np.ndarray, color: RGB, shading: str = "cylinder", factor: float = 1.0,
              span: tuple[float, float] | None = None) -> None:
        """Fill `mask` with `color` times `factor` and a shading profile across the part."""
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        if w == 0 or h == 0:
            return
        sub = mask[y:y + h, x:x + w]
        colour = np.asarray(color, np.float32) * factor
        if shading == "flat":
            value = colour * 0.97
        else:
            axis = 1 if shading == "cylinder" else 0
            start, n = (x, w) if axis == 1 else (y, h)
            a, b = (span[0] * self.k, span[1] * self.k) if span else (start, start + n)
            t = np.clip((np.arange(start, start + n, dtype=np.float32) - a) / max(1.0, b - a), 0.0, 1.0)
            lo, hi = SHADE_RANGE
            profile = lo + (hi - lo) * np.exp(-(((t - 0.38) / 0.42) ** 2))
            value = colour * (profile[None, :, None] if axis == 1 else profile[:, None, None])
        np.copyto(self.rgb[y:y + h, x:x + w], np.clip(value, 0, 255), where=sub[..., None])
        self.cover[y:y + h, x:x + w][sub] = 1.0

    def rgba(self) -> np.ndarray:
        """(height_px, width_px, 4) uint8, area-averaged from the supersampled drawing."""
        size = (self.width_px, self.height_px)
        a = cv2.resize(self.cover, size, interpolation=cv2.INTER_AREA)
        pre = cv2.resize(self.rgb * self.cover[..., None], size, interpolation=cv2.INTER_AREA)
        colour = np.where(a[..., None] > 0, pre / np.maximum(a, 1e-6)[..., None], 0.0)
        out = np.zeros((self.height_px, self.width_px, 4), np.uint8)
        out[..., :3] = np.clip(np.rint(colour), 0, 255)
        out[..., 3] = np.clip(np.rint(a * 255.0), 0, 255)
        out[out[..., 3] == 0, :3] = 0
        return out


def _accent(body: RGB, rng: np.random.Generator, choices=("black", "white", "gold", "silver")) -> RGB:
    usable = [ACCENTS[c] for c in choices if color_distance(ACCENTS[c], body) > 90]
    return usable[int(rng.integers(len(usable)))]


def _blend(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Categories
# ----------------------------------------------------------------------------------------------


def _lipstick(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0.04 * A, 0.50, 0.96 * A, 1.0), c)
    p.paint(p.rect(0.04 * A, 0.45, 0.96 * A, 0.52), GOLD)
    p.paint(p.poly([(0.2 * A, 0.47), (0.8 * A, 0.47), (0.8 * A, 0.13), (0.2 * A, 0.02)]), c, factor=1.04)


def _can(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0, 0.05, A, 0.95), c)
    p.paint(p.rect(0, 0.38, A, 0.58), _blend(c, LABEL_WHITE, 0.55), span=(0, A))
    p.paint(p.ellipse(A / 2, 0.95, A / 2, 0.05), ACCENTS["silver"], span=(0, A))
    p.paint(p.ellipse(A / 2, 0.05, A / 2, 0.05), ACCENTS["silver"], span=(0, A))


def _bottle(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rrect(0, 0.34, A, 1.0, 0.06) | p.poly([(0, 0.37), (A, 0.37), (0.68 * A, 0.2), (0.32 * A, 0.2)])
            | p.rect(0.32 * A, 0.1, 0.68 * A, 0.22), c, span=(0, A))
    p.paint(p.rect(0.27 * A, 0.0, 0.73 * A, 0.11), _accent(c, rng), span=(0.27 * A, 0.73 * A))
    p.paint(p.rect(0, 0.54, A, 0.76), LABEL_WHITE, span=(0, A))


def _box(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A, d = p.aspect, 0.18
    p.paint(p.rect(0, d, A - d, 1.0), c, "flat")
    p.paint(p.poly([(0, d), (A - d, d), (A, 0), (d, 0)]), c, "flat", factor=1.15)
    p.paint(p.poly([(A - d, d), (A, 0), (A, 1 - d), (A - d, 1.0)]), c, "flat", factor=0.78)
    if rng.random() < 0.6:
        ribbon = _accent(c, rng, ("gold", "white", "silver"))
        x = (A - d) / 2
        p.paint(p.rect(x - 0.04, d, x + 0.04, 1.0), ribbon, "flat")
        p.paint(p.poly([(x - 0.04 + d / 2 + 0.02, d / 2 - 0.01), (x + 0.04 + d / 2 + 0.02, d / 2 - 0.01),
                        (x + 0.04, d), (x - 0.04, d)]), ribbon, "flat", factor=1.1)


def _speaker(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rrect(0, 0, A, 1.0, 0.08), c)
    p.paint(p.ellipse(A / 2, 0.66, 0.36 * A, 0.36 * A), (55, 55, 60), "flat")
    p.paint(p.ellipse(A / 2, 0.66, 0.25 * A, 0.25 * A), (88, 88, 94), "cylinder")
    p.paint(p.ellipse(A / 2, 0.66, 0.08 * A, 0.08 * A), (40, 40, 44), "flat")
    p.paint(p.ellipse(A / 2, 0.23, 0.12 * A, 0.12 * A), (55, 55, 60), "flat")


def _lamp(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0.45 * A, 0.44, 0.55 * A, 0.92), c, "flat", factor=0.8)
    p.paint(p.ellipse(A / 2, 0.93, 0.3 * A, 0.07), c, factor=0.85)
    p.paint(p.poly([(0.2 * A, 0.0), (0.8 * A, 0.0), (A, 0.46), (0, 0.46)]), c, span=(0, A))


def _handbag(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.arc(A / 2, 0.38, 0.28 * A, 0.32, 180, 360, 0.07), c, "flat", factor=0.8)
    p.paint(p.poly([(0.12 * A, 0.34), (0.88 * A, 0.34), (A, 1.0), (0, 1.0)]), c, span=(0, A))
    p.paint(p.poly([(0.12 * A, 0.34), (0.88 * A, 0.34), (0.84 * A, 0.6), (0.16 * A, 0.6)]), c, factor=0.9,
            span=(0, A))
    p.paint(p.rect(0.45 * A, 0.55, 0.55 * A, 0.65), GOLD, "flat")


def _chair(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0.18 * A, 0.6, 0.27 * A, 0.93) | p.rect(0.73 * A, 0.6, 0.82 * A, 0.93), c, "flat", factor=0.7)
    p.paint(p.rrect(0.08 * A, 0.0, 0.92 * A, 0.52, 0.05), c, span=(0, A))
    p.paint(p.rect(0, 0.5, A, 0.61), c, "vertical", factor=1.05)
    p.paint(p.rect(0, 0.6, 0.11 * A, 1.0) | p.rect(0.89 * A, 0.6, A, 1.0), c, "flat", factor=0.82)


def _suitcase(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0.3 * A, 0.02, 0.37 * A, 0.15) | p.rect(0.63 * A, 0.02, 0.7 * A, 0.15), ACCENTS["silver"], "flat")
    p.paint(p.rect(0.27 * A, 0.0, 0.73 * A, 0.045), (50, 50, 54), "flat")
    p.paint(p.ellipse(0.17 * A, 0.96, 0.04, 0.04) | p.ellipse(0.83 * A, 0.96, 0.04, 0.04), (40, 40, 44), "flat")
    p.paint(p.rrect(0, 0.13, A, 0.95, 0.06), c, span=(0, A))
    for x in (0.25, 0.5, 0.75):
        p.paint(p.rect(x * A - 0.014, 0.19, x * A + 0.014, 0.89), c, "flat", factor=0.74)


def _guitar(p: _Painter, c: RGB, rng: np.random.Generator) -> None:
    A = p.aspect
    p.paint(p.rect(0.44 * A, 0.07, 0.56 * A, 0.6), (110, 72, 42), "flat")
    p.paint(p.rect(0.39 * A, 0.0, 0.61 * A, 0.09), (70, 50, 35), "flat")
    p.paint(p.ellipse(A / 2, 0.78, 0.5 * A, 0.22) | p.ellipse(A / 2, 0.5, 0.38 * A, 0.17), c, span=(0, A))
    p.paint(p.ellipse(A / 2, 0.6, 0.11 * A, 0.11 * A), (30, 24, 20), "flat")
    p.paint(p.rect(0.36 * A, 0.8, 0.64 * A, 0.84), (70, 50, 35), "flat")


@dataclass(frozen=True)
class Category:
    """A product category: its caption noun, size class, real height range (m) and aspect (w / h)."""

    name: str
    size_class: str
    height_m: tuple[float, float]
    aspect: tuple[float, float]
    draw: Callable[[_Painter, RGB, np.random.Generator], None]

    @property
    def noun(self) -> str:
        return self.name


CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("lipstick", "small", (0.075, 0.10), (0.32, 0.38), _lipstick),
    Category("can", "small", (0.11, 0.17), (0.52, 0.62), _can),
    Category("bottle", "small", (0.18, 0.32), (0.34, 0.40), _bottle),
    Category("box", "medium", (0.15, 0.40), (0.90, 1.35), _box),
    Category("speaker", "medium", (0.20, 0.45), (0.58, 0.70), _speaker),
    Category("lamp", "medium", (0.35, 0.60), (0.55, 0.70), _lamp),
    Category("handbag", "medium", (0.22, 0.40), (1.00, 1.25), _handbag),
    Category("chair", "large", (0.80, 1.05), (0.50, 0.60), _chair),
    Category("suitcase", "large", (0.55, 0.80), (0.60, 0.72), _suitcase),
    Category("guitar", "large", (0.95, 1.05), (0.36, 0.42), _guitar),
)}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
COLOR_NAMES: tuple[str, ...] = tuple(PRODUCT_COLORS)


# ----------------------------------------------------------------------------------------------
# Products and captions
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SynthProduct:
    """A procedural product: `rgba` (H, W, 4) uint8 cut-out (alpha 255 = product), its caption and
    the facts a scene needs (category, size class, body colour, real height in metres)."""

    rgba: np.ndarray
    caption: str
    category: str
    size_class: str
    color_name: str
    color_rgb: RGB
    height_m: float

    @property
    def rgb(self) -> np.ndarray:
        return self.rgba[..., :3]

    @property
    def alpha(self) -> np.ndarray:
        return self.rgba[..., 3]

    @property
    def source(self) -> str:
        return f"synthad:{self.size_class}-{self.color_name}-{self.category}"

    def to_product(self):
        """The cut-out as a validated `reliable_ad.data.product.Product`."""
        return self._product

    @cached_property
    def _product(self):
        from reliable_ad.data.product import product_from_arrays

        return product_from_arrays(np.ascontiguousarray(self.rgb), np.ascontiguousarray(self.alpha), self.source)


def caption_for(category: str, color: str) -> str:
    """The product caption, e.g. caption_for("suitcase", "red") == "a large red suitcase"."""
    cat = _category(category)
    _color(color)
    return f"a {cat.size_class} {color} {cat.noun}"


def render_product(category: str, color: str, seed: int | np.random.Generator = 0, *,
                   height_px: int = 96) -> np.ndarray:
    """The (height_px, W, 4) uint8 RGBA cut-out of one product of `category` in body colour `color`."""
    if isinstance(height_px, bool) or not isinstance(height_px, int) or height_px < 16:
        raise ValueError(f"height_px={height_px!r} must be an int >= 16; 96 serves scenes up to 128 px")
    cat, rng = _category(category), make_rng(seed)
    painter = _Painter(float(rng.uniform(*cat.aspect)), height_px)
    cat.draw(painter, PRODUCT_COLORS[_color(color)], rng)
    return painter.rgba()


def sample_product(seed: int | np.random.Generator = 0, *, category: str | None = None, color: str | None = None,
                   height_px: int = 96) -> SynthProduct:
    """A random product (category, colour, proportions and real height all from `seed`); pass
    `category` or `color` to fix them."""
    rng = make_rng(seed)
    category = CATEGORY_NAMES[int(rng.integers(len(CATEGORY_NAMES)))] if category is None else category
    color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))] if color is None else color
    cat = _category(category)
    height_m = float(rng.uniform(*cat.height_m))
    rgba = render_product(category, color, rng, height_px=height_px)
    return SynthProduct(rgba, caption_for(category, color), category, cat.size_class, color,
                        PRODUCT_COLORS[color], height_m)


@dataclass(frozen=True)
class CaptionInfo:
    size_class: str | None
    category: str | None
    color: str | None


_WORD = re.compile(r"[a-z]+")


def parse_caption(caption: str) -> CaptionInfo:
    """Size class, category and colour named in a caption (None for what it does not name)."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    words = _WORD.findall(caption.lower())
    size = next((w for w in words if w in SIZE_CLASSES), None)
    category = next((w for w in words if w in CATEGORIES), None)
    if category is None:  # plurals: "lipsticks", "boxes"
        category = next((c for w in words for c in CATEGORIES if w in (c + "s", c + "es")), None)
    color = next((w for w in words if w in PRODUCT_COLORS), None)
    if size is None and category is not None:
        size = CATEGORIES[category].size_class
    return CaptionInfo(size, category, color)


def expected_height_m(caption: str) -> tuple[float, float] | None:
    """Plausible real height range (m) for a caption: its category's range when it names a known
    category, else its size class's range, else None (no size judgement possible)."""
    from reliable_ad.synthad.world import SIZE_CLASS_HEIGHTS_M

    info = parse_caption(caption)
    if info.category is not None:
        return CATEGORIES[info.category].height_m
    return SIZE_CLASS_HEIGHTS_M.get(info.size_class) if info.size_class else None


def product_png_bytes(rgba: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 4) uint8 RGBA cut-out."""
    from PIL import Image

    if not isinstance(rgba, np.ndarray) or rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"rgba must be a (H, W, 4) uint8 array, got {getattr(rgba, 'dtype', type(rgba))} "
                         f"{getattr(rgba, 'shape', '')}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def write_product_png(product: SynthProduct | np.ndarray, path: str | os.PathLike) -> str:
    """Write a product cut-out as an RGBA PNG (atomically); returns the path."""
    from reliable_ad.core.io import atomic_write_bytes

    rgba = product.rgba if isinstance(product, SynthProduct) else product
    return str(atomic_write_bytes(path, product_png_bytes(rgba)))


def _category(name: str) -> Category:
    if name not in CATEGORIES:
        raise ValueError(f"unknown product category {name!r}; choose one of {CATEGORY_NAMES}")
    return CATEGORIES[name]


def _color(name: str) -> str:
    if name not in PRODUCT_COLORS:
        raise ValueError(f"unknown product colour {name!r}; choose one of {COLOR_NAMES}")
    return name
