"""Shared pieces of the RFFT run tests: a product folder, an analytic judge, a tiny config."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from PIL import Image

from conftest import make_product_rgba
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.rfft.config import DataConfig, OptimConfig, RFFTConfig, RuntimeConfig, ValidationConfig

SIZE = 64


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rfft-run-products")
    for i, color in enumerate([(200, 40, 40), (40, 90, 200), (30, 160, 60), (150, 120, 20)]):
        Image.fromarray(make_product_rgba(96, color, seed=i), "RGBA").save(folder / f"p{i}.png")
    return folder


def judge(ads01, product01, captions):
    """Analytic: "available" = a bright image."""
    return F.logsigmoid(20 * (ads01.mean(dim=(1, 2, 3)) - 0.46))


def config(products, *, max_steps=4, **sections) -> RFFTConfig:
    base = dict(
        model=ModelConfig(model="tiny", safety_checker=False),
        sampling=SamplingConfig(size=SIZE, num_inference_steps=4, batch_size=4),
        rf_interval=(2, 4),
        data=DataConfig(products=[str(products)], validation_fraction=0.5),
        optim=OptimConfig(learning_rate=1e-2, batch_size=2, gradient_accumulation_steps=2, max_steps=max_steps),
        validation=ValidationConfig(every=0, num_products=2, images_per_product=2),
        runtime=RuntimeConfig(device="cpu", checkpoint_every=1, keep_checkpoints=2, tensorboard=False),
    )
    base.update(sections)
    return RFFTConfig(**base)
