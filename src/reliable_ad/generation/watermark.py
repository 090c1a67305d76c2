"""Invisible watermark: a fixed 48-bit reliable-ad payload hidden in an image's luma (DWT-DCT).

Unlike the PNG label and the C2PA manifest, it lives in the pixels, so it can outlast a re-save or a
screenshot. Method: one-level Haar DWT of the luma; the LL band is cut into 4 x 4 blocks (2 x 2 below
256 px), and the DC term of each block's DCT is quantised to one of two lattices (quantisation index
modulation) to carry one bit. That DC is proportional to the mean luma of the 8 x 8 (4 x 4) pixel block,
so it is computed as that mean: low frequency, hence robust to JPEG and resizing. The bits are laid out
in a 7 x 7 tile of blocks repeated over the image, each bit in many tiles; the detector searches the
tile's phase, the grid's pixel offset and the block size (about 5,000 hypotheses), so a crop or a
resize still reads; 44 of 48 bits must match, which chance gives an unmarked image with p < 1e-5.
Only the payload is needed to detect it; there is no key (it marks, it does not authenticate).

Product pixels stay exact by default: the caller passes the product's alpha and every pixel with
alpha > 0 is restored after embedding (docs: README "Provenance"). Why our own code and not the
`invisible-watermark` package: see docs/benchmarks.md, "Provenance: watermark robustness".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAYLOAD_VERSION = 1
PAYLOAD = b"RelAd" + bytes([PAYLOAD_VERSION])  # 48 bits: "reliable-ad", payload format version 1
BITS = np.unpackbits(np.frombuffer(PAYLOAD, np.uint8)).astype(np.int8)
TILE = 7  # blocks per side of the repeated bit layout (49 cells: 48 bits and one spare)
_CELL_BIT = np.random.default_rng(0x5EED).permutation(TILE * TILE)  # cell -> bit; 48 = the spare cell
# QIM step on the block's mean luma (the block DC in pixel units), by block side: the mean moves by at most
# half a step; small images get a coarser step, as each bit has fewer blocks
MEAN_STEP = {8: 3.0, 4: 6.0}
DETECT_MIN_BITS = 44  # of 48: a random image matches this well with p < 1e-9 per hypothesis searched
MIN_SIDE = 32  # smaller images carry too few blocks


@dataclass
class WatermarkReading:
    """What the detector found: ``found`` when ``matched`` of the 48 payload bits agree (>= 44)."""

    found: bool
    matched: int
    bit_accuracy: float
    block_px: int | None = None  # the grid it was read at (8, 4 or 2 px blocks)
    offset: tuple[int, int] | None = None  # (y, x) pixel offset of the grid: non-zero after a crop

    def to_dict(self) -> dict:
        return {"found": self.found, "matched": self.matched, "bits": len(BITS),
                "bit_accuracy": round(self.bit_accuracy, 4), "block_px": self.block_px,
                "offset": list(self.offset) if self.offset else None}


def block_px(height: int, width: int) -> int:
    """Pixels per block side: 8 (LL blocks of 4) from 256 px on, 4 below (64 px SynthAd images)."""
    return 8 if min(height, width) >= 256 else 4


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _block_dc(y: np.ndarray, px: int) -> np.ndarray:
    """The DC of the DCT of each (px/2)^2 block of the Haar LL band of ``y``, in pixel units: (rows, cols).

    Orthonormal Haar LL = 2 x the 2 x 2 mean; an orthonormal n x n DCT's DC = n x the block mean; so the
    DC is px x the mean of the px x px pixel block: computed as that mean, without the transforms."""
    rows, cols = y.shape[0] // px, y.shape[1] // px
    blocks = y[: rows * px, : cols * px].reshape(rows, px, cols, px)
    return blocks.mean(axis=(1, 3))


def _bit_index(rows: int, cols: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    r = (np.arange(rows)[:, None] + phase[0]) % TILE
    c = (np.arange(cols)[None, :] + phase[1]) % TILE
    return _CELL_BIT[r * TILE + c]


def embed(rgb: np.ndarray, product_alpha: np.ndarray | None = None) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with the payload embedded; pixels where ``product_alpha`` (H, W) > 0 are
    returned exactly as given (pass None to mark every pixel). Raises ValueError for a bad input."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"watermark.embed needs an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"image {w}x{h} is too small to watermark (needs >= {MIN_SIDE} px a side); "
                         "pass --no-watermark")
    if product_alpha is not None and np.shape(product_alpha) != (h, w):
        raise ValueError(f"product_alpha of shape {np.shape(product_alpha)} does not match the image {w}x{h}")
    px = block_px(h, w)
    step = MEAN_STEP[px]
    dc = _block_dc(_luma(rgb), px)
    bits = BITS[np.minimum(_bit_index(*dc.shape), len(BITS) - 1)]
    spare = _bit_index(*dc.shape) == len(BITS)
    # QIM: bit b sits at (k + 1/4 + b/2) * step; move each block mean to the nearest point of its lattice
    target = (np.floor(dc / step - 0.25 - 0.5 * bits + 0.5) + 0.25 + 0.5 * bits) * step
    delta_mean = np.where(spare, 0.0, target - dc)
    shift = np.zeros((h, w))
    rows, cols = dc.shape
    shift[: rows * px, : cols * px] = np.repeat(np.repeat(delta_mean, px, axis=0), px, axis=1)
    # equal change of R, G and B changes the luma by exactly that amount (the weights sum to 1)
    out = np.clip(np.rint(rgb.astype(np.float64) + shift[..., None]), 0, 255).astype(np.uint8)
    if product_alpha is not None:
        keep = np.asarray(product_alpha) > 0
        out[keep] = rgb[keep]
    return out


def _soft_bits(dc: np.ndarray, step: float) -> np.ndarray:
    """Per block: +1 at the bit-1 lattice, -1 at the bit-0 lattice, ~0 for an unmarked block on average."""
    return -np.sin(2 * np.pi * (dc / step))


def _grids(height: int, width: int) -> list[tuple[int, float]]:
    """(block side, step) pairs to read at: as embedded at this size, then as embedded at twice the size
    and scaled down by half (a 512 px image shown at 256 px)."""
    own = block_px(height, width)
    return [(own, MEAN_STEP[own])] + [(px // 2, MEAN_STEP[px]) for px in (8, 4)] + \
        [(px, MEAN_STEP[px]) for px in (8, 4) if px != own]


def detect(rgb: np.ndarray, *, search: bool = True) -> WatermarkReading:
    """Look for the payload in ``rgb`` (H, W, 3) uint8 (any mode PIL gives, converted by the caller).

    Tries the grids of `_grids` (a resized image reads at another block size), and with ``search`` every
    pixel offset of the grid and phase of the tile (a crop moves both); keeps the reading that matches
    the payload best."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or min(rgb.shape[:2]) < MIN_SIDE:
        return WatermarkReading(False, 0, 0.0)
    y = _luma(rgb)
    best = WatermarkReading(False, -1, 0.0)
    for px, step in _grids(*y.shape):
        offsets = [(dy, dx) for dy in range(px) for dx in range(px)] if search else [(0, 0)]
        for oy, ox in offsets:
            soft = _soft_bits(_block_dc(y[oy:, ox:], px), step)
            rows, cols = soft.shape
            if rows < 2 or cols < 2:
                continue
            phases = [(a, b) for a in range(TILE) for b in range(TILE)] if search else [(0, 0)]
            for phase in phases:
                sums = np.bincount(_bit_index(rows, cols, phase).ravel(), soft.ravel(), len(BITS) + 1)[:-1]
                matched = int(((sums > 0).astype(np.int8) == BITS).sum())
                if matched > best.matched:
                    best = WatermarkReading(matched >= DETECT_MIN_BITS, matched, matched / len(BITS), px, (oy, ox))
                    if matched == len(BITS):
                        return best
    return best
