"""Finding a product in an image by its pasted pixels, so a judge that gets only (product cut-out,
generated image) knows where the product is.

The generation pipeline pastes the product back pixel-exact (data.product.paste_back) after
scaling it with `place_product`; so the product's opaque pixels appear unchanged in the image, at
one of the scales that function produces. The locator tries every longer side L from the image size
down to 8 px, anchors on the scaled template's rarest colour and checks the whole template there.
A found placement is cached per (product, image size): judging a product's retries is then cheap.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from reliable_ad.data.product import ProductError, place_product, product_box, product_from_arrays

MATCH_SHARE = 0.98  # share of the template's opaque pixels that must be equal in the image


class ProductLocator:
    """`locate(product_rgba, image)` -> the product's (S, S) uint8 alpha in the image, or None."""

    def __init__(self, cache_size: int = 256):
        self._placements: OrderedDict[tuple[str, int], tuple[int, int, int]] = OrderedDict()
        self._cache_size = cache_size

    def locate(self, product_rgba: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        """The product's alpha in `image` ((S, S, 3) uint8), found by its exactly pasted pixels.

        `product_rgba` ((H, W, 4) uint8) is what the generator was given: an (S, S) layer at the
        image's size (keep_loc, e.g. a scene's `product_layer`), or any cut-out that the pipeline
        scaled and placed anywhere, centred or not. None when the product is not in the image.
        """
        if not (isinstance(product_rgba, np.ndarray) and product_rgba.dtype == np.uint8 and product_rgba.ndim == 3
                and product_rgba.shape[2] == 4):
            got = f"{getattr(product_rgba, 'dtype', type(product_rgba).__name__)} {getattr(product_rgba, 'shape', '')}"
            raise ValueError(f"product must be an (H, W, 4) uint8 RGBA array, got {got}")
        S = image.shape[0]
        rgb, alpha = product_rgba[..., :3], product_rgba[..., 3]
        if product_rgba.shape[:2] == image.shape[:2] and _matches(image, rgb, alpha, 0, 0):
            return alpha.copy()
        templates = _Templates(product_rgba)
        key = (hashlib.sha1(product_rgba.tobytes() + str(product_rgba.shape).encode()).hexdigest(), S)
        if key in self._placements:
            L, x, y = self._placements[key]
            t_rgb, t_alpha = templates.at(L)
            if t_alpha is not None and _matches(image, t_rgb, t_alpha, x, y):
                return _layer(t_alpha, x, y, S)
        for L in range(S, 7, -1):
            t_rgb, t_alpha = templates.at(L)
            if t_alpha is None:
                return None
            hit = _find(image, t_rgb, t_alpha)
            if hit is not None:
                self._placements[key] = (L, *hit)
                while len(self._placements) > self._cache_size:
                    self._placements.popitem(last=False)
                return _layer(t_alpha, *hit, S)
        return None


class _Templates:
    """The product scaled as the pipeline scales it, for any longer side L (cropped to its box)."""

    def __init__(self, rgba: np.ndarray):
        try:
            self.product = product_from_arrays(np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]))
        except ProductError:  # not a usable cut-out: it cannot have been pasted either
            self.product = None

    def at(self, L: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.product is None:
            return None, None
        placed = place_product(self.product, L, 1.0)
        x0, y0, x1, y1 = product_box(placed.alpha)
        return placed.rgb[y0:y1, x0:x1], placed.alpha[y0:y1, x0:x1]


def _matches(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> bool:
    h, w = alpha.shape
    if x < 0 or y < 0 or y + h > image.shape[0] or x + w > image.shape[1]:
        return False
    core = alpha == 255
    if core.sum() < 8:
        return False
    same = np.all(image[y:y + h, x:x + w][core] == rgb[core], axis=-1)
    return bool(same.mean() >= MATCH_SHARE)


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _find(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray) -> tuple[int, int] | None:
    """(x, y) where the template's opaque pixels appear exactly in the image, or None."""
    h, w = alpha.shape
    if h > image.shape[0] or w > image.shape[1]:
        return None
    core = np.argwhere(alpha == 255)
    if len(core) < 8:
        return None
    # anchor on the template's rarest colour: a flat area repeats one colour in many places
    _, first, counts = np.unique(_pack_rgb(rgb[core[:, 0], core[:, 1]]), return_index=True, return_counts=True)
    ay, ax = core[first[np.argmin(counts)]]
    ys, xs = np.nonzero(_pack_rgb(image) == _pack_rgb(rgb[ay, ax]))
    for y, x in zip(ys - ay, xs - ax):
        if _matches(image, rgb, alpha, int(x), int(y)):
            return int(x), int(y)
    return None


def _layer(alpha: np.ndarray, x: int, y: int, S: int) -> np.ndarray:
    out = np.zeros((S, S), np.uint8)
    h, w = alpha.shape
    out[y:y + h, x:x + w] = alpha
    return out
