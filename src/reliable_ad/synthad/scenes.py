"""SynthAd scenes: an advertising image of a procedural product, rendered from prompt attributes
(wall colour, surface material, clutter level) with a visible support and scale references, and
with at most one injected defect of the paper's failure classes (docs/method.md §1).

    product = sample_product(7)
    scene = render_scene(product, SceneAttributes("beige", "wooden", "low"), defect="Space Mismatch", seed=3)
    scene.image, scene.mask, scene.depth, scene.salience, scene.label, scene.prompt

The product is pasted pixel-exact with generation's own compositing; true depth and salience come
with the image. The same (product, attributes, defect, variant, seed, size) gives the same scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from reliable_ad.data.product import PlacedProduct, paste_back, place_product, product_from_arrays
from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.synthad import drawing
from reliable_ad.synthad.layout import Layout, LayoutError, context_window, extension_mask, plan_layout
from reliable_ad.synthad.products import SynthProduct, make_rng
from reliable_ad.synthad.world import (APRON_SHADE, RGB, SUPPORT_OF_SIZE_CLASS, SURFACES, UNDER_TABLE, WALL_COLORS,
                                       color_distance, shade)

CLUTTER_LEVELS: tuple[str, ...] = ("none", "low", "medium")
CLUTTER_COUNTS: dict[str, tuple[int, int]] = {"none": (0, 0), "low": (1, 2), "medium": (3, 5)}
DEFECT_VARIANTS: dict[str, tuple[str, ...]] = {
    "Space Mismatch": ("floating", "sinking"),
    "Size Mismatch": ("too_large", "too_small"),
    "Indistinctiveness": ("same_color", "clutter"),
    "Shape Hallucination": ("pedestal", "legs", "handle"),
}
SCENE_SIZES = (64, 128)
MIN_WALL_CONTRAST = 110  # RGB distance between the product's colour and the wall an Available scene may use
MIN_SURFACE_CONTRAST = 75  # ... and its surface (and the table edge and floor below it)


# ----------------------------------------------------------------------------------------------
# Prompt attributes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneAttributes:
    """What a designer's prompt asks for: `wall` (a WALL_COLORS name), `surface` (a SURFACES
    material) and `clutter` (a CLUTTER_LEVELS level). Whether the product stands on a table or on
    the floor follows from its size class."""

    wall: str
    surface: str
    clutter: str = "low"

    def __post_init__(self) -> None:
        for name, value, allowed in (("wall", self.wall, WALL_COLORS), ("surface", self.surface, SURFACES),
                                     ("clutter", self.clutter, CLUTTER_LEVELS)):
            if value not in allowed:
                raise ValueError(f"SceneAttributes.{name}={value!r} is not one of {tuple(allowed)}")

    def to_dict(self) -> dict:
        return {"wall": self.wall, "surface": self.surface, "clutter": self.clutter}


def scene_prompt(product: SynthProduct | str, attrs: SceneAttributes) -> str:
    """The prompt text of a scene, e.g. "a red bottle on a wooden table, beige wall, low clutter"."""
    if isinstance(product, SynthProduct):
        what, support = f"{product.color_name} {product.category}", SUPPORT_OF_SIZE_CLASS[product.size_class]
    else:
        from reliable_ad.synthad.products import parse_caption

        info = parse_caption(product)
        what = " ".join(w for w in (info.color, info.category) if w) or "product"
        support = SUPPORT_OF_SIZE_CLASS.get(info.size_class or "small", "table")
    clutter = "no clutter" if attrs.clutter == "none" else f"{attrs.clutter} clutter"
    return f"a {what} on a {attrs.surface} {support}, {attrs.wall} wall, {clutter}"


_PROMPT = re.compile(r"on an? (?P<surface>[a-z]+) (?:table|floor|surface), (?P<wall>[a-z ]+?) wall, "
                     r"(?P<clutter>no|low|medium) clutter")


def attributes_from_prompt(prompt: str) -> SceneAttributes:
    """Inverse of `scene_prompt`: the attributes a prompt asks for (prompt adherence checks use it)."""
    m = _PROMPT.search(prompt.lower()) if isinstance(prompt, str) else None
    if m is None:
        raise ValueError(f"prompt {prompt!r} is not a SynthAd scene prompt; expected e.g. "
                         "'a red bottle on a wooden table, beige wall, low clutter'")
    clutter = "none" if m["clutter"] == "no" else m["clutter"]
    return SceneAttributes(m["wall"], m["surface"], clutter)


def attribute_conflicts(product: SynthProduct, attrs: SceneAttributes) -> list[str]:
    """Reasons these attributes cannot make an Available scene for this product (empty when fine)."""
    body = product.color_rgb
    problems = []
    if color_distance(body, WALL_COLORS[attrs.wall]) < MIN_WALL_CONTRAST:
        problems.append(f"a {product.color_name} product does not stand out on a {attrs.wall} wall")
    surface = SURFACES[attrs.surface]
    for what, colour in (("surface", surface), ("table edge", shade(surface, APRON_SHADE)), ("floor", UNDER_TABLE)):
        if color_distance(body, colour) < MIN_SURFACE_CONTRAST:
            problems.append(f"a {product.color_name} product blends into the {attrs.surface} {what}")
    return problems


def sample_attributes(product: SynthProduct, seed: int | np.random.Generator = 0) -> SceneAttributes:
    """Random prompt attributes under which this product can make an Available scene."""
    rng = make_rng(seed)
    walls, surfaces = list(WALL_COLORS), list(SURFACES)
    for _ in range(200):
        attrs = SceneAttributes(walls[int(rng.integers(len(walls)))], surfaces[int(rng.integers(len(surfaces)))],
                                CLUTTER_LEVELS[int(rng.integers(len(CLUTTER_LEVELS)))])
        if not attribute_conflicts(product, attrs):
            return attrs
    raise ValueError(f"no wall and surface suit a {product.color_name} product; this is a palette bug")


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered SynthAd scene (S = size).

    `image` (S, S, 3) uint8: the ad, the product pasted pixel-exact. `background` (S, S, 3) uint8:
    the scene without the product. `product_rgb` (S, S, 3) / `product_alpha` (S, S) uint8: the
    product as placed (255 = product). `depth`, `salience` (S, S) float32 in [0, 1] (near = 1,
    salient = 1). `extension_mask` (S, S) bool: a Shape Hallucination's added part (else empty).
    `layout`: the geometry (support lines, references, contact row, scales).
    `label`: class index (0 = Available); `variant`: how the defect was made.
    `attrs`/`prompt`: what was asked for; `wall_rgb`: the wall colour actually painted.
    """

    image: np.ndarray
    background: np.ndarray
    product_rgb: np.ndarray
    product_alpha: np.ndarray
    depth: np.ndarray
    salience: np.ndarray
    extension_mask: np.ndarray
    layout: Layout
    label: int
    variant: str | None
    attrs: SceneAttributes
    product: SynthProduct
    prompt: str
    wall_rgb: RGB
    seed: int

    @property
    def size(self) -> int:
        return self.image.shape[0]

    @property
    def label_name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def caption(self) -> str:
        return self.product.caption

    @property
    def mask(self) -> np.ndarray:
        """(S, S) bool: the product's pixels in the scene (alpha > 0)."""
        return self.product_alpha > 0

    @property
    def product_layer(self) -> np.ndarray:
        """(S, S, 4) uint8: the product as placed in the scene, an RGBA cut-out at canvas size.
        `prepare_product(product_from_arrays(...), S, keep_loc=True)` of it reproduces the scene's
        placement, so a generator can be conditioned on exactly this product position."""
        return np.dstack([self.product_rgb, self.product_alpha])

    @cached_property
    def placed(self) -> PlacedProduct:
        """The placed product (keep_loc at canvas size), for `data.product.paste_back`."""
        product = product_from_arrays(self.product_rgb, self.product_alpha, self.product.source)
        return place_product(product, self.size, 1.0, keep_loc=True)

    def info(self) -> dict:
        """JSON-ready description (dataset records, manifests)."""
        return {"label": self.label, "label_name": self.label_name, "variant": self.variant,
                "caption": self.caption, "prompt": self.prompt, "attrs": self.attrs.to_dict(),
                "wall_rgb": list(self.wall_rgb), "seed": self.seed, "size": self.size,
                "category": self.product.category, "size_class": self.product.size_class,
                "color": self.product.color_name, "height_m": round(self.product.height_m, 4),
                "layout": self.layout.to_dict()}


