"""Provenance: how well the invisible watermark survives common edits, what it costs, and C2PA signing time.

    python benchmarks/watermark.py [--images 6] [--repeats 20] [--unmarked 100]

Images at the two sizes we produce. 512 px (SD1.5): the product photos of the test data beside the
repository (as tests/conftest.py finds them; SynthAd products when absent), placed as `generate` places
them, on SynthAd rooms (rendered at 128 px, enlarged, plus camera-like noise). 64 px: SynthAd scenes (the
`--model synthad` world). The watermark is embedded as `generate` does by default (product pixels
restored). For each edit: the share of images where it is found, and the mean share of the 48 payload
bits read correctly; "unmarked" is the same read on the images before marking (what the detector's
search finds by chance; found must stay 0), and `--unmarked` more unmarked scenes count false positives.
PSNR is over the whole image and over the background only (the product is untouched).
With `invisible-watermark` installed (`pip install --no-deps invisible-watermark PyWavelets`), its
dwtDct is measured beside ours at 512 px (it refuses images under 256 x 256).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_PRODUCTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "products"


def _jpeg(x: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _half(x: np.ndarray, back: bool) -> np.ndarray:
    h, w = x.shape[:2]
    small = Image.fromarray(x).resize((w // 2, h // 2), Image.BICUBIC)
    return np.asarray(small.resize((w, h), Image.BICUBIC) if back else small)


def _crop(x: np.ndarray) -> np.ndarray:
    """10 % of each side off, split unevenly between the edges (a grid shift the detector must find)."""
    h, w = x.shape[:2]
    top, left = h // 30 + 1, w // 15 + 3
    return x[top: top + h - h // 10, left: left + w - w // 10]


ATTACKS = {
    "none": lambda x: x,
    "JPEG q75": _jpeg,
    "resize 0.5x, back": lambda x: _half(x, True),
    "resize 0.5x, kept": lambda x: _half(x, False),
    "crop 10%": _crop,
}


def images_512(n: int):
    """(image, product alpha) pairs: product photos placed as `generate` does, on SynthAd rooms."""
    from reliable_ad.data.product import load_product, paste_back, prepare_product
    from reliable_ad.synthad.dataset import render_item
    from reliable_ad.synthad.products import sample_product

    paths = sorted(SHARED_PRODUCTS.glob("product_*.png"))[:n]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        # SynthAd renders up to 128 px: its room, enlarged, with camera-like noise (sigma 3) as the background
        scene = render_item(sample_product(i), i, 0, 0, size=128).scene
        room = np.asarray(Image.fromarray(scene.background).resize((512, 512), Image.BICUBIC), np.float64)
        room = np.clip(room + rng.normal(0, 3, room.shape), 0, 255).astype(np.uint8)
        product = load_product(paths[i]) if i < len(paths) else sample_product(i, height_px=384).to_product()
        prepared = prepare_product(product, size=512, image_scale=0.75)
        out.append((paste_back(room, prepared), prepared.alpha))
    return out


def images_64(n: int):
    from reliable_ad.synthad.dataset import generate_scenes

    return [(item.scene.image, item.scene.product_alpha) for item in generate_scenes(n, seed=3, size=64)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255 ** 2 / mse) if mse > 0 else float("inf")


def measure(pairs, embed, detect) -> dict:
    """Per edit: (found share, mean bit accuracy); PSNR whole / background; mean embed and detect ms."""
    rows: dict[str, list] = {name: [] for name in [*ATTACKS, "unmarked"]}
    psnr_all, psnr_bg, t_embed, t_detect = [], [], [], []
    for image, alpha in pairs:
        t0 = time.perf_counter()
        marked = embed(image, alpha)
        t_embed.append(time.perf_counter() - t0)
        psnr_all.append(_psnr(marked, image))
        psnr_bg.append(_psnr(marked[alpha == 0], image[alpha == 0]))
        for name, attack in ATTACKS.items():
            t0 = time.perf_counter()
            rows[name].append(detect(attack(marked)))
            t_detect.append(time.perf_counter() - t0)
        rows["unmarked"].append(detect(image))
    table = {name: (np.mean([f for f, _ in r]), np.mean([a for _, a in r])) for name, r in rows.items()}
    return {"rows": table, "psnr": (np.mean(psnr_all), np.mean(psnr_bg)),
            "ms": (1000 * np.mean(t_embed), 1000 * np.mean(t_detect))}


def ours_threshold() -> int:
    from reliable_ad.generation import watermark

    return watermark.DETECT_MIN_BITS


def ours():
    from reliable_ad.generation import watermark

    def detect(x):
        r = watermark.detect(x)
        return r.found, r.bit_accuracy

    return watermark.embed, detect


def imwatermark_dwtdct():
    """The `invisible-watermark` package's dwtDct with our payload (None when it is not installed)."""
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError:
        return None
    from reliable_ad.generation import watermark

    encoder = WatermarkEncoder()
    encoder.set_watermark("bytes", watermark.PAYLOAD)
    decoder = WatermarkDecoder("bytes", len(watermark.BITS))

    def embed(image, alpha):
        marked = encoder.encode(np.ascontiguousarray(image[..., ::-1]), "dwtDct")[..., ::-1].copy()
        marked[alpha > 0] = image[alpha > 0]
        return marked

    def detect(x):
        if min(x.shape[:2]) < 256:
            return False, float("nan")  # it refuses images under 256 x 256
        got = np.unpackbits(np.frombuffer(decoder.decode(np.ascontiguousarray(x[..., ::-1]), "dwtDct"), np.uint8))
        matched = int((got[: len(watermark.BITS)] == watermark.BITS).sum())
        return matched >= watermark.DETECT_MIN_BITS, matched / len(watermark.BITS)

    return embed, detect


