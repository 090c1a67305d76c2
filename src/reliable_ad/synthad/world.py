"""SynthAd's world: the colours, materials, size classes and scale references that scenes are built
from. The renderer and the oracle share them, as a human reviewer shares the world's conventions
with a designer (a door is about 2 m tall; a lipstick is a few centimetres).

Palettes are chosen so that the roles never collide: walls are light pastels, support surfaces are
mid-tone, products are saturated or dark, and the four scale references wear reserved colours that
nothing else uses. `tests/test_synthad.py` checks the separations the oracle relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

SIZE_CLASSES: tuple[str, ...] = ("small", "medium", "large")

# Plausible real heights (m) per size class, used when a caption names no known category.
SIZE_CLASS_HEIGHTS_M: dict[str, tuple[float, float]] = {
    "small": (0.05, 0.35),
    "medium": (0.15, 0.65),
    "large": (0.50, 2.00),
}

# The wall colours of the authors' preset (docs/method.md §2), as RGB.
WALL_COLORS: dict[str, RGB] = {
    "light pea green": (200, 222, 168),
    "light yellow": (250, 240, 175),
    "light pink": (245, 204, 212),
    "light sky blue": (184, 218, 242),
    "cream": (245, 238, 214),
    "silver": (196, 198, 204),
    "beige": (226, 212, 180),
}

# Support surface materials (mid-tone, so the wall/support line is always visible).
SURFACES: dict[str, RGB] = {
    "wooden": (168, 122, 78),
    "concrete": (140, 140, 136),
    "slate": (86, 92, 104),
    "terrazzo": (176, 160, 140),
}

SUPPORTS: tuple[str, ...] = ("table", "floor")
SUPPORT_OF_SIZE_CLASS: dict[str, str] = {"small": "table", "medium": "table", "large": "floor"}
APRON_SHADE = 0.68  # the table's front edge is the surface colour times this
UNDER_TABLE: RGB = (122, 114, 104)  # the floor seen below a table's front edge
CONTACT_SHADOW = 0.85  # a supported object darkens the surface under it by this factor


@dataclass(frozen=True)
class Reference:
    """A scale reference: an object of known real height that stands on the support."""

    name: str
    height_m: float
    width_ratio: float  # width / height
    key: RGB  # its reserved colour
    support: str  # "table" or "floor"


REFERENCES: dict[str, Reference] = {
    "door": Reference("door", 2.00, 0.45, (0, 110, 110), "floor"),
    "cabinet": Reference("cabinet", 0.90, 0.6, (128, 128, 0), "floor"),
    "mug": Reference("mug", 0.10, 0.7, (170, 130, 230), "table"),
    "vase": Reference("vase", 0.30, 0.50, (60, 200, 190), "table"),
}

# Colours for clutter (books, frames, plants, balls); a scene keeps only those far from its product,
# its wall, its surface and the reference keys.
CLUTTER_COLORS: tuple[RGB, ...] = (
    (150, 118, 98), (100, 112, 134), (112, 132, 88), (204, 150, 150), (236, 228, 206), (72, 72, 72),
    (172, 92, 60), (204, 164, 64), (120, 172, 212), (160, 100, 130), (90, 150, 120), (220, 120, 90),
    (60, 60, 110), (230, 200, 120), (130, 80, 60), (180, 180, 120),
)

GOLD: RGB = (212, 175, 55)


def color_distance(a, b) -> np.ndarray | float:
    """Euclidean RGB distance between colours or arrays of colours (last axis = 3)."""
    d = np.asarray(a, np.float32) - np.asarray(b, np.float32)
    out = np.sqrt(np.sum(d * d, axis=-1))
    return float(out) if np.ndim(out) == 0 else out


def shade(color: RGB, factor: float) -> RGB:
    """`color` times `factor`, clipped to 0..255."""
    return tuple(int(np.clip(round(c * factor), 0, 255)) for c in color)  # type: ignore[return-value]


def nearest_wall_color(rgb) -> str:
    """Name of the wall colour closest to an RGB triple (for prompt adherence of generated images)."""
    return min(WALL_COLORS, key=lambda name: color_distance(WALL_COLORS[name], rgb))