def _defect_name(defect: str | int | None) -> str | None:
    if defect is None:
        return None
    if isinstance(defect, (int, np.integer)) and not isinstance(defect, bool):
        if 0 <= defect < len(CLASS_NAMES):
            return None if defect == AVAILABLE_INDEX else CLASS_NAMES[int(defect)]
    elif isinstance(defect, str):
        if defect == CLASS_NAMES[AVAILABLE_INDEX]:
            return None
        if defect in DEFECT_VARIANTS:
            return defect
    raise ValueError(f"defect={defect!r} is not a class; use None, 'Available', one of {tuple(DEFECT_VARIANTS)} "
                     f"or a class index 0..{len(CLASS_NAMES) - 1}")


def render_scene(product: SynthProduct, attrs: SceneAttributes | None = None, defect: str | int | None = None,
                 seed: int = 0, *, size: int = 64, variant: str | None = None,
                 image_scale: float | None = None) -> Scene:
    """Render one scene of `product`.

    `attrs`: the prompt attributes (None: sampled from `seed` among those that suit the product).
    `defect`: None/"Available" or a defect class name (or index); `variant` picks how it is made
    (DEFECT_VARIANTS; None: drawn from `seed`; the floor has no "sinking"). `size`: 64 or 128.
    `image_scale`: place the product as `prepare_product` centres it (longer side image_scale *
    size) and build the scene around it; None places it freely. Raises ValueError for bad
    arguments, attributes under which the product would not stand out in an Available scene
    (`attribute_conflicts`), or an image_scale that leaves no room (LayoutError).
    """
    if not isinstance(product, SynthProduct):
        raise TypeError(f"product must be a SynthProduct (see sample_product), got {type(product).__name__}")
    if size not in SCENE_SIZES:
        raise ValueError(f"size={size!r} must be one of {SCENE_SIZES}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    name = _defect_name(defect)
    rng = np.random.default_rng([int(seed), 0x5C3E])
    attrs = sample_attributes(product, rng) if attrs is None else attrs
    if not isinstance(attrs, SceneAttributes):
        raise TypeError(f"attrs must be SceneAttributes, got {type(attrs).__name__}")
    conflicts = attribute_conflicts(product, attrs)
    if conflicts:
        raise ValueError(f"attributes {attrs.to_dict()} do not suit {product.caption!r}: {'; '.join(conflicts)}; "
                         "choose others or use sample_attributes(product, seed)")
    given = variant
    variant = _variant(name, variant, product, rng)
    # a drawn variant that cannot be laid out (a lipstick too small for a mug to fit the frame)
    # gives way to the class's other variants; a variant the caller asked for does not
    options = [variant] if given is not None or name is None else \
        [variant] + [v for v in _allowed_variants(name, product) if v != variant]
    for k, option in enumerate(options):
        try:
            layout, cut = plan_layout(product, name, option, rng, size, image_scale)
            break
        except LayoutError:
            if k == len(options) - 1:
                raise
    return _paint(product, attrs, name, option, layout, cut, rng, int(seed))


def _variant(name: str | None, variant: str | None, product: SynthProduct, rng: np.random.Generator) -> str | None:
    if name is None:
        if variant is not None:
            raise ValueError(f"variant={variant!r} given without a defect; pass defect= too")
        return None
    allowed = _allowed_variants(name, product)
    if variant is None:
        return allowed[int(rng.integers(len(allowed)))]
    if variant not in allowed:
        raise ValueError(f"variant={variant!r} is not a way to make {name!r} for a {product.size_class} product; "
                         f"use one of {allowed}")
    return variant


def _allowed_variants(name: str, product: SynthProduct) -> tuple[str, ...]:
    floor = SUPPORT_OF_SIZE_CLASS[product.size_class] == "floor"
    return tuple(v for v in DEFECT_VARIANTS[name] if not (floor and v == "sinking"))


def _paint(product: SynthProduct, attrs: SceneAttributes, defect: str | None, variant: str | None, layout: Layout,
           cut, rng: np.random.Generator, seed: int) -> Scene:
    S = layout.size
    canvas = drawing.Canvas(S)
    body = product.color_rgb
    wall = shade(body, float(rng.uniform(0.96, 1.08))) if variant == "same_color" else WALL_COLORS[attrs.wall]
    drawing.paint_background(canvas, layout, wall, attrs.surface, rng)

    # 1. the product layer at canvas size, and any hallucinated part beside it
    ox, oy = layout.product_offset
    h, w = cut.alpha.shape
    product_rgb = np.zeros((S, S, 3), np.uint8)
    product_alpha = np.zeros((S, S), np.uint8)
    product_rgb[oy:oy + h, ox:ox + w] = cut.rgb
    product_alpha[oy:oy + h, ox:ox + w] = cut.alpha
    mask = product_alpha > 0
    ext = extension_mask(layout.extension, S) & ~mask if layout.extension is not None else np.zeros((S, S), bool)

    # 2. references and clutter
    _paint_objects(canvas, layout, attrs, variant, wall, body, mask, ext, rng)

    # 3. the extension and the contact shadow, then the product pasted as the pipeline pastes it
    depth = drawing.support_depth(layout, layout.contact_y) + 0.03
    if ext.any():
        drawing.paint_extension(canvas, ext, body, depth, 1.0)
    if variant not in ("floating", "sinking"):
        cols = np.flatnonzero((mask | ext)[max(0, layout.contact_y - 1): layout.contact_y + 1].any(axis=0))
        if cols.size:
            drawing.paint_contact_shadow(canvas, layout, int(cols[0]), int(cols[-1]) + 1, layout.contact_y)
    background = np.clip(np.rint(canvas.image), 0, 255).astype(np.uint8)
    placed = place_product(product_from_arrays(product_rgb, product_alpha, product.source), S, 1.0, keep_loc=True)
    image = paste_back(background, placed)

    # 4. true maps: the product at its contact depth, as salient as it stands out
    canvas.depth[mask] = depth
    canvas.salience[mask | ext] = _product_contrast(image, mask, body)
    salience = np.clip(cv2.GaussianBlur(canvas.salience, (0, 0), 0.6 * S / 64), 0.0, 1.0).astype(np.float32)
    return Scene(image, background, product_rgb, product_alpha, canvas.depth.copy(), salience, ext, layout,
                 _label(defect), variant, attrs, product, scene_prompt(product, attrs), wall, seed)


def _paint_objects(canvas: drawing.Canvas, layout: Layout, attrs: SceneAttributes, variant: str | None, wall: RGB,
                   body: RGB, mask: np.ndarray, ext: np.ndarray, rng: np.random.Generator) -> None:
    """The scale references and the clutter: calm clutter keeps off the product's surroundings,
    heavy clutter (the Indistinctiveness variant) crowds them; references stay in front."""
    S = layout.size
    refs = np.zeros((S, S), bool)
    for r in layout.references:
        refs |= drawing.paint_reference(canvas, layout, r)
    colours = drawing.clutter_palette(body, wall, attrs.surface)
    ref_zone = cv2.dilate(refs.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    window = context_window(layout.product_box, S)
    if variant == "clutter":
        drawing.paint_heavy_clutter(canvas, layout, window, colours, mask | ext, ref_zone, rng)
    else:
        x0, y0, x1, y1 = window
        keep_clear = ref_zone | ext
        keep_clear[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = True
        low, high = CLUTTER_COUNTS[attrs.clutter]
        drawing.paint_calm_clutter(canvas, layout, int(rng.integers(low, high + 1)), colours, keep_clear,
                                   mask | ext | refs, rng)
    for r in layout.references:
        drawing.paint_reference(canvas, layout, r)


def _label(defect: str | None) -> int:
    return AVAILABLE_INDEX if defect is None else CLASS_NAMES.index(defect)


def _product_contrast(image: np.ndarray, mask: np.ndarray, body: RGB) -> float:
    """How much the product stands out from what surrounds it, in [0.1, 1] (its true salience)."""
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
    around = np.median(image[ring].astype(np.float32), axis=0)
    return float(np.clip(color_distance(around, body) / 110.0, 0.1, 1.0))


__all__ = ["CLUTTER_LEVELS", "DEFECT_VARIANTS", "SCENE_SIZES", "Scene", "SceneAttributes", "attribute_conflicts",
           "attributes_from_prompt", "render_scene", "sample_attributes", "scene_prompt"]