def false_positives(n: int) -> dict[int, tuple[int, int]]:
    """Per size: (images the detector calls marked, most payload bits matched) over ``n`` unmarked SynthAd
    scenes (512 px: the same scenes enlarged, with camera-like noise)."""
    from reliable_ad.generation import watermark
    from reliable_ad.synthad.dataset import generate_scenes

    rng = np.random.default_rng(1)
    out = {}
    scenes = [item.scene.image for item in generate_scenes(n, seed=11, size=128)]
    for size in (512, 64):
        readings = []
        for image in scenes:
            x = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), np.float64)
            readings.append(watermark.detect(np.clip(x + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8)))
        out[size] = (sum(r.found for r in readings), max(r.matched for r in readings))
    return out


def signing_ms(pairs, repeats: int) -> float:
    """Median ms to sign one labelled PNG with the development identity (encoding excluded)."""
    from reliable_ad.generation.c2pa_sign import C2paSigner, development_identity
    from reliable_ad.generation.provenance import png_bytes_with_label

    signer = C2paSigner(development_identity())
    times = []
    for k in range(repeats):
        png = png_bytes_with_label(pairs[k % len(pairs)][0], {"seed": k})
        t0 = time.perf_counter()
        signer.sign_png(png, "bench.png", {"seed": k, "model": {"preset": "bench"}})
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _print(title: str, result: dict, n: int) -> None:
    print(f"\n{title} ({n} images): PSNR {result['psnr'][0]:.1f} dB whole, {result['psnr'][1]:.1f} dB background; "
          f"embed {result['ms'][0]:.1f} ms, detect {result['ms'][1]:.1f} ms per image")
    print("| edit | found | bit accuracy |\n|---|---|---|")
    for name, (found, acc) in result["rows"].items():
        print(f"| {name} | {100 * found:.0f} % | {100 * acc:.1f} % |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6, help="images per size")
    ap.add_argument("--repeats", type=int, default=20, help="C2PA signatures timed per size")
    ap.add_argument("--unmarked", type=int, default=100, help="unmarked images read for false positives")
    args = ap.parse_args()

    sets = {512: images_512(args.images), 64: images_64(args.images)}
    for size, pairs in sets.items():
        _print(f"ours, {size} px", measure(pairs, *ours()), len(pairs))
    other = imwatermark_dwtdct()
    if other is not None:
        _print("invisible-watermark dwtDct, 512 px", measure(sets[512], *other), len(sets[512]))
    for size, (hits, most) in false_positives(args.unmarked).items():
        print(f"\nunmarked, {size} px: {hits}/{args.unmarked} called marked; at most {most}/48 bits matched "
              f"(threshold {ours_threshold()})")
    for size, pairs in sets.items():
        print(f"\nC2PA signing, {size} px: {signing_ms(pairs, args.repeats):.1f} ms per image (median of {args.repeats})")


if __name__ == "__main__":
    main()
