"""Shared fixtures: everything offline, tiny real components built from configs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_PRODUCTS = SHARED / "data" / "products"


@pytest.fixture(scope="session")
def model_home(tmp_path_factory) -> Path:
    """A private model cache, so tests never touch the user's ~/.cache and always build fresh."""
    home = tmp_path_factory.mktemp("reliable-ad-home")
    os.environ["RELIABLE_AD_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_checkpoint(model_home) -> tuple[Path, Path]:
    from reliable_ad.generation.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(model_home / "models")


def make_product_rgba(size: int = 96, color=(200, 40, 40), seed: int = 0) -> np.ndarray:
    """A synthetic cut-out: a shaded rounded bottle shape on transparent background, (H, W, 4) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    body = (np.abs(xx - size / 2) < size * 0.18) & (yy > size * 0.3) & (yy < size * 0.9)
    neck = (np.abs(xx - size / 2) < size * 0.07) & (yy > size * 0.12) & (yy <= size * 0.3)
    mask = body | neck
    shade = (0.7 + 0.3 * (1 - np.abs(xx - size / 2) / (size / 2)))[..., None]
    rgb = np.clip(np.array(color)[None, None, :] * shade + rng.normal(0, 3, (size, size, 3)), 0, 255)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = rgb.astype(np.uint8)
    rgba[..., 3] = np.where(mask, 255, 0)
    return rgba


@pytest.fixture
def product_files(tmp_path) -> list[Path]:
    from PIL import Image

    paths = []
    for i, color in enumerate([(200, 40, 40), (40, 90, 200), (30, 160, 60)]):
        p = tmp_path / "products" / f"prod_{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(make_product_rgba(96 + 16 * i, color, seed=i), "RGBA").save(p)
        p.with_suffix(".txt").write_text(f"a {['red', 'blue', 'green'][i]} bottle", encoding="utf-8")
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    toy models gain nothing from intra-op threads, and on a busy 2-core runner a second one spin-waits
    and slows them down several times."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
