"""RFFT exports loaded into the generator, and `reliable-ad rfft train` end to end."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml

from conftest import make_product_rgba
from reliable_ad.cli.main import main
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.data.product import prepare_product, product_from_arrays
from reliable_ad.rfft.config import TrainableConfig
from reliable_ad.rfft.trainer import RFFTTrainer
from rfft_helpers import SIZE, config, judge, products  # noqa: F401 - products is a fixture


def _generate(controlnet: str | None, lora: str | None = None) -> np.ndarray:
    model = ModelConfig(model="tiny", controlnet=controlnet, lora=lora, lora_scale=1.0, safety_checker=False)
    gen = AdGenerator.from_config(model, SamplingConfig(size=SIZE, num_inference_steps=4))
    rgba = make_product_rgba(96, (200, 40, 40))
    prepared = prepare_product(product_from_arrays(rgba[..., :3], rgba[..., 3]), size=SIZE, image_scale=0.75)
    return gen.generate([GenerationJob(prepared, "a bottle on a table", "", seed=11)])[0].image


def test_exported_controlnet_and_unet_lora_load_into_the_generator(products, model_home, tmp_path):
    trainer = RFFTTrainer.from_config(config(products, max_steps=2), tmp_path / "cn", judge=judge)
    summary = trainer.train()
    folder = summary.exported["controlnet"]
    from diffusers import ControlNetModel

    loaded = ControlNetModel.from_pretrained(folder)
    student = trainer.trainable.modules["controlnet"]
    assert all(torch.equal(p, q) for p, q in zip(loaded.state_dict().values(), student.state_dict().values()))
    original = _generate(None)
    assert np.abs(_generate(folder).astype(int) - original.astype(int)).max() > 0

    # LoRA: the adapters, the ControlNet with its adapter merged, and the UNet's in diffusers' LoRA format
    lora = TrainableConfig(target="lora", lora_modules=["controlnet", "unet"], lora_rank=4)
    lora_cfg = config(products, max_steps=2, trainable=lora)
    summary = RFFTTrainer.from_config(lora_cfg, tmp_path / "lora", judge=judge).train()
    assert set(summary.exported) == {"lora/controlnet", "controlnet", "lora/unet"}
    merged = ControlNetModel.from_pretrained(summary.exported["controlnet"])
    assert not any("lora" in k for k in merged.state_dict())
    tuned = _generate(summary.exported["controlnet"], lora=summary.exported["lora/unet"])
    assert np.abs(tuned.astype(int) - original.astype(int)).max() > 0


def test_cli_trains_with_a_tiny_rfnet_and_writes_what_it_promises(products, model_home, tmp_path, capsys):
    cfg = {
        "model": {"model": "tiny", "safety_checker": False},
        "sampling": {"size": SIZE, "num_inference_steps": 4, "batch_size": 4},
        "rf_interval": [2, 4],
        "data": {"products": [str(products)], "validation_fraction": 0.5},
        "feedback": {"rfnet": "tiny", "depth": "tiny", "salience": "fine-grained"},
        "optim": {"batch_size": 1, "gradient_accumulation_steps": 1, "max_steps": 1},
        "validation": {"every": 1, "num_products": 1, "images_per_product": 2},
        "runtime": {"device": "cpu", "tensorboard": False},
    }
    path = tmp_path / "rfft.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["rfft", "train", "--config", str(path), "--out", str(out), "--no-progress",
                 "--learning-rate", "1e-4"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert written["optim"]["learning_rate"] == 1e-4 and written["feedback"]["rfnet"] == "tiny"
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["validation", "train", "validation"]
    assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert (out / "export" / "controlnet" / "config.json").is_file()
    assert (out / "validation" / "step_0000001.png").is_file()
    assert "1 step(s) done" in capsys.readouterr().err
    # usage errors exit 2 and say what to fix
    assert main(["rfft", "train", "--config", str(path), "--out", str(out), "--max-steps", "0"]) == 2
    assert "optim.max_steps=0 must be an int >= 1" in capsys.readouterr().err
    assert main(["rfft"]) == 2
