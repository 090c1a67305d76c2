"""Product preparation: loading and conversion, placement geometry, control image, inpainting mask,
paste-back, and the errors every bad input must give."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from reliable_ad.data.product import PlacedProduct, Product, ProductError, alpha_from_white, canny_control, dilation_kernel_px, inpaint_mask, load_product, paste_back, place_product, prepare_product, product_box, product_from_arrays

REAL_PRODUCTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "products"


# ----------------------------------------------------------------------------------------------
# Helpers: synthetic products and hand-made PNGs
# ----------------------------------------------------------------------------------------------


def rect_product(h: int = 120, w: int = 160, box: tuple[int, int, int, int] = (30, 40, 130, 90),
                 seed: int = 0, hidden: tuple[int, int, int] | None = None) -> Product:
    """A textured rectangle `box` (x0, y0, x1, y1) with a soft 1-px border, on a transparent canvas."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if hidden is not None:
        rgb[:] = hidden
    x0, y0, x1, y1 = box
    rgb[y0:y1, x0:x1] = rng.integers(20, 230, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = 128
    alpha[y0:y1, x0:x1] = 255
    return product_from_arrays(rgb, alpha, source="rect")


def save_rgba(path: Path, product: Product) -> Path:
    Image.fromarray(np.dstack([product.rgb, product.alpha]), "RGBA").save(path)
    return path


def on_white(h: int = 100, w: int = 120, box: tuple[int, int, int, int] = (20, 30, 90, 80),
             colour: tuple[int, int, int] = (40, 90, 160)) -> np.ndarray:
    rgb = np.full((h, w, 3), 255, np.uint8)
    x0, y0, x1, y1 = box
    rgb[y0:y1, x0:x1] = colour
    return rgb


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: any header, `rows` already filtered (None: an empty IDAT)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png16(values: np.ndarray, colour_type: int) -> bytes:
    """16-bit PNG from (H, W) or (H, W, C) uint16 values in PNG channel order."""
    h, w = values.shape[:2]
    rows = b"".join(b"\x00" + values[i].astype(">u2").tobytes() for i in range(h))
    return png_bytes(w, h, 16, colour_type, rows)


def assert_error(path_or_call, *needles: str) -> str:
    with pytest.raises(ProductError) as info:
        path_or_call() if callable(path_or_call) else load_product(path_or_call)
    message = str(info.value)
    for needle in needles:
        assert needle.lower() in message.lower(), message
    return message


# ----------------------------------------------------------------------------------------------
# Loading and conversion
# ----------------------------------------------------------------------------------------------


def test_rgba_cutout_uses_its_alpha(tmp_path):
    product = rect_product()
    loaded = load_product(save_rgba(tmp_path / "cut.png", product))
    assert loaded.source == str(tmp_path / "cut.png")
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (120, 160, 3)
    np.testing.assert_array_equal(loaded.alpha, product.alpha)
    inside = product.alpha > 0
    np.testing.assert_array_equal(loaded.rgb[inside], product.rgb[inside])


def test_product_on_white_png_white_is_background_and_specks_dropped(tmp_path):
    rgb = on_white()
    rgb[5, 5] = (0, 0, 0)  # dust speck far from the product
    rgb[50, 50] = (252, 252, 252)  # near-white inside: background under threshold 250
    Image.fromarray(rgb).save(tmp_path / "white.png")
    loaded = load_product(tmp_path / "white.png")
    expected = np.zeros((100, 120), np.uint8)
    expected[30:80, 20:90] = 255
    expected[50, 50] = 0
    np.testing.assert_array_equal(loaded.alpha, expected)
    assert loaded.alpha[5, 5] == 0
    # the rule itself: any channel below the threshold is product
    assert alpha_from_white(on_white(colour=(255, 255, 249)))[50, 50] == 255
    assert alpha_from_white(on_white(colour=(255, 255, 250)), 250).max() == 0


def test_product_on_white_jpeg(tmp_path):
    Image.fromarray(on_white(200, 240, (40, 60, 180, 160))).save(tmp_path / "white.jpg", quality=90)
    alpha = load_product(tmp_path / "white.jpg").alpha
    assert set(np.unique(alpha)) <= {0, 255}
    # JPEG ringing may add a pixel or two around the edge, never more
    assert (alpha[62:158, 42:178] == 255).all()
    outside = np.ones_like(alpha, bool)
    outside[57:163, 37:183] = False
    assert (alpha[outside] == 0).all()


def test_fully_opaque_rgba_falls_back_to_white_background(tmp_path):
    rgba = np.dstack([on_white(), np.full((100, 120), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    alpha = load_product(tmp_path / "opaque.png").alpha
    assert alpha[50, 50] == 255 and alpha[5, 5] == 0


def test_16bit_grayscale_scaled_with_rounding(tmp_path):
    values = np.full((40, 40), 65535, np.uint16)
    values[0] = 65280  # 0xFF00: dropping the low byte gives 255, rounding gives 254 (still background)
    values[10:30, 10:30] = 25855  # 0x64FF: dropping the low byte gives 100, rounding gives 101
    values[12:20, 12:20] = 257 * 100
    values[20:28, 20:28] = 0
    (tmp_path / "g16.png").write_bytes(png16(values, colour_type=0))
    loaded = load_product(tmp_path / "g16.png")
    assert loaded.rgb[5, 5].tolist() == [255, 255, 255] and loaded.alpha[5, 5] == 0
    assert loaded.rgb[0, 5].tolist() == [254, 254, 254] and loaded.alpha[0, 5] == 0
    assert loaded.rgb[11, 11].tolist() == [101, 101, 101] and loaded.alpha[11, 11] == 255
    assert loaded.rgb[15, 15].tolist() == [100, 100, 100]
    assert loaded.rgb[25, 25].tolist() == [0, 0, 0]


def test_16bit_rgb_and_rgba_scaled_with_rounding(tmp_path):
    rgb16 = np.full((40, 40, 3), 65535, np.uint16)
    rgb16[10:30, 10:30] = (65280, 25855, 0)
    (tmp_path / "rgb16.png").write_bytes(png16(rgb16, colour_type=2))
    loaded = load_product(tmp_path / "rgb16.png")
    assert loaded.rgb[20, 20].tolist() == [254, 101, 0]
    assert loaded.rgb[0, 0].tolist() == [255, 255, 255] and loaded.alpha[0, 0] == 0

    rgba16 = np.zeros((40, 40, 4), np.uint16)
    rgba16[10:30, 10:30] = (65280, 25855, 65535, 65535)
    rgba16[9, 10:30, 3] = 257 * 128
    (tmp_path / "rgba16.png").write_bytes(png16(rgba16, colour_type=6))
    loaded = load_product(tmp_path / "rgba16.png")
    assert loaded.rgb[20, 20].tolist() == [254, 101, 255]
    assert loaded.alpha[20, 20] == 255 and loaded.alpha[9, 15] == 128 and loaded.alpha[0, 0] == 0


def test_16bit_gray_alpha(tmp_path):
    la16 = np.zeros((30, 30, 2), np.uint16)
    la16[5:25, 5:25] = (65280, 65535)
    (tmp_path / "la16.png").write_bytes(png16(la16, colour_type=4))
    loaded = load_product(tmp_path / "la16.png")
    assert loaded.rgb[10, 10].tolist() == [254, 254, 254] and loaded.alpha[10, 10] == 255
    assert loaded.alpha[0, 0] == 0


def test_palette_with_and_without_transparency(tmp_path):
    index = np.zeros((60, 60), np.uint8)
    index[10:50, 15:45] = 1
    palette = [0, 0, 0, 200, 30, 30] + [0] * (256 * 3 - 6)
    im = Image.fromarray(index, "P")
    im.putpalette(palette)
    im.save(tmp_path / "p_trans.png", transparency=0)
    loaded = load_product(tmp_path / "p_trans.png")
    assert loaded.alpha[30, 30] == 255 and loaded.alpha[0, 0] == 0
    assert loaded.rgb[30, 30].tolist() == [200, 30, 30]

    im.putpalette([255, 255, 255, 200, 30, 30] + [0] * (256 * 3 - 6))
    im.save(tmp_path / "p_white.gif")
    loaded = load_product(tmp_path / "p_white.gif")
    assert loaded.alpha[30, 30] == 255 and loaded.alpha[0, 0] == 0


def test_grayscale_l_and_la(tmp_path):
    gray = np.full((50, 50), 255, np.uint8)
    gray[10:40, 10:40] = 90
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    loaded = load_product(tmp_path / "l.png")
    assert loaded.rgb[20, 20].tolist() == [90, 90, 90] and loaded.alpha[20, 20] == 255 and loaded.alpha[0, 0] == 0

    a = np.where(gray < 255, 255, 0).astype(np.uint8)
    Image.fromarray(np.dstack([gray, a]), "LA").save(tmp_path / "la.png")
    loaded = load_product(tmp_path / "la.png")
    np.testing.assert_array_equal(loaded.alpha, a)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.fromarray(on_white(80, 80, (20, 20, 60, 60), colour=(200, 40, 40))).convert("CMYK").save(
        tmp_path / "cmyk.jpg", quality=95)
    loaded = load_product(tmp_path / "cmyk.jpg")
    assert loaded.rgb.shape == (80, 80, 3)
    assert np.abs(loaded.rgb[40, 40].astype(int) - [200, 40, 40]).max() < 30
    assert loaded.alpha[40, 40] == 255 and loaded.alpha[2, 2] == 0


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert_error(tmp_path / "nope.png", "nope.png", "not found")


def test_unreadable_bytes(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all" * 10)
    assert_error(tmp_path / "junk.png", "junk.png", "not an image")


def test_truncated_png(tmp_path):
    save_rgba(tmp_path / "full.png", rect_product())
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
    assert_error(tmp_path / "half.png", "half.png", "truncated")


def test_decompression_bomb_by_max_pixels(tmp_path):
    path = save_rgba(tmp_path / "big.png", rect_product())
    assert_error(lambda: load_product(path, max_pixels=1000), "big.png", "160x120", "max_pixels=1000")


def test_decompression_bomb_by_crafted_header(tmp_path):
    # a header claiming 7000x7000 (over our 40 M limit) with no data: must fail before decoding
    (tmp_path / "claims49m.png").write_bytes(png_bytes(7000, 7000, 8, 2))
    assert_error(tmp_path / "claims49m.png", "claims49m.png", "7000x7000", "bomb")
    # 100000x100000 trips PIL's own guard while opening
    (tmp_path / "claims10g.png").write_bytes(png_bytes(100_000, 100_000, 8, 2))
    assert_error(tmp_path / "claims10g.png", "claims10g.png", "bomb")


def test_empty_mask(tmp_path):
    Image.fromarray(np.full((50, 50, 3), 255, np.uint8)).save(tmp_path / "white.png")
    assert_error(tmp_path / "white.png", "white.png", "empty", "white_threshold=250")
    rgba = np.zeros((50, 50, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert_error(tmp_path / "clear.png", "clear.png", "empty")


def test_mask_covering_whole_image(tmp_path):
    Image.fromarray(np.full((50, 50, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    assert_error(tmp_path / "grey.png", "grey.png", "covers the whole image", "cut-out with transparency",
                 "product on white")
    rgb = np.zeros((50, 50, 3), np.uint8)
    assert_error(lambda: product_from_arrays(rgb, np.full((50, 50), 10, np.uint8)), "covers the whole image")


def test_tiny_product(tmp_path):
    rgb = on_white(100, 100, (40, 40, 45, 45))
    Image.fromarray(rgb).save(tmp_path / "dot.png")
    assert_error(tmp_path / "dot.png", "dot.png", "too small", "25 product pixels", "5x5")
    # a long thin line has a long side but too few pixels
    alpha = np.zeros((100, 100), np.uint8)
    alpha[50, 10:60] = 255
    assert_error(lambda: product_from_arrays(np.zeros((100, 100, 3), np.uint8), alpha), "50 product pixels", "50x1")


def test_product_from_arrays_rejects_bad_arrays():
    alpha = np.zeros((20, 20), np.uint8)
    alpha[5:15, 5:15] = 255
    assert_error(lambda: product_from_arrays(np.zeros((20, 20, 3), np.float32), alpha), "uint8", "float32")
    assert_error(lambda: product_from_arrays(np.zeros((20, 21, 3), np.uint8), alpha), "does not match")
    assert_error(lambda: product_from_arrays(np.zeros((20, 20, 3), np.uint8), alpha[..., None]), "alpha")
    product = product_from_arrays(np.zeros((20, 20, 3), np.uint8), alpha)
    alpha[:] = 0  # the product holds its own copy
    assert product.alpha.max() == 255


def test_loader_setting_validation(tmp_path):
    path = save_rgba(tmp_path / "cut.png", rect_product())
    with pytest.raises(ValueError, match="white_threshold.*300"):
        load_product(path, white_threshold=300)
    with pytest.raises(ValueError, match="max_pixels.*0"):
        load_product(path, max_pixels=0)


# ----------------------------------------------------------------------------------------------
# Placement
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,image_scale,box", [
    (128, 0.75, (30, 40, 130, 90)),   # wide, shrunk
    (256, 0.78, (60, 10, 90, 110)),   # tall, enlarged
    (512, 0.7, (30, 40, 130, 90)),
    (64, 1.0, (10, 10, 150, 110)),
])
def test_center_placement_geometry(size, image_scale, box):
    product = rect_product(box=box)
    placed = place_product(product, size, image_scale)
    assert placed.image.shape == (size, size, 3) and placed.image.dtype == np.uint8
    assert placed.alpha.shape == (size, size) and placed.alpha.dtype == np.uint8

    x0, y0, x1, y1 = product_box(product.alpha)  # includes the soft border
    px0, py0, px1, py1 = product_box(placed.alpha)
    w, h = px1 - px0, py1 - py0
    assert max(w, h) == round(image_scale * size)
    assert abs(w / h - (x1 - x0) / (y1 - y0)) < 0.05 * (x1 - x0) / (y1 - y0) + 2 / min(w, h)
    assert abs((px0 + px1) / 2 - size / 2) <= 1 and abs((py0 + py1) / 2 - size / 2) <= 1

    placement = placed.placement
    assert placement.box == (x0, y0, x1, y1) and placement.mode == "center" and placement.size == size
    assert placement.offset == (px0, py0)
    assert json.loads(json.dumps(placement.to_dict()))["box"] == list(placement.box)
    assert (placed.image[placed.alpha == 0] == 255).all()  # white background


def test_product_pixels_are_placed_exactly_without_resize():
    # box 100x50 + 1 px border -> 102x52; at size 128 and scale 102/128 there is no resampling
    product = rect_product()
    placed = place_product(product, 128, 102 / 128)
    assert placed.placement.scale == (1.0, 1.0)
    ox, oy = placed.placement.offset
    np.testing.assert_array_equal(placed.image[oy + 1:oy + 51, ox + 1:ox + 101], product.rgb[40:90, 30:130])


def test_hidden_colour_under_transparent_pixels_does_not_bleed():
    product = rect_product(hidden=(255, 0, 0), seed=1)
    rgb, alpha = product.rgb.copy(), product.alpha.copy()
    rgb[alpha > 0] = (0, 0, 200)
    alpha[55:75, 60:100] = 0  # a transparent hole inside the box, red underneath
    rgb[55:75, 60:100] = (255, 0, 0)
    blue = product_from_arrays(rgb, alpha)
    for size, scale in ((64, 0.9), (512, 0.9)):  # shrink and enlarge
        placed = place_product(blue, size, scale, background=(0, 0, 0))
        assert placed.image[..., 0].max() == 0 and placed.image[..., 2].max() > 0


def test_alpha_stays_in_range_and_opaque_inside_when_enlarged():
    placed = place_product(rect_product(), 512, 1.0)
    assert placed.alpha.dtype == np.uint8
    px0, py0, px1, py1 = product_box(placed.alpha)
    inner = placed.alpha[py0 + 8:py1 - 8, px0 + 8:px1 - 8]
    assert inner.size > 0 and (inner == 255).all()


def test_keep_loc_keeps_position():
    product = rect_product(h=100, w=200, box=(20, 30, 60, 70))
    placed = place_product(product, 100, 0.5, keep_loc=True)
    assert placed.placement.mode == "keep_loc" and placed.placement.box == (0, 0, 200, 100)
    assert placed.placement.scale == (0.5, 1.0) and placed.placement.offset == (0, 0)
    px0, py0, px1, py1 = product_box(placed.alpha >= 128)
    assert abs(px0 - 10) <= 1 and abs(px1 - 30) <= 1 and abs(py0 - 30) <= 1 and abs(py1 - 70) <= 1


@pytest.mark.parametrize("kwargs,needle", [
    ({"size": 4, "image_scale": 0.5}, "size.*4"),
    ({"size": 128, "image_scale": 0.0}, "image_scale.*0.0"),
    ({"size": 128, "image_scale": 1.5}, "image_scale.*1.5"),
    ({"size": 128, "image_scale": -0.2}, "image_scale.*-0.2"),
    ({"size": 128, "image_scale": float("nan")}, "image_scale.*nan"),
    ({"size": 128, "image_scale": 0.5, "background": (0, 0, 300)}, "background.*300"),
])
def test_placement_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        place_product(rect_product(), **kwargs)


# ----------------------------------------------------------------------------------------------
# Control image, mask, paste-back
# ----------------------------------------------------------------------------------------------


def test_canny_only_on_the_product_even_over_a_busy_hidden_background():
    product = rect_product(seed=3)  # random noise under alpha == 0: edges everywhere if not blacked out
    placed = place_product(product, 256, 0.8)
    control = canny_control(placed)
    assert control.shape == (256, 256, 3) and control.dtype == np.uint8
    assert (control[..., 0] == control[..., 1]).all() and (control[..., 0] == control[..., 2]).all()
    assert set(np.unique(control)) <= {0, 255}
    near = cv2.dilate((placed.alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert control[~near].max() == 0
    assert control[placed.alpha == 255].max() == 255  # texture inside gives edges


def test_canny_threshold_validation():
    placed = place_product(rect_product(), 64, 0.8)
    with pytest.raises(ValueError, match="low=200, high=100"):
        canny_control(placed, 200, 100)
    with pytest.raises(ValueError, match="-1"):
        canny_control(placed, -1, 100)


def test_inpaint_mask_semantics():
    alpha = np.zeros((64, 64), np.uint8)
    alpha[10:50, 10:50] = 255
    alpha[9, 10:50] = 100
    mask = inpaint_mask(alpha, kernel_px=1)  # no dilation
    np.testing.assert_array_equal(mask, np.where(alpha < 255, 255, 0))
    assert mask.dtype == np.uint8


@pytest.mark.parametrize("size,side", [(512, 200), (256, 100), (1024, 400)])
def test_inpaint_mask_dilation_scales_with_size(size, side):
    kernel = dilation_kernel_px(size)
    assert kernel == round(20 * size / 512)
    alpha = np.zeros((size, size), np.uint8)
    start = (size - side) // 2
    alpha[start:start + side, start:start + side] = 255
    mask = inpaint_mask(alpha)
    kept = mask == 0
    rows, cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    # the generate region grows into the product border: the kept square loses kernel - 1 px
    assert rows.size == side - (kernel - 1) and cols.size == side - (kernel - 1)
    assert (mask[alpha == 0] == 255).all()
    assert kernel in (10, 20, 40)


def test_inpaint_mask_kernel_floor_and_validation():
    assert dilation_kernel_px(8) == 1 and dilation_kernel_px(512) == 20
    with pytest.raises(ValueError, match="kernel_px.*-3"):
        inpaint_mask(np.zeros((8, 8), np.uint8), kernel_px=-3)
    with pytest.raises(ValueError, match="uint8"):
        inpaint_mask(np.zeros((8, 8), np.float32))


def test_paste_back_is_exact():
    placed = place_product(rect_product(), 128, 0.9)
    generated = np.random.default_rng(5).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = paste_back(generated, placed)
    opaque, clear = placed.alpha == 255, placed.alpha == 0
    soft = ~opaque & ~clear
    assert opaque.any() and clear.any() and soft.any()
    np.testing.assert_array_equal(out[opaque], placed.image[opaque])
    np.testing.assert_array_equal(out[clear], generated[clear])
    lo = np.minimum(placed.rgb, generated)[soft].astype(int)
    hi = np.maximum(placed.rgb, generated)[soft].astype(int)
    assert ((out[soft] >= lo) & (out[soft] <= hi)).all()
    with pytest.raises(ValueError, match=r"\(128, 128, 3\)"):
        paste_back(generated[:64], placed)


# ----------------------------------------------------------------------------------------------
# prepare_product
# ----------------------------------------------------------------------------------------------


def test_prepare_product_bundle_is_consistent_and_deterministic():
    product = rect_product()
    prepared = prepare_product(product, size=128, image_scale=0.78)
    again = prepare_product(product, size=128, image_scale=0.78)
    for name in ("image", "alpha", "mask", "control"):
        np.testing.assert_array_equal(getattr(prepared, name), getattr(again, name))
    np.testing.assert_array_equal(prepared.mask, inpaint_mask(prepared.alpha))
    np.testing.assert_array_equal(prepared.control, canny_control(prepared.placed))
    assert isinstance(prepared.placed, PlacedProduct) and prepared.placement.size == 128
    generated = np.zeros((128, 128, 3), np.uint8)
    np.testing.assert_array_equal(paste_back(generated, prepared), paste_back(generated, prepared.placed))


def test_prepare_product_rejects_a_product_too_small_after_placement():
    product = rect_product()
    assert_error(lambda: prepare_product(product, size=16, image_scale=0.3), "only 5 px", "image_scale")
    small = rect_product(h=400, w=400, box=(100, 100, 120, 110))
    assert_error(lambda: prepare_product(small, size=64, keep_loc=True), "keep_loc")


@pytest.mark.skipif(not REAL_PRODUCTS.is_dir(), reason=f"{REAL_PRODUCTS} not present")
@pytest.mark.parametrize("name", sorted(p.name for p in REAL_PRODUCTS.glob("*.png")) if REAL_PRODUCTS.is_dir() else [])
def test_real_products(name):
    product = load_product(REAL_PRODUCTS / name)
    prepared = prepare_product(product, size=512, image_scale=0.78)
    assert prepared.image.shape == (512, 512, 3) and prepared.control.shape == (512, 512, 3)
    assert prepared.mask.shape == (512, 512) and prepared.alpha.shape == (512, 512)
    x0, y0, x1, y1 = product_box(prepared.alpha)
    assert max(x1 - x0, y1 - y0) == round(0.78 * 512)
    assert (prepared.mask[prepared.alpha < 255] == 255).all()
    assert (prepared.mask == 0).any()
    near = cv2.dilate((prepared.alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert prepared.control[~near].max() == 0 and prepared.control.max() == 255
    generated = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = paste_back(generated, prepared)
    opaque = prepared.alpha == 255
    np.testing.assert_array_equal(out[opaque], prepared.image[opaque])
    np.testing.assert_array_equal(out[prepared.alpha == 0], generated[prepared.alpha == 0])
    json.dumps(prepared.placement.to_dict())


# ----------------------------------------------------------------------------------------------
# Regressions: faint shadows and tiny images
# ----------------------------------------------------------------------------------------------


def shadowed_product() -> Product:
    """An opaque 100x50 box (x 30..130, y 40..90) with a faint (alpha 40) drop shadow 20 px right and below."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(20, 230, (140, 180, 3), dtype=np.uint8)
    alpha = np.zeros((140, 180), np.uint8)
    alpha[50:110, 40:150] = 40  # the shadow, partly under the product
    alpha[40:90, 30:130] = 255
    return product_from_arrays(rgb, alpha, source="shadowed")


def test_faint_shadow_stays_out_of_the_box_unless_kept():
    from reliable_ad.generation.config import ProductConfig

    product = shadowed_product()
    placed = place_product(product, 128, 0.75)  # the authors' rule: the box of alpha >= 128
    assert placed.placement.box == (30, 40, 130, 90)
    x0, y0, x1, y1 = product_box(placed.alpha, 128)
    assert x1 - x0 == round(0.75 * 128)  # the opaque product gets the full scale
    assert product_box(placed.alpha) == (x0, y0, x1, y1)  # the shadow outside the box is cut off
    kept = place_product(product, 128, 0.75, box_alpha_threshold=1)  # 1: the shadow is part of the box
    assert kept.placement.box == (30, 40, 150, 110)
    kx0, _, kx1, _ = product_box(kept.alpha, 128)
    assert kx1 - kx0 < 0.85 * (x1 - x0)  # the product itself came out smaller
    prepared = prepare_product(product, 128, 0.75)
    assert prepared.placement.box == (30, 40, 130, 90)
    assert prepare_product(product, 128, 0.75, box_alpha_threshold=1).placement.box == (30, 40, 150, 110)
    # nothing at the threshold (a glassy product): the box holds every product pixel
    glassy = product_from_arrays(product.rgb, np.minimum(product.alpha, 100), source="glass")
    assert place_product(glassy, 128, 0.75).placement.box == (30, 40, 150, 110)
    with pytest.raises(ValueError, match="box_alpha_threshold must be in 1..255, got 0"):
        place_product(product, 128, 0.75, box_alpha_threshold=0)
    assert ProductConfig().box_alpha_threshold == 128
    with pytest.raises(ValueError, match=r"product.box_alpha_threshold=300 must be in 1..255"):
        ProductConfig(box_alpha_threshold=300)


@pytest.mark.parametrize("name,array", [
    ("one.png", np.full((1, 1, 3), 40, np.uint8)),  # 1x1, no alpha
    ("one_rgba.png", np.full((1, 1, 4), 255, np.uint8)),  # 1x1, opaque
    ("seven.png", np.full((7, 7, 4), (40, 40, 40, 255), np.uint8)),  # 7x7, opaque: "no background" before
])
def test_tiny_image_is_too_small_not_empty(tmp_path, name, array):
    Image.fromarray(array).save(tmp_path / name)
    message = assert_error(tmp_path / name, name, "too small", ">= 64 pixels", ">= 8 px", "larger image")
    assert "empty" not in message and "no background" not in message


def test_product_of_specks_on_white_is_too_small_not_empty(tmp_path):
    Image.fromarray(on_white(100, 100, (40, 40, 43, 43))).save(tmp_path / "speck.png")  # 3x3 px: a speck
    message = assert_error(tmp_path / "speck.png", "speck.png", "too small", "specks", ">= 64 pixels", "larger image")
    assert "empty" not in message
