"""Scene geometry: where the support surface, the product, its scale references and any injected
defect go, before anything is painted. Pure functions on numbers and small arrays.

Every length is planned in pixels of an S x S canvas from fractions of S, so 64 px and 128 px scenes
are the same scene at two resolutions. The product is scaled with `data.product.place_product`,
exactly as the generation pipeline scales it, so the oracle can find its pixels again.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import cv2
import numpy as np

from reliable_ad.data.product import place_product, product_box
from reliable_ad.synthad.products import CATEGORIES, SynthProduct
from reliable_ad.synthad.world import REFERENCES, SUPPORT_OF_SIZE_CLASS, Reference

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), end-exclusive

SIZE_FACTOR = (2.3, 3.5)  # a Size Mismatch shows the product this many times outside its height range
MIN_PRODUCT_PIXELS = 72  # product pixels a scene's product keeps (the pipeline needs >= 64)
MAX_REF_WIDTH = 0.42  # a reference is at most this share of the frame wide
MUG_HANDLE = 1.3  # a mug's width with its handle, per body width
EXTENSION_SHARE = 0.1  # a hallucinated part shows at least this share of the product's area
# Defects must survive the generator's VAE (docs/synthad.md, "Validity gates"): a scale reference is
# at least MIN_REF_PX tall and a hallucinated handle or leg EXTENSION_THICK px thick, at 64 px.
MIN_REF_PX = 12
EXTENSION_THICK = 5


class LayoutError(ValueError):
    """No layout satisfies the request (e.g. an image_scale that leaves no room for the scene)."""


@dataclass(frozen=True)
class RefPlacement:
    name: str
    box: Box  # bounding box in the scene


@dataclass(frozen=True)
class Extension:
    """A hallucinated product-coloured part (Shape Hallucination): primitives in scene pixels."""

    kind: str  # "pedestal", "legs" or "handle"
    rects: tuple[Box, ...] = ()
    arcs: tuple[tuple[int, int, int, int, int, int, int], ...] = ()  # (cx, cy, rx, ry, start, end, thickness)


@dataclass(frozen=True)
class Layout:
    """Where everything goes in an S x S scene.

    `support_y`: first row of the support's top face (the wall is above it). `front_y`: first row of
    a table's front edge (None on a floor); `apron_end`: first row below that edge. `product_box`:
    the product's bounding box (alpha > 0); `contact_y`: the row where the product, or its
    hallucinated extension, stands (for a floating or sinking product: where it should stand).
    `ref_ppm`: pixels per metre of the references; `product_ppm`: pixels per metre the product's
    true height implies (they differ only in a Size Mismatch).
    """

    size: int
    support: str
    support_y: int
    front_y: int | None
    apron_end: int | None
    product_box: Box
    product_offset: tuple[int, int]  # where the scaled cut-out's (0, 0) lies in the scene
    contact_y: int
    ref_ppm: float
    product_ppm: float
    references: tuple[RefPlacement, ...]
    extension: Extension | None = None
    implied_height_m: float = 0.0  # product height the references imply

    def to_dict(self) -> dict:
        return {
            "size": self.size, "support": self.support, "support_y": self.support_y, "front_y": self.front_y,
            "apron_end": self.apron_end, "product_box": list(self.product_box),
            "product_offset": list(self.product_offset), "contact_y": self.contact_y,
            "ref_ppm": round(self.ref_ppm, 3), "product_ppm": round(self.product_ppm, 3),
            "implied_height_m": round(self.implied_height_m, 4),
            "references": [{"name": r.name, "box": list(r.box)} for r in self.references],
            "extension": None if self.extension is None else self.extension.kind,
        }


@dataclass
class Cutout:
    """The product scaled for the scene: `rgb` (h, w, 3), `alpha` (h, w) cropped to alpha > 0."""

    rgb: np.ndarray
    alpha: np.ndarray
    height: int = field(init=False)  # rows with alpha >= 128, as the oracle measures it
    bottom: int = field(init=False)  # last row with alpha >= 128
    top: int = field(init=False)

    def __post_init__(self) -> None:
        rows = np.flatnonzero((self.alpha >= 128).any(axis=1))
        self.top, self.bottom = int(rows[0]), int(rows[-1])
        self.height = self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.alpha.shape[1]


def context_window(box: Box, size: int) -> Box:
    """The region around a product whose clutter the oracle measures (and calm scenes keep clear)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    mx = max(round(0.6 * w), round(0.1 * size))
    my = max(round(0.3 * h), round(0.06 * size))
    return (max(0, x0 - mx), max(0, y0 - my), min(size, x1 + mx), min(size, y1 + max(2, my // 3)))


def scaled_cutout(product: SynthProduct, longer_side: int) -> Cutout:
    """The product scaled so its longer side is `longer_side` px (generation's own resize), cropped."""
    placed = place_product(product.to_product(), longer_side, 1.0)
    x0, y0, x1, y1 = product_box(placed.alpha)
    return Cutout(placed.rgb[y0:y1, x0:x1].copy(), placed.alpha[y0:y1, x0:x1].copy())


_CUTOUTS: "weakref.WeakKeyDictionary[SynthProduct, dict[int, Cutout]]" = weakref.WeakKeyDictionary()


def _cutout_for_height(product: SynthProduct, height: int) -> Cutout:
    """The product scaled to about `height` px tall (cached per product: scenes of one product reuse it)."""
    cache = _CUTOUTS.setdefault(product, {})
    if height not in cache:
        x0, y0, x1, y1 = product_box(product.alpha)
        longer = max(8, round(height * max(x1 - x0, y1 - y0) / (y1 - y0)))
        cache[height] = scaled_cutout(product, longer)
    return cache[height]


def min_product_height(product: SynthProduct) -> int:
    """Smallest pixel height at which the product keeps MIN_PRODUCT_PIXELS pixels."""
    x0, y0, x1, y1 = product_box(product.alpha)
    fill = np.count_nonzero(product.alpha) / ((x1 - x0) * (y1 - y0))
    aspect = (x1 - x0) / (y1 - y0)
    return int(np.ceil(np.sqrt(MIN_PRODUCT_PIXELS / (fill * aspect)))) + 1


_SHAPES: "weakref.WeakKeyDictionary[SynthProduct, tuple[float, int]]" = weakref.WeakKeyDictionary()


def _shape_facts(product: SynthProduct) -> tuple[float, int]:
    """(height / width of the cut-out's box, min_product_height), cached per product."""
    if product not in _SHAPES:
        x0, y0, x1, y1 = product_box(product.alpha)
        _SHAPES[product] = ((y1 - y0) / (x1 - x0), min_product_height(product))
    return _SHAPES[product]


def _ri(rng: np.random.Generator, lo: float, hi: float) -> int:
    lo_i, hi_i = int(round(lo)), int(round(hi))
    return int(rng.integers(lo_i, max(lo_i, hi_i) + 1))


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------


@dataclass
class _Support:
    kind: str
    y: int
    front: int | None
    apron_end: int | None

    def slot(self, size: int) -> tuple[int, int]:
        return support_slot(self.kind, self.y, self.front, size)


def support_slot(kind: str, support_y: int, front_y: int | None, size: int) -> tuple[int, int]:
    """Rows where a supported object's lowest row may lie: on the top face, clear of its edges
    (a few rows above a table's front edge, so blur cannot make it look sunk through)."""
    if kind == "table":
        band = front_y - support_y
        return support_y + max(1, round(0.2 * band)), front_y - max(2, round(3 * size / 64))
    return support_y + 2, min(size - 3, support_y + max(3, round(0.35 * (size - support_y))))


def _table(size: int, y: int, rng: np.random.Generator) -> _Support:
    band = _ri(rng, 0.15 * size, 0.2 * size)
    apron = max(2, round(0.05 * size))
    return _Support("table", y, y + band, y + band + apron)


def _support(kind: str, size: int, rng: np.random.Generator) -> _Support:
    if kind == "table":
        return _table(size, _ri(rng, 0.55 * size, 0.63 * size), rng)
    return _Support("floor", _ri(rng, 0.72 * size, 0.8 * size), None, None)


def _implied_height(product: SynthProduct, defect: str | None, variant: str | None,
                    rng: np.random.Generator) -> float:
    if defect != "Size Mismatch":
        return product.height_m
    lo, hi = CATEGORIES[product.category].height_m
    factor = float(rng.uniform(*SIZE_FACTOR))
    return hi * factor if variant == "too_large" else lo / factor


def _ref_candidates(support: _Support, ppm: float, size: int, contact: int,
                    rng: np.random.Generator) -> list[tuple[Reference, int, int, int]]:
    """(reference, height px, width px, bottom row) of the references that fit the frame."""
    out = []
    for ref in REFERENCES.values():
        if ref.support != support.kind:
            continue
        h = int(round(ref.height_m * ppm))
        w = max(2, int(round(h * ref.width_ratio * (MUG_HANDLE if ref.name == "mug" else 1.0))))
        if ref.name == "door":
            bottom = support.y + 1
        else:
            lo, hi = support.slot(size)
            bottom = int(np.clip(contact + rng.integers(-1, 2), lo, hi))
        if h >= round(MIN_REF_PX * size / 64) and bottom - h + 1 >= round(0.03 * size) and w <= MAX_REF_WIDTH * size:
            out.append((ref, h, w, bottom))
    rng.shuffle(out)
    return out


def _ref_limits(ref: Reference, sup: _Support, size: int) -> tuple[float, float]:
    """Smallest and largest pixel height of a reference that is detectable and fits the frame."""
    bottom = sup.y + 1 if ref.name == "door" else sup.slot(size)[1]
    widest = MAX_REF_WIDTH * size / (ref.width_ratio * (MUG_HANDLE if ref.name == "mug" else 1.0))
    return round(MIN_REF_PX * size / 64), min(bottom + 1 - round(0.03 * size), widest)


def _feasible_heights(sup: _Support, implied_m: float, size: int) -> list[tuple[float, float]]:
    """Product pixel heights at which some reference of this support fits, one range per reference."""
    out = []
    for ref in REFERENCES.values():
        if ref.support == sup.kind:
            lo, hi = _ref_limits(ref, sup, size)
            out.append((lo * implied_m / ref.height_m + 1, hi * implied_m / ref.height_m - 1))
    return out


def _pack(widths: list[int], size: int, gap: int, rng: np.random.Generator) -> list[int] | None:
    """Left x of each item, in a random order, non-overlapping with >= gap px between them."""
    n = len(widths)
    slack = size - 2 - sum(widths) - gap * (n - 1)
    if slack < 0:
        return None
    order = rng.permutation(n)
    cuts = np.sort(rng.integers(0, slack + 1, n))
    xs = [0] * n
    x = 1
    for k, i in enumerate(order):
        x += int(cuts[k] - (cuts[k - 1] if k else 0))
        xs[i] = x
        x += widths[i] + gap
    return xs


def plan_layout(product: SynthProduct, defect: str | None, variant: str | None, rng: np.random.Generator,
                size: int, image_scale: float | None = None) -> tuple[Layout, Cutout]:
    """Plan a scene; returns the layout and the scaled product cut-out it places.

    `defect` is None or a defect class name with its `variant` (see scenes.DEFECT_VARIANTS).
    `image_scale`: place the product as `prepare_product` centres it (longer side image_scale * size)
    and build the scene around it; None places it freely. Raises LayoutError when nothing fits.
    """
    fixed = None
    if image_scale is not None:
        placed = place_product(product.to_product(), size, image_scale)
        x0, y0, x1, y1 = product_box(placed.alpha)
        fixed = (Cutout(placed.rgb[y0:y1, x0:x1].copy(), placed.alpha[y0:y1, x0:x1].copy()), x0, y0)
    for _ in range(60):
        planned = _attempt(product, defect, variant, rng, size, fixed)
        if planned is not None:
            return planned
    where = f"image_scale={image_scale}" if image_scale is not None else f"size={size}"
    raise LayoutError(f"no {defect or 'Available'} layout ({variant or 'plain'}) fits a {product.caption!r} at "
                      f"{where}; with image_scale, use a smaller one (0.3-0.5 leaves room for the support and "
                      "references)")


def _attempt(product: SynthProduct, defect: str | None, variant: str | None, rng: np.random.Generator, size: int,
             fixed: tuple[Cutout, int, int] | None) -> tuple[Layout, Cutout] | None:
    """One random draw of a layout; None when the draw does not fit the frame."""
    kind, u = SUPPORT_OF_SIZE_CLASS[product.size_class], size / 64
    lifted = variant in ("floating", "sinking")
    # 1. the scale the references will imply; the support and the product's height (free
    #    placement: a height at which some reference fits the frame)
    implied = _implied_height(product, defect, variant, rng)
    if fixed is None:
        sup = _support(kind, size, rng)
        cut = _free_cutout(product, sup, implied, variant, size, rng)
        if cut is None:
            return None
    else:
        cut = fixed[0]
    P = cut.height
    ext_h = _ri(rng, max(3 * u, 0.25 * P), 0.45 * P) if variant in ("pedestal", "legs") else 0
    # 2. the product's lowest row: on the support, above it, or through a table's edge
    if fixed is None:
        contact = _ri(rng, *sup.slot(size))
        if variant == "floating":
            y_b = sup.y - _ri(rng, max(4 * u, 0.15 * P), max(5 * u, 0.35 * P) + 4 * u)
        elif variant == "sinking":
            y_b = sup.front + _ri(rng, 3 * u + 1, (sup.apron_end - sup.front) + 5 * u)
        else:
            y_b = contact - ext_h
    else:
        y_b = fixed[2] + cut.bottom
        sup = _support_around(kind, y_b + ext_h, variant, size, rng)
        if sup is None:
            return None
        contact = _ri(rng, *sup.slot(size)) if lifted else y_b + ext_h
    top = y_b - cut.bottom
    if top < round(0.04 * size) or y_b > size - 2:
        return None
    # 3. the references that fit at that scale
    ref_ppm = P / implied
    candidates = _ref_candidates(sup, ref_ppm, size, _ri(rng, *sup.slot(size)) if lifted else contact, rng)
    if not candidates:
        return None
    chosen = candidates[: 1 + int(len(candidates) > 1 and rng.random() < 0.5)]
    # 4. left to right: the product (with any hallucinated part) and the references
    plan, left_ext, right_ext = ({}, 0, 0) if defect != "Shape Hallucination" else \
        _extension_plan(cut, variant, ext_h, size, rng)
    fixed_x = None if fixed is None else fixed[1] - left_ext
    arranged = _arrange(cut.width + left_ext + right_ext, chosen, size, rng, fixed_x)
    if arranged is None:
        return None
    px, chosen, ref_xs = arranged[0] + left_ext, arranged[1], arranged[2]
    refs = tuple(RefPlacement(r.name, (x, b - h + 1, x + w, b + 1)) for (r, h, w, b), x in zip(chosen, ref_xs))
    offset = (px, top)
    extension = None
    if defect == "Shape Hallucination":
        extension = _extension(cut, offset, plan, variant, ext_h, rng)
        if not _visible_extension(extension, cut, offset, size):
            return None
    box = (px, top, px + cut.width, top + cut.alpha.shape[0])
    return Layout(size, sup.kind, sup.y, sup.front, sup.apron_end, box, offset, contact, ref_ppm,
                  P / product.height_m, refs, extension, implied), cut


def _free_cutout(product: SynthProduct, sup: _Support, implied_m: float, variant: str | None, size: int,
                 rng: np.random.Generator) -> Cutout | None:
    """The product scaled to a random height at which it fits and some reference fits beside it."""
    tallness, p_min = _shape_facts(product)
    p_min = max(p_min, round(0.16 * size))
    hi_frac = 0.32 if variant == "too_small" else (0.5 if sup.kind == "table" else 0.58)
    p_lo = p_min if variant == "too_small" else max(p_min, round(0.26 * size))
    p_hi = min(hi_frac * size, 0.5 * size * tallness)
    ranges = [(max(p_lo, lo), min(p_hi, hi)) for lo, hi in _feasible_heights(sup, implied_m, size)]
    ranges = [r for r in ranges if r[0] <= r[1]]
    if not ranges:
        return None
    return _cutout_for_height(product, _ri(rng, *ranges[int(rng.integers(len(ranges)))]))


def _arrange(product_width: int, chosen: list, size: int, rng: np.random.Generator,
             product_x: int | None) -> tuple[int, list, list[int]] | None:
    """Left x of the product and of the references it keeps (dropping a second one if crowded);
    `product_x` fixes the product's position. None when they do not fit side by side."""
    gap = max(2, round(3 * size / 64))
    widths = [product_width] + [w for _, _, w, _ in chosen]
    if product_x is not None:
        xs = _place_beside(product_x, widths, size, gap, rng)
        return None if xs is None else (xs[0], chosen, xs[1:])
    if product_width > 0.55 * size:
        return None
    xs = _pack(widths, size, gap, rng)
    if xs is None and len(chosen) > 1:
        chosen, widths = chosen[:1], widths[:2]
        xs = _pack(widths, size, gap, rng)
    return None if xs is None else (xs[0], chosen, xs[1:])


def _support_around(kind: str, contact: int, variant: str | None, size: int,
                    rng: np.random.Generator) -> _Support | None:
    """A support placed so that a product whose lowest row is fixed stands on it (or floats above,
    or sinks through it, as the variant asks); None when it would leave the frame."""
    probe = _support(kind, size, rng)
    if variant == "floating":
        y = contact + _ri(rng, 4 * size / 64, 10 * size / 64)
    elif variant == "sinking":
        front = contact - _ri(rng, 3 * size / 64 + 1, 6 * size / 64)
        y = front - (probe.front - probe.y)
    else:
        lo, hi = probe.slot(size)
        y = contact - _ri(rng, lo - probe.y, max(lo, hi) - probe.y)
    sup = _table(size, y, rng) if kind == "table" else _Support("floor", y, None, None)
    if not (0.3 * size <= sup.y <= 0.9 * size) or (sup.apron_end or 0) > size:
        return None
    return sup


def _place_beside(product_x: int, widths: list[int], size: int, gap: int, rng: np.random.Generator) -> list[int] | None:
    """Left x of the product (fixed) and of each reference, put left or right of it where room is."""
    xs = [product_x]
    left_edge, right_edge = product_x - gap, product_x + widths[0] + gap
    for w in widths[1:]:
        sides = [s for s in ("left", "right") if (left_edge - w >= 1 if s == "left" else right_edge + w <= size - 1)]
        if not sides:
            return None
        if sides[int(rng.integers(len(sides)))] == "left":
            x = int(rng.integers(1, left_edge - w + 1))
            xs.append(x)
            left_edge = x - gap
        else:
            x = int(rng.integers(right_edge, size - w))
            xs.append(x)
            right_edge = x + w + gap
    return xs


# ----------------------------------------------------------------------------------------------
# Shape Hallucination extensions
# ----------------------------------------------------------------------------------------------


def extension_mask(ext: Extension, size: int) -> np.ndarray:
    """(size, size) bool: the pixels an extension covers (the product may hide some of them)."""
    m = np.zeros((size, size), np.uint8)
    for x0, y0, x1, y1 in ext.rects:
        m[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 1
    for cx, cy, rx, ry, a0, a1, thick in ext.arcs:
        cv2.ellipse(m, (cx, cy), (rx, ry), 0, a0, a1, 1, thick)
    return m.astype(bool)


def _visible_extension(ext: Extension, cut: Cutout, offset: tuple[int, int], size: int) -> bool:
    """Whether the part shows clearly beside the product: EXTENSION_SHARE of its area at least."""
    covered = np.zeros((size, size), bool)
    ox, oy = offset
    h, w = cut.alpha.shape
    covered[oy:oy + h, ox:ox + w] = cut.alpha > 0
    shown = extension_mask(ext, size) & ~covered
    return shown.sum() >= max(EXTENSION_SHARE * covered.sum(), 12 * (size / 64) ** 2)


def _base_span(cut: Cutout) -> tuple[int, int]:
    """Columns (x0, x1 end-exclusive) of the product's lowest solid rows."""
    rows = cut.alpha[max(cut.top, cut.bottom - 1): cut.bottom + 1] >= 128
    cols = np.flatnonzero(rows.any(axis=0))
    return int(cols[0]), int(cols[-1]) + 1


def _extension_plan(cut: Cutout, variant: str, ext_h: int, size: int,
                    rng: np.random.Generator) -> tuple[dict, int, int]:
    """Random parameters of an extension and how far it reaches left/right of the cut-out."""
    u = size / 64
    if variant == "handle":
        side = ("left", "right", "top")[int(rng.integers(3))] if cut.width < 0.9 * cut.height else \
            ("left", "right")[int(rng.integers(2))]
        rx = _ri(rng, max(3 * u, 0.22 * cut.height), max(4 * u, 0.38 * cut.height))
        ry = _ri(rng, max(3 * u, 0.15 * cut.height), max(4 * u, 0.28 * cut.height))
        thick = max(2, int(EXTENSION_THICK * u + 0.5))
        reach = rx + thick if side != "top" else 0
        return {"side": side, "rx": rx, "ry": ry, "thick": thick}, reach * (side == "left"), reach * (side == "right")
    b0, b1 = _base_span(cut)
    if variant == "pedestal":
        w = max(3, round((b1 - b0) * rng.uniform(1.1, 1.4)))  # a plinth wider than the base
        x0 = (b0 + b1) // 2 - w // 2
        return {"x0": x0, "w": w}, max(0, -x0), max(0, x0 + w - cut.width)
    n = int(rng.integers(2, 5)) if b1 - b0 >= 8 * u else 2
    return {"n": n, "thick": max(2, int(EXTENSION_THICK * u + 0.5))}, 0, 0


def _extension(cut: Cutout, offset: tuple[int, int], plan: dict, variant: str, ext_h: int,
               rng: np.random.Generator) -> Extension:
    ox, oy = offset
    y_b = oy + cut.bottom
    if variant == "pedestal":
        x0 = ox + plan["x0"]
        return Extension("pedestal", rects=((x0, y_b - 1, x0 + plan["w"], y_b + ext_h + 1),))
    if variant == "legs":
        b0, b1 = _base_span(cut)
        t = plan["thick"]
        xs = np.linspace(ox + b0, ox + b1 - t, plan["n"]).round().astype(int)
        return Extension("legs", rects=tuple((int(x), y_b - 1, int(x) + t, y_b + ext_h + 1) for x in xs))
    side, rx, ry, thick = plan["side"], plan["rx"], plan["ry"], plan["thick"]
    solid = cut.alpha >= 128
    if side == "top":
        cols = np.flatnonzero(solid[cut.top: cut.top + max(2, cut.height // 5)].any(axis=0))
        cx = ox + (int(cols[0]) + int(cols[-1])) // 2
        rx = min(rx, max(2, (int(cols[-1]) - int(cols[0])) // 2 - 1))
        cy = oy + cut.top + max(2, cut.height // 8)
        ry = max(2, min(ry, cy - 1))
        return Extension("handle", arcs=((cx, cy, rx, ry, 180, 360, thick),))
    mid = cut.top + int(cut.height * rng.uniform(0.35, 0.55))
    rows = solid[max(cut.top, mid - ry): min(cut.bottom, mid + ry) + 1]
    cols_per_row = [np.flatnonzero(r) for r in rows if r.any()]
    if side == "right":
        cx = ox + min(int(c[-1]) for c in cols_per_row) - 1
        return Extension("handle", arcs=((cx, oy + mid, rx, ry, 270, 450, thick),))
    cx = ox + max(int(c[0]) for c in cols_per_row) + 1
    return Extension("handle", arcs=((cx, oy + mid, rx, ry, 90, 270, thick),))
