"""Painting a planned SynthAd scene: wall, support surface, scale references, clutter and injected
extensions, each writing its colour, its true depth (near = 1) and its true salience.

Everything is painted at the scene's own resolution with OpenCV primitives; a 64 px scene takes a
few milliseconds. Colours are float32 until the scene is rounded once to uint8.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from reliable_ad.synthad.layout import MUG_HANDLE, Box, Layout, RefPlacement, support_slot
from reliable_ad.synthad.world import (APRON_SHADE, CLUTTER_COLORS, CONTACT_SHADOW, GOLD, REFERENCES, RGB, SURFACES,
                                       UNDER_TABLE, color_distance)

WALL_DEPTH = 0.1
REF_SALIENCE = 0.35
CLUTTER_SALIENCE = 0.5


class Canvas:
    """The scene being painted: `image` (S, S, 3) float32 0..255, `depth` and `salience` (S, S) in [0, 1]."""

    def __init__(self, size: int):
        self.size = size
        self.image = np.zeros((size, size, 3), np.float32)
        self.depth = np.zeros((size, size), np.float32)
        self.salience = np.zeros((size, size), np.float32)

    def put(self, mask: np.ndarray, colour, depth: float, salience: float = 0.0) -> None:
        self.image[mask] = colour if np.ndim(colour) == 1 else colour[mask]
        self.depth[mask] = depth
        self.salience[mask] = salience

    def new_mask(self) -> np.ndarray:
        return np.zeros((self.size, self.size), np.uint8)


def support_depth(layout: Layout, row):
    """True depth (near = 1) of the support surface at a row (or an array of rows): farther up the
    image is farther away."""
    S = layout.size
    if layout.support == "table":
        t = (np.asarray(row, np.float32) - layout.support_y) / max(1, layout.front_y - layout.support_y)
        out = np.clip(0.35 + 0.25 * t, 0.35, 0.6)
    else:
        t = (np.asarray(row, np.float32) - layout.support_y) / max(1, S - layout.support_y)
        out = np.clip(0.3 + 0.7 * t, 0.3, 1.0)
    return float(out) if np.ndim(out) == 0 else out


# ----------------------------------------------------------------------------------------------
# Wall and support
# ----------------------------------------------------------------------------------------------


def _texture(material: str, rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, size, 3) float32 of a surface material; variation is mostly along rows, so a row's
    median stays the material's colour."""
    base = np.asarray(SURFACES[material], np.float32)
    r = np.arange(rows, dtype=np.float32)
    if material == "wooden":
        period = rng.uniform(2.5, 5.0) * size / 64
        row_factor = 1 + 0.045 * np.sin(2 * np.pi * r / period + rng.uniform(0, 6.3)) + rng.normal(0, 0.015, rows)
        out = base * row_factor[:, None, None] + rng.normal(0, 2.0, (rows, size, 1))
    elif material == "concrete":
        low = cv2.resize(rng.normal(0, 4.0, (max(2, rows // 4), max(2, size // 4))).astype(np.float32),
                         (size, rows), interpolation=cv2.INTER_LINEAR)
        out = base + low[..., None] + rng.normal(0, 3.5, (rows, size, 1))
    elif material == "slate":
        row_factor = np.where(rng.random(rows) < 0.2, 0.96, 1.0)
        out = base * row_factor[:, None, None] + rng.normal(0, 2.5, (rows, size, 1))
    else:  # terrazzo: speckles
        out = base + rng.normal(0, 2.0, (rows, size, 1))
        speck = rng.random((rows, size)) < 0.04
        out = out + (speck * rng.uniform(-25, 25, (rows, size)))[..., None]
    return np.broadcast_to(out, (rows, size, 3)).astype(np.float32)


def paint_background(canvas: Canvas, layout: Layout, wall: RGB, material: str, rng: np.random.Generator) -> None:
    S, ys = layout.size, layout.support_y
    rows = np.arange(ys, dtype=np.float32)
    wall_rows = np.asarray(wall, np.float32) * (0.975 + 0.035 * rows / max(1, ys))[:, None]
    canvas.image[:ys] = wall_rows[:, None, :] + rng.normal(0, 1.0, (ys, S, 1)).astype(np.float32)
    canvas.depth[:ys] = WALL_DEPTH
    end = layout.front_y if layout.support == "table" else S
    top = _texture(material, end - ys, S, rng)
    if layout.support == "floor":  # lighter towards the viewer
        top = top * np.linspace(0.95, 1.04, end - ys, dtype=np.float32)[:, None, None]
    canvas.image[ys:end] = top
    canvas.depth[ys:end] = support_depth(layout, np.arange(ys, end))[:, None]
    if layout.support == "table":
        apron = np.asarray(SURFACES[material], np.float32) * APRON_SHADE
        a0, a1 = layout.front_y, min(S, layout.apron_end)
        canvas.image[a0:a1] = apron + rng.normal(0, 1.5, (a1 - a0, S, 1)).astype(np.float32)
        canvas.depth[a0:a1] = 0.62
        if a1 < S:
            under = np.asarray(UNDER_TABLE, np.float32) * np.linspace(0.95, 1.05, S - a1, dtype=np.float32)[:, None]
            canvas.image[a1:] = under[:, None, :] + rng.normal(0, 1.5, (S - a1, S, 1)).astype(np.float32)
            canvas.depth[a1:] = np.linspace(0.5, 0.8, S - a1, dtype=np.float32)[:, None]


def paint_contact_shadow(canvas: Canvas, layout: Layout, x0: int, x1: int, row: int) -> None:
    """Darken the support just around where an object stands (never the wall)."""
    S = layout.size
    m = canvas.new_mask()
    cx, half = (x0 + x1) // 2, max(1, (x1 - x0) // 2 + max(1, S // 64))
    cv2.ellipse(m, (cx, row), (half, max(1, S // 48)), 0, 0, 360, 1, -1)
    m[: layout.support_y] = 0
    if layout.front_y is not None:
        m[layout.front_y:] = 0
    canvas.image[m.astype(bool)] *= CONTACT_SHADOW


# ----------------------------------------------------------------------------------------------
# Scale references
# ----------------------------------------------------------------------------------------------


def _clip_box(m: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros_like(m, dtype=bool)
    out[y0:y1, x0:x1] = m[y0:y1, x0:x1].astype(bool)
    return out


def paint_reference(canvas: Canvas, layout: Layout, ref: RefPlacement) -> np.ndarray:
    """Paint one reference in its reserved colour; returns its mask."""
    key = np.asarray(REFERENCES[ref.name].key, np.float32)
    x0, y0, x1, y1 = ref.box
    w, h = x1 - x0, y1 - y0
    depth = support_depth(layout, y1 - 1) + 0.01
    m = canvas.new_mask()
    detail = canvas.new_mask()
    if ref.name in ("door", "cabinet"):
        m[y0:y1, x0:x1] = 1
        if ref.name == "door":
            t = max(1, round(w * 0.12))
            cv2.rectangle(detail, (x0 + t, y0 + t), (x1 - 1 - t, y0 + h // 2 - t), 1, 1)
            cv2.rectangle(detail, (x0 + t, y0 + h // 2 + t), (x1 - 1 - t, y1 - 1 - t), 1, 1)
        else:
            detail[y0 + h // 2, x0 + 1: x1 - 1] = 1
    elif ref.name == "mug":
        body_w = max(2, round(w / MUG_HANDLE))
        m[y0:y1, x0:x0 + body_w] = 1
        thick = max(1, round(body_w * 0.15))
        cv2.ellipse(m, (x0 + body_w - 1, y0 + h // 2), (max(1, w - body_w - thick // 2), max(1, h // 4)),
                    0, 270, 450, 1, thick)
    else:  # vase
        cv2.ellipse(m, (x0 + w // 2, y0 + round(0.64 * h)), (max(1, w // 2), max(1, round(0.36 * h))), 0, 0, 360, 1, -1)
        neck = max(1, round(0.18 * w))
        m[y0 + 1: y0 + round(0.45 * h), x0 + w // 2 - neck: x0 + w // 2 + neck + 1] = 1
        m[y0: y0 + max(1, h // 10), x0 + w // 2 - neck - 1: x0 + w // 2 + neck + 2] = 1
        m[y1 - 1, x0 + w // 4: x1 - w // 4] = 1  # a flat foot, so the vase stands on its bottom row
    mask = _clip_box(m, ref.box)
    canvas.put(mask, key, depth, REF_SALIENCE)
    canvas.image[_clip_box(detail, ref.box) & mask] = key * 0.85
    if ref.name == "door":
        r = max(1, round(w * 0.06))
        knob = canvas.new_mask()
        cv2.circle(knob, (x0 + round(0.8 * w), y0 + round(0.52 * h)), r, 1, -1)
        canvas.image[knob.astype(bool) & mask] = GOLD
    elif ref.name == "cabinet":
        for hx in (x0 + w // 2 - max(1, w // 8), x0 + w // 2 + max(1, w // 8)):
            canvas.image[y0 + h // 2 + 2: y0 + h // 2 + 2 + max(1, h // 10), hx] = (50, 50, 50)
    return mask


# ----------------------------------------------------------------------------------------------
# Clutter
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def clutter_palette(product: RGB, wall: RGB, material: str) -> tuple[RGB, ...]:
    """Clutter colours this scene may use: far from its product, wall, surface and every reference."""
    keys = [r.key for r in REFERENCES.values()]
    return tuple(c for c in CLUTTER_COLORS
                 if color_distance(c, product) > 100 and color_distance(c, wall) > 50
                 and color_distance(c, SURFACES[material]) > 45 and min(color_distance(c, k) for k in keys) > 60)


@dataclass
class _Item:
    """A clutter item: coloured parts (later ones on top) standing at one depth."""

    parts: list[tuple[np.ndarray, np.ndarray]]  # (bool mask, RGB colour)
    depth: float

    @property
    def mask(self) -> np.ndarray:
        out = self.parts[0][0].copy()
        for m, _ in self.parts[1:]:
            out |= m
        return out

    def paint(self, canvas: Canvas, keep: np.ndarray, salience: float) -> None:
        for m, colour in self.parts:
            canvas.put(m & keep, colour, self.depth, salience)


def _clutter_item(layout: Layout, rng: np.random.Generator, colours: tuple[RGB, ...], region: Box) -> _Item:
    """A random item (a frame on the wall; books, a ball, a plant or a box on the support) with its
    centre inside `region`."""
    S = layout.size
    x0, y0, x1, y1 = region

    def colour() -> np.ndarray:
        return np.asarray(colours[int(rng.integers(len(colours)))], np.float32)

    def shape(draw) -> np.ndarray:
        m = np.zeros((S, S), np.uint8)
        draw(m)
        return m.astype(bool)

    lo, hi = _support_slot(layout)
    on_wall = rng.random() < 0.4 and y0 < layout.support_y - 0.1 * S
    w = int(rng.integers(max(2, round(0.05 * S)), max(3, round(0.16 * S)) + 1))
    h = int(rng.integers(max(2, round(0.05 * S)), max(3, round(0.18 * S)) + 1))
    cx = int(rng.integers(x0, max(x0 + 1, x1)))
    if on_wall:  # a picture frame
        cy = int(rng.integers(y0, max(y0 + 1, min(y1, layout.support_y - h // 2 - 2))))
        b = max(1, round(S / 64))
        outer = shape(lambda m: cv2.rectangle(m, (cx - w // 2, cy - h // 2), (cx + w // 2, cy + h // 2), 1, -1))
        inner = shape(lambda m: cv2.rectangle(m, (cx - w // 2 + b, cy - h // 2 + b), (cx + w // 2 - b, cy + h // 2 - b),
                                              1, -1)) & outer
        return _Item([(outer, colour()), (inner, colour())], WALL_DEPTH + 0.02)
    bottom = int(rng.integers(lo, hi + 1))
    kind = int(rng.integers(4))
    parts = []
    if kind == 0:  # a stack of books
        yb = bottom
        for _ in range(int(rng.integers(1, 4))):
            bh = max(1, round(rng.uniform(0.02, 0.04) * S))
            bw = max(2, round(w * rng.uniform(0.7, 1.0)))
            parts.append((shape(lambda m: cv2.rectangle(m, (cx - bw // 2, yb - bh + 1), (cx + bw // 2, yb), 1, -1)),
                          colour()))
            yb -= bh
    elif kind == 1:  # a ball
        r = max(1, min(w, h) // 2)
        parts.append((shape(lambda m: cv2.circle(m, (cx, bottom - r), r, 1, -1)), colour()))
    elif kind == 2:  # a plant in a pot
        pw = max(2, w // 2)
        pot = shape(lambda m: cv2.rectangle(m, (cx - pw // 2, bottom - h // 3), (cx + pw // 2, bottom), 1, -1))
        leaves = shape(lambda m: cv2.ellipse(m, (cx, bottom - 2 * (h // 3)), (max(1, w // 2), max(1, h // 3)), 0, 0,
                                             360, 1, -1))
        parts += [(pot, colour()), (leaves, colour())]
    else:  # a box
        parts.append((shape(lambda m: cv2.rectangle(m, (cx - w // 2, bottom - h + 1), (cx + w // 2, bottom), 1, -1)),
                      colour()))
    return _Item(parts, support_depth(layout, bottom) + 0.01)


def _support_slot(layout: Layout) -> tuple[int, int]:
    return support_slot(layout.support, layout.support_y, layout.front_y, layout.size)


ROW_COVER = 0.6  # clutter never makes objects cover more of any row than this: the wall and the
# support stay visible beside them, as the oracle needs to find the support line
HEAVY_ROW_COVER = 0.85  # heavy clutter stays inside the product's window, so more may be covered


def _fits_rows(m: np.ndarray, occupied: np.ndarray, limit: float = ROW_COVER) -> bool:
    rows = m.any(axis=1)
    return bool(((m | occupied)[rows].sum(axis=1) <= limit * m.shape[1]).all())


def paint_calm_clutter(canvas: Canvas, layout: Layout, count: int, colours: tuple[RGB, ...], keep_clear: np.ndarray,
                       occupied: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` items that stay off `keep_clear` (the product's surroundings, the references)."""
    S = layout.size
    placed = np.zeros((S, S), bool)
    occupied = occupied.copy()
    if not colours:
        return placed
    everywhere = np.ones((S, S), bool)
    for _ in range(count):
        for _try in range(25):
            item = _clutter_item(layout, rng, colours, (0, 0, S, S))
            m = item.mask
            if not (m & keep_clear).any() and not (m & placed).any() and _fits_rows(m, occupied):
                item.paint(canvas, everywhere, CLUTTER_SALIENCE * 0.6)
                placed |= cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                occupied |= m
                break
    return placed


def paint_heavy_clutter(canvas: Canvas, layout: Layout, window: Box, colours: tuple[RGB, ...], occupied: np.ndarray,
                        avoid: np.ndarray, rng: np.random.Generator, coverage: float = 0.6) -> float:
    """Items crowding the product's window (clipped to it) until they cover `coverage` of it outside
    the `occupied` product; returns the coverage reached."""
    x0, y0, x1, y1 = window
    area = np.zeros_like(occupied)
    area[y0:y1, x0:x1] = True
    inside = area.copy()
    area &= ~occupied
    occupied = occupied | avoid
    covered = np.zeros_like(occupied)
    reached = 0.0
    allowed = inside & ~avoid
    for _ in range(120):
        item = _clutter_item(layout, rng, colours, window)
        m = item.mask & allowed
        if not m.any() or not _fits_rows(m, occupied | covered, HEAVY_ROW_COVER):
            continue
        item.paint(canvas, allowed, CLUTTER_SALIENCE)
        covered |= m
        reached = float((covered & area).sum() / max(1, area.sum()))
        if reached >= coverage:
            break
    return reached


# ----------------------------------------------------------------------------------------------
# Shape Hallucination
# ----------------------------------------------------------------------------------------------


def paint_extension(canvas: Canvas, mask: np.ndarray, body: RGB, depth: float, salience: float) -> None:
    """Paint a hallucinated part in the product's body colour with the product's own shading range."""
    cols = np.flatnonzero(mask.any(axis=0))
    x = np.arange(canvas.size, dtype=np.float32)
    t = np.clip((x - cols[0]) / max(1, cols[-1] - cols[0] + 1), 0, 1)
    s = 0.86 + 0.2 * np.exp(-(((t - 0.38) / 0.42) ** 2))
    img = np.asarray(body, np.float32)[None, None, :] * s[None, :, None]
    canvas.put(mask, np.broadcast_to(img, (canvas.size, canvas.size, 3)), depth, salience)
