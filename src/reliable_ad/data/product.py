"""Product preparation: load a product photo, place it on the canvas, build the ControlNet (canny)
control image and the inpainting mask, and paste the product back after generation.

Follows the semantics of the authors' inference script. Everything here is a pure function on numpy
arrays except `load_product`, the only function that reads files.

Conventions: `rgb`/`image` are (H, W, 3) uint8 RGB; `alpha` is (H, W) uint8 with 255 = product and
0 = background; a "product pixel" is one with alpha > 0; `mask` is (S, S) uint8 with 255 = to be
generated. The product is cropped to the box of its pixels with alpha >= 128, as in the authors'
script (`DEFAULT_BOX_ALPHA_THRESHOLD`): a faint drop shadow does not enlarge the box.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

MIN_PRODUCT_SIDE = 8  # px: a product whose bounding box is shorter than this cannot be placed
MIN_PRODUCT_PIXELS = 64  # product pixels (alpha > 0) a source image must have
REFERENCE_SIZE = 512  # the authors' canvas size, at which ...
REFERENCE_KERNEL_PX = 20  # ... the inpainting mask is dilated with a 20x20 kernel
DEFAULT_BOX_ALPHA_THRESHOLD = 128  # the authors' crop: the box of the pixels with alpha >= 128

PlacementMode = Literal["center", "keep_loc"]


class ProductError(ValueError):
    """A product image that cannot be used; the message names the source, the problem and the fix."""


_MINIMUM = f"a product needs >= {MIN_PRODUCT_PIXELS} pixels and a bounding box >= {MIN_PRODUCT_SIDE} px long"


def _error(source: str, problem: str, fix: str) -> ProductError:
    return ProductError(f"product {source!r}: {problem}; {fix}")


# ----------------------------------------------------------------------------------------------
# Product: a validated cut-out
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Product:
    """A product cut-out: `rgb` (H, W, 3) uint8, `alpha` (H, W) uint8 (255 = product), `source`."""

    rgb: np.ndarray
    alpha: np.ndarray
    source: str


def product_from_arrays(rgb: np.ndarray, alpha: np.ndarray, source: str = "array") -> Product:
    """Validate and copy arrays into a `Product`.

    `rgb` is (H, W, 3) uint8, `alpha` (H, W) uint8 in 0..255 (255 = product). Raises `ProductError`
    for wrong types or shapes, an empty mask, a mask without background or a product of a few pixels.
    """
    return _validated(rgb, alpha, source, hint="")


def _validated(rgb: np.ndarray, alpha: np.ndarray, source: str, hint: str) -> Product:
    for name, arr, ndim in (("rgb", rgb, 3), ("alpha", alpha, 2)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != ndim:
            got = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            want = "(H, W, 3)" if name == "rgb" else "(H, W)"
            raise _error(source, f"{name} must be a uint8 array of shape {want}, got {got}",
                         "convert it, e.g. np.asarray(..., dtype=np.uint8)")
    if rgb.shape != alpha.shape + (3,):
        raise _error(source, f"rgb shape {rgb.shape} does not match alpha shape {alpha.shape}",
                     "give rgb as (H, W, 3) and alpha as (H, W) of the same image")
    height, width = alpha.shape
    if max(height, width) < MIN_PRODUCT_SIDE or height * width <= MIN_PRODUCT_PIXELS:
        raise _error(source, f"the image is too small: {width}x{height} px cannot hold a product "
                     f"({_MINIMUM}, with background around it)", "give a larger image of the product")
    _check_mask(alpha, source, hint)
    return Product(rgb=np.array(rgb, copy=True), alpha=np.array(alpha, copy=True), source=source)


def _check_mask(alpha: np.ndarray, source: str, hint: str) -> None:
    count = int(np.count_nonzero(alpha))
    if count == 0:
        raise _error(source, "the mask is empty: no product pixels (fully transparent, or all white)",
                     "give a cut-out with a visible product or a product on white" + hint)
    if count == alpha.size:
        raise _error(source, "no background: the product covers the whole image",
                     "give a cut-out with transparency or a product on white" + hint)
    x0, y0, x1, y1 = product_box(alpha)
    if max(x1 - x0, y1 - y0) < MIN_PRODUCT_SIDE or count < MIN_PRODUCT_PIXELS:
        raise _error(source, f"the product is too small: {count} product pixels in a {x1 - x0}x{y1 - y0} px box "
                     f"({_MINIMUM})", "give a larger image of the product")


def product_box(alpha: np.ndarray, threshold: int = 1) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1), end-exclusive, of the pixels with alpha >= `threshold` (default 1:
    every product pixel) in (H, W) `alpha`.

    Returns (0, 0, 0, 0) when no pixel reaches the threshold.
    """
    inside = alpha >= threshold
    rows = np.flatnonzero(np.any(inside, axis=1))
    cols = np.flatnonzero(np.any(inside, axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_product(path: str | os.PathLike, *, white_threshold: int = 250,
                 max_pixels: int = 40_000_000) -> Product:
    """Read a product image: an RGBA cut-out, or a product photographed on white.

    The alpha channel of a cut-out is used as is. An image without alpha (or with a fully opaque one,
    which carries no cut-out) is a product on white: alpha = 255 where any channel < `white_threshold`,
    then specks (8-connected groups under max(16, H*W/1e5) px) are dropped. Holes are not filled:
    as in the authors' script, white parts inside the product count as background.

    Palette, grayscale (L, LA, 1), 16-bit (I;16, I, 16-bit RGB/RGBA/LA PNG, scaled with rounding)
    and CMYK images are converted to 8-bit RGB; EXIF orientation is applied. Raises `ProductError`
    for a missing, unreadable, truncated or oversized (more than `max_pixels`) file, and for the
    mask problems `product_from_arrays` rejects.
    """
    _check_int("white_threshold", white_threshold, 1, 255, "use 1..255; 250 treats near-white as background")
    _check_int("max_pixels", max_pixels, 1, None, "give the largest width*height to accept")
    source = str(path)
    rgb, alpha = _read_image(Path(path), source, max_pixels)
    if alpha is not None and alpha.min() < 255:
        return _validated(rgb, alpha, source, hint="")
    hint = f" (without alpha, background must be white: every channel >= white_threshold={white_threshold})"
    alpha = alpha_from_white(rgb, white_threshold)
    if not alpha.any() and rgb.shape[0] * rgb.shape[1] > MIN_PRODUCT_PIXELS and np.any(rgb < white_threshold):
        # something is there, but only specks, which are dropped as noise: the product is too small
        raise _error(source, f"the product is too small: only specks under {_speck_area(rgb.shape[:2])} px "
                     f"differ from white ({_MINIMUM})", "give a larger image of the product" + hint)
    return _validated(rgb, alpha, source, hint=hint)


def alpha_from_white(rgb: np.ndarray, white_threshold: int = 250) -> np.ndarray:
    """Alpha (H, W) uint8 for a product on white: 255 where any channel of (H, W, 3) uint8 `rgb` is
    below `white_threshold`, minus specks smaller than max(16, H*W/1e5) px (JPEG noise, dust)."""
    fg = np.any(rgb < white_threshold, axis=2).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= _speck_area(fg.shape)
    keep[0] = False  # label 0 is the background
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def _speck_area(shape: tuple[int, ...]) -> int:
    """Connected groups of fewer pixels than this are specks on a product-on-white image."""
    return max(16, shape[0] * shape[1] // 100_000)


def _read_image(path: Path, source: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.exists():
        raise _error(source, "file not found", "check the path")
    if not path.is_file():
        raise _error(source, "not a file", "give the path of an image file (PNG, JPEG, WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise _error(source, f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels} "
                                 "(possible decompression bomb)", "downscale the image, or raise max_pixels if you trust it")
                deep = any(";16" in str(t.args) for t in im.tile) and not im.mode.startswith("I")
                im.load()  # decodes everything now, so a truncated file fails here
                im = ImageOps.exif_transpose(im)
                return _to_arrays(im, path if deep else None, source)
    except ProductError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _error(source, f"image too large, possible decompression bomb ({exc})",
                     "downscale the image before using it") from exc
    except Image.UnidentifiedImageError as exc:
        raise _error(source, "not an image file PIL can read", "give a PNG, JPEG or WebP image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _error(source, f"could not be decoded, the file is truncated or corrupt ({exc})",
                     "re-export or re-download the image") from exc


def _to_arrays(im: Image.Image, deep_path: Path | None, source: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) uint8 RGB and (H, W) uint8 alpha (None when the image has none) from a loaded image."""
    if deep_path is not None:
        decoded = _decode_16bit(deep_path, im.size)
        if decoded is not None:
            return decoded
    if im.mode.startswith("I"):
        values = np.asarray(im).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise _error(source, f"32-bit integer image with values {values.min()}..{values.max()} outside 0..65535",
                         "save it as an 8- or 16-bit image")
        gray = _16_to_8(values)
        return np.repeat(gray[..., None], 3, axis=2), None
    if im.mode == "F":
        raise _error(source, "32-bit float image: its value range is unknown", "save it as an 8- or 16-bit image")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(im.convert("RGB")), None


def _decode_16bit(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decode a 16-bit colour or gray+alpha file with OpenCV (PIL keeps only the high byte).

    Returns None when OpenCV cannot decode it the same way; the caller then uses PIL's 8-bit data.
    """
    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.shape[1::-1] != size:
        return None
    arr8 = _16_to_8(arr)
    if arr8.ndim == 2:
        return np.repeat(arr8[..., None], 3, axis=2), None
    rgb = np.ascontiguousarray(arr8[..., 2::-1])  # OpenCV decodes to BGR(A)
    return rgb, (np.ascontiguousarray(arr8[..., 3]) if arr8.shape[2] == 4 else None)


def _16_to_8(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 to 0..255 with rounding (65535 -> 255, 257*k -> k), not by dropping the low byte."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Placement on the canvas
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the source went: `box` (x0, y0, x1, y1, end-exclusive) in the source maps to the
    rectangle at `offset` (x, y) in the `size` x `size` canvas, scaled by `scale` (x, y)."""

    box: tuple[int, int, int, int]
    scale: tuple[float, float]
    offset: tuple[int, int]
    mode: PlacementMode
    size: int

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists), for run manifests."""
        return {"box": list(self.box), "scale": list(self.scale), "offset": list(self.offset),
                "mode": self.mode, "size": self.size}


@dataclass(frozen=True, eq=False)
class PlacedProduct:
    """A product on the (S, S) canvas.

    `image` (S, S, 3) uint8: the product composited on the background colour (the pipeline input).
    `alpha` (S, S) uint8: 255 = product, undilated. `rgb` (S, S, 3) uint8: the product's own colour,
    not mixed with the background (meaningful where alpha > 0; equal to `image` where alpha == 255),
    which `paste_back` blends with soft alpha.
    """

    image: np.ndarray
    alpha: np.ndarray
    placement: Placement
    rgb: np.ndarray = field(repr=False)


def place_product(product: Product, size: int, image_scale: float, *, keep_loc: bool = False,
                  background: tuple[int, int, int] = (255, 255, 255),
                  box_alpha_threshold: int = DEFAULT_BOX_ALPHA_THRESHOLD) -> PlacedProduct:
    """Place `product` on a `size` x `size` canvas filled with `background` (RGB 0..255).

    Default ("center"): crop to the product's bounding box, scale so its longer side is
    round(image_scale * size) px, keep the aspect ratio, centre it (offset rounded down).
    The box holds the pixels with alpha >= `box_alpha_threshold`: 128, the authors' rule, leaves a faint
    drop shadow out of it; 1 keeps every product pixel (faint shadows included). The crop is the only
    thing the threshold changes: pixels outside the box are cut off, those inside keep their alpha, so
    the inpainting mask, the canny edges and `paste_back` still blend the product's soft border (and
    the part of a shadow inside the box). A product with no pixel at the threshold (e.g. glass at
    alpha 100) is cropped to all its pixels.
    `keep_loc`: keep the original position: resize the whole image to size x size (the aspect
    ratio changes when the source is not square). Resizing uses INTER_AREA to shrink and
    INTER_CUBIC to enlarge, on premultiplied colour so the hidden colour under alpha = 0 never bleeds in.
    """
    _check_int("size", size, MIN_PRODUCT_SIDE, None, "the canvas is size x size px, 512 for SD1.5")
    _check_image_scale(image_scale)
    _check_int("box_alpha_threshold", box_alpha_threshold, 1, 255,
               "128 crops to the opaque product as the authors do; 1 keeps faint shadows in the box")
    bg = _check_background(background)
    height, width = product.alpha.shape
    if keep_loc:
        box, out_w, out_h, offset = (0, 0, width, height), size, size, (0, 0)
    else:
        box = product_box(product.alpha, box_alpha_threshold)
        if box[2] == box[0]:  # nothing reaches the threshold: every product pixel
            box = product_box(product.alpha)
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        longer = max(1, round(image_scale * size))
        factor = longer / max(box_w, box_h)
        out_w, out_h = max(1, round(box_w * factor)), max(1, round(box_h * factor))
        offset = ((size - out_w) // 2, (size - out_h) // 2)
    x0, y0, x1, y1 = box
    rgb, alpha = _resize_premultiplied(product.rgb[y0:y1, x0:x1], product.alpha[y0:y1, x0:x1], out_w, out_h)

    canvas_rgb = np.empty((size, size, 3), np.uint8)
    canvas_rgb[:] = bg
    canvas_alpha = np.zeros((size, size), np.uint8)
    ox, oy = offset
    canvas_rgb[oy:oy + out_h, ox:ox + out_w] = rgb
    canvas_alpha[oy:oy + out_h, ox:ox + out_w] = alpha
    placement = Placement(box=box, scale=(out_w / (x1 - x0), out_h / (y1 - y0)), offset=offset,
                          mode="keep_loc" if keep_loc else "center", size=size)
    image = _composite(canvas_rgb, canvas_alpha, np.asarray(bg, np.uint8))
    return PlacedProduct(image=image, alpha=canvas_alpha, placement=placement, rgb=canvas_rgb)


def _resize_premultiplied(rgb: np.ndarray, alpha: np.ndarray, out_w: int,
                          out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize (h, w, 3) uint8 colour and (h, w) uint8 alpha to (out_h, out_w); alpha stays in 0..255."""
    shrink = out_w <= rgb.shape[1] and out_h <= rgb.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    a = alpha.astype(np.float32) / 255.0
    premultiplied = cv2.resize(rgb.astype(np.float32) * a[..., None], (out_w, out_h), interpolation=interp)
    a = np.clip(cv2.resize(a, (out_w, out_h), interpolation=interp), 0.0, 1.0)
    colour = premultiplied / np.maximum(a, 1e-6)[..., None]
    colour = np.where(a[..., None] > 0, colour, 0.0)
    return (np.clip(np.rint(colour), 0, 255).astype(np.uint8),
            np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))


def _composite(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """fg over bg with (H, W) uint8 alpha; integer maths, so alpha 255 gives fg and 0 gives bg exactly."""
    a = alpha.astype(np.uint32)[..., None]
    out = (fg.astype(np.uint32) * a + bg.astype(np.uint32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Control image, inpainting mask, paste-back
# ----------------------------------------------------------------------------------------------


def canny_control(placed: PlacedProduct, low: int = 100, high: int = 200) -> np.ndarray:
    """ControlNet canny image (S, S, 3) uint8 in {0, 255}: edges of the product only.

    As in the authors' script the background is blacked out first (the product over black with its
    alpha), so the scene gets no edges and the product outline is an edge.
    """
    _check_canny(low, high)
    on_black = _composite(placed.rgb, placed.alpha, np.zeros(3, np.uint8))
    edges = cv2.Canny(on_black, low, high)
    return np.repeat(edges[..., None], 3, axis=2)


def dilation_kernel_px(size: int) -> int:
    """Default mask dilation kernel for a canvas of `size` px: round(20 * size / 512), at least 1."""
    return max(1, round(REFERENCE_KERNEL_PX * size / REFERENCE_SIZE))


def inpaint_mask(alpha: np.ndarray, *, kernel_px: int | None = None) -> np.ndarray:
    """Inpainting mask (H, W) uint8 from the placed (H, W) uint8 alpha: 255 = generate, 0 = keep.

    Rule: generate wherever alpha < 255 (255 - alpha, binarised), then dilate that region with a
    `kernel_px` x `kernel_px` square so the model may blend the product's border: the region to
    generate grows about kernel_px / 2 px into the product on every side (kernel_px - 1 in total
    across it). Default kernel: `dilation_kernel_px(max(H, W))` (20 px at 512). `paste_back` later
    restores the product with the undilated alpha.
    """
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.ndim != 2:
        got = f"{alpha.dtype} array of shape {alpha.shape}" if isinstance(alpha, np.ndarray) else type(alpha).__name__
        raise ValueError(f"alpha must be a (H, W) uint8 array, got {got}")
    if kernel_px is None:
        kernel_px = dilation_kernel_px(max(alpha.shape))
    _check_int("kernel_px", kernel_px, 0, None, "use 0 for no dilation, or None for the default")
    mask = np.where(alpha < 255, 255, 0).astype(np.uint8)
    if kernel_px > 1:
        mask = cv2.dilate(mask, np.ones((kernel_px, kernel_px), np.uint8))
    return mask


@dataclass(frozen=True, eq=False)
class PreparedProduct:
    """Everything the pipeline needs for one product on an (S, S) canvas.

    `placed`: the placed product (`image`, `alpha`, `placement` are shortcuts to it).
    `mask` (S, S) uint8: 255 = generate (dilated). `control` (S, S, 3) uint8: canny edges.
    """

    placed: PlacedProduct
    mask: np.ndarray
    control: np.ndarray

    @property
    def image(self) -> np.ndarray:
        return self.placed.image

    @property
    def alpha(self) -> np.ndarray:
        return self.placed.alpha

    @property
    def placement(self) -> Placement:
        return self.placed.placement


def paste_back(generated: np.ndarray, placed: PlacedProduct | PreparedProduct) -> np.ndarray:
    """Put the product back on a generated (S, S, 3) uint8 image with the undilated soft alpha.

    Returns (S, S, 3) uint8: exactly the product where alpha == 255, exactly `generated` where
    alpha == 0, blended in between.
    """
    if isinstance(placed, PreparedProduct):
        placed = placed.placed
    want = placed.rgb.shape
    if not isinstance(generated, np.ndarray) or generated.dtype != np.uint8 or generated.shape != want:
        got = f"{generated.dtype} array of shape {generated.shape}" if isinstance(generated, np.ndarray) \
            else type(generated).__name__
        raise ValueError(f"generated must be a uint8 array of shape {want}, got {got}; "
                         "convert the pipeline output with np.asarray(pil_image) at the canvas size")
    return _composite(placed.rgb, placed.alpha, generated)


def prepare_product(product: Product, size: int = 512, image_scale: float = 0.78, *, keep_loc: bool = False,
                    canny_low: int = 100, canny_high: int = 200, kernel_px: int | None = None,
                    box_alpha_threshold: int = DEFAULT_BOX_ALPHA_THRESHOLD) -> PreparedProduct:
    """Place the product and build its inpainting mask and canny control image.

    `box_alpha_threshold`: see `place_product` (128: the authors' crop; 1: keep faint shadows).

    Raises `ProductError` when the placed product's longer side is under 8 px (a tiny `image_scale`
    or, with `keep_loc`, a small product in a large image), ValueError for bad settings.
    """
    _check_canny(canny_low, canny_high)
    placed = place_product(product, size, image_scale, keep_loc=keep_loc, box_alpha_threshold=box_alpha_threshold)
    x0, y0, x1, y1 = product_box(placed.alpha)
    if max(x1 - x0, y1 - y0) < MIN_PRODUCT_SIDE:
        fix = "raise image_scale or size" + (", or turn keep_loc off" if keep_loc else "")
        raise _error(product.source, f"after placement (size={size}, image_scale={image_scale}, "
                     f"mode={placed.placement.mode}) the product is only {max(x1 - x0, y1 - y0)} px long "
                     f"(need >= {MIN_PRODUCT_SIDE})", fix)
    return PreparedProduct(placed=placed, mask=inpaint_mask(placed.alpha, kernel_px=kernel_px),
                           control=canny_control(placed, canny_low, canny_high))


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int | None, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}); {fix}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}; {fix}")


def _check_image_scale(image_scale: float) -> None:
    if isinstance(image_scale, bool) or not isinstance(image_scale, (int, float, np.floating, np.integer)):
        raise TypeError(f"image_scale must be a number, got {image_scale!r}")
    if not (math.isfinite(image_scale) and 0 < image_scale <= 1):
        raise ValueError(f"image_scale must be in (0, 1], got {image_scale!r}; it is the product's longer "
                         "side as a fraction of the canvas, 0.70-0.78 in the authors' presets")


def _check_background(background: tuple[int, int, int]) -> tuple[int, int, int]:
    values = tuple(background) if isinstance(background, (tuple, list)) else ()
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and 0 <= v <= 255 for v in values):
        raise ValueError(f"background must be an RGB triple of ints in 0..255, got {background!r}")
    return values  # type: ignore[return-value]


def _check_canny(low: int, high: int) -> None:
    _check_int("canny low threshold", low, 0, None, "the authors use low=100, high=200")
    _check_int("canny high threshold", high, 0, None, "the authors use low=100, high=200")
    if low > high:
        raise ValueError(f"canny thresholds need low <= high, got low={low}, high={high}; "
                         "the authors use low=100, high=200")
