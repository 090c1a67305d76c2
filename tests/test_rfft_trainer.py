"""The RFFT step on tiny models: what trains and what stays frozen, learning from an analytic judge,
the alternative regularisers, and config validation."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import make_product_rgba
from reliable_ad.core.config import from_dict
from reliable_ad.generation.config import ModelConfig, SamplingConfig
from reliable_ad.rfft.config import (
    DataConfig,
    LossConfig,
    OptimConfig,
    RFFTConfig,
    RuntimeConfig,
    TrainableConfig,
    ValidationConfig,
)
from reliable_ad.rfft.trainer import RFFTTrainer, build_optimizer

COLORS = [(200, 40, 40), (40, 90, 200), (30, 160, 60), (150, 120, 20)]


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rfft-products")
    for i, color in enumerate(COLORS):
        Image.fromarray(make_product_rgba(96, color, seed=i), "RGBA").save(folder / f"p{i}.png")
        (folder / f"p{i}.txt").write_text(f"bottle {i}", encoding="utf-8")
    return folder


def brightness_judge(threshold: float = 0.5):
    """An analytic judge: "available" = a bright image; log p(Available) = logsigmoid(20 (mean - threshold))."""
    def judge(ads01, product01, captions):
        assert ads01.min() >= 0 and ads01.max() <= 1  # the judge gets [0, 1] images, never a [-1, 1] decode
        assert len(captions) == ads01.shape[0] == product01.shape[0]
        return F.logsigmoid(20 * (ads01.mean(dim=(1, 2, 3)) - threshold))
    return judge


def make_config(products, **sections) -> RFFTConfig:
    base = dict(
        model=ModelConfig(model="tiny", safety_checker=False),
        sampling=SamplingConfig(size=64, num_inference_steps=8, batch_size=4),
        rf_interval=(6, 8),
        data=DataConfig(products=[str(products)], validation_fraction=0.5),
        optim=OptimConfig(learning_rate=1e-3, batch_size=2, gradient_accumulation_steps=1, max_steps=2,
                          weight_decay=0.0),
        validation=ValidationConfig(every=0, num_products=2, images_per_product=2),
        runtime=RuntimeConfig(device="cpu", checkpoint_every=0, tensorboard=False),
    )
    base.update(sections)
    return RFFTConfig(**base)


def _frozen_snapshot(trainer) -> dict[str, torch.Tensor]:
    trainable = {id(p) for p in trainer.trainable.parameters()}
    pipe = trainer.pipe
    modules = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "controlnet": pipe.controlnet}
    if trainer.trainable.teacher.controlnet is not pipe.controlnet:
        modules["teacher"] = trainer.trainable.teacher.controlnet
    return {f"{m}.{n}": p.detach().clone() for m, module in modules.items()
            for n, p in module.named_parameters() if id(p) not in trainable}


@pytest.mark.parametrize("target,model,lora_modules", [
    ("controlnet", "tiny", ["controlnet"]),
    ("lora", "tiny-inpaint", ["controlnet", "unet"]),
])
def test_two_steps_change_every_trainable_and_no_frozen_parameter(products, model_home, target, model, lora_modules):
    cfg = make_config(products, model=ModelConfig(model=model, safety_checker=False),
                      trainable=TrainableConfig(target=target, lora_modules=lora_modules, lora_rank=4))
    trainer = RFFTTrainer.from_config(cfg, model_home / f"run-{target}", judge=brightness_judge())
    named = dict(trainer.trainable.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    frozen = _frozen_snapshot(trainer)
    trainable_ids = {id(p) for p in named.values()}
    pipe = trainer.pipe
    every = [pipe.unet, pipe.vae, pipe.text_encoder, pipe.controlnet, trainer.trainable.teacher.controlnet]
    assert all(not p.requires_grad for m in every for p in m.parameters() if id(p) not in trainable_ids)
    assert frozen and pipe.vae in trainer.trainable.frozen and pipe.text_encoder in trainer.trainable.frozen
    if target == "lora":
        assert set(lora_modules) == set(trainer.trainable.modules) and all("lora_" in n for n in named)

    got_gradient: set[str] = set()
    for micro in range(2):
        trainer.training_step(micro)
        nonzero = {n for n, p in named.items() if p.grad is not None and float(p.grad.abs().sum()) > 0}
        assert all(torch.isfinite(p.grad).all() for p in named.values() if p.grad is not None)
        if micro == 0 and target == "controlnet":
            # the tiny preset perturbs the ControlNet's zero convolutions, so every weight learns at once
            assert nonzero == set(named)
        got_gradient |= nonzero
        trainer.optimizer_step()
    # LoRA's B starts at zero, so its A matrices first get gradient on the second step
    assert got_gradient == set(named)
    unchanged = [n for n, p in named.items() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
    now = _frozen_snapshot(trainer)
    moved = [n for n, p in frozen.items() if not torch.equal(p, now[n])]
    assert moved == []


def test_analytic_judge_loss_falls_and_acceptance_rises(products, model_home):
    # the tiny model's ads average ~0.42 brightness; the judge wants > 0.46. L_CC (the default) is on.
    judge = brightness_judge(0.46)
    cfg = make_config(products, rf_interval=(2, 6),
                      optim=OptimConfig(learning_rate=1e-2, batch_size=2, gradient_accumulation_steps=1,
                                        max_steps=8, weight_decay=0.0),
                      validation=ValidationConfig(every=0, num_products=2, images_per_product=4))
    trainer = RFFTTrainer.from_config(cfg, model_home / "run-judge", judge=judge)
    before = trainer.run_validation()
    records = trainer.run_steps(8)
    after = trainer.run_validation()
    losses = [r["loss"] for r in records]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    assert records[-1]["p_available"] > records[0]["p_available"]
    assert before["available_rate"] < 0.5 < after["available_rate"]
    assert after["distance_to_original"] > 0 and before["distance_to_original"] == 0
    assert records[-1]["consistent_condition"] > 0  # the student has moved away from the teacher


def test_alternative_regularisers_reach_the_student(products, model_home, tmp_path):
    # real ads for the denoising loss: an ad image and its aligned cut-out
    rgba = make_product_rgba(64, (200, 40, 40))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    ad = rgba[..., :3].copy()
    ad[rgba[..., 3] == 0] = (180, 150, 120)
    Image.fromarray(ad).save(tmp_path / "ad.png")
    (tmp_path / "ads.jsonl").write_text(json.dumps({"image": "ad.png", "product": "cut.png",
                                                    "prompt": "a bottle on a table"}) + "\n", encoding="utf-8")
    for kind in ("kl", "denoising", "none"):
        loss = LossConfig(regularizer=kind, available_weight=0.0 if kind == "denoising" else 1.0)
        cfg = make_config(products, loss=loss,
                          data=DataConfig(products=[str(products)], validation_fraction=0.5,
                                          real_ads=str(tmp_path / "ads.jsonl")))
        trainer = RFFTTrainer.from_config(cfg, model_home / f"run-{kind}", judge=brightness_judge())
        metrics = trainer.training_step(0)
        assert (kind in metrics) == (kind != "none")
        if kind == "kl":
            assert metrics["kl"] == pytest.approx(0.0, abs=1e-10)  # student == teacher at the start
        if kind == "denoising":  # the loss is the denoising term alone, and it trains the student
            assert metrics["denoising"] > 0 and metrics["loss"] == pytest.approx(metrics["denoising"])
        assert sum(float(p.grad.abs().sum()) for p in trainer.trainable.parameters() if p.grad is not None) > 0


def test_config_validation_names_field_value_and_fix():
    with pytest.raises(ValueError, match=r"rf_interval=\[30, 40\].*num_inference_steps=20.*\[10, 20\]"):
        RFFTConfig(sampling=SamplingConfig(num_inference_steps=20))
    with pytest.raises(ValueError, match="scheduler='euler_a'.*use scheduler ddim"):
        RFFTConfig(sampling=SamplingConfig(scheduler="euler_a"))
    with pytest.raises(ValueError, match="loss.regularizer='l2' is not one of"):
        LossConfig(regularizer="l2")
    with pytest.raises(ValueError, match="trainable.lora_modules=\\['vae'\\]"):
        TrainableConfig(lora_modules=["vae"])
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['learning_rat'\\]"):
        from_dict(RFFTConfig, {"optim": {"learning_rat": 1e-5}})
    cfg = from_dict(RFFTConfig, {"rf_interval": [30, 40], "optim": {"betas": [0.9, 0.99]}})
    assert cfg.rf_interval == (30, 40) and cfg.optim.betas == (0.9, 0.99)
    # the paper's defaults
    d = RFFTConfig()
    assert (d.optim.learning_rate, d.optim.batch_size, d.optim.gradient_accumulation_steps) == (1e-5, 4, 4)
    assert d.trainable.target == "controlnet" and d.loss.regularizer == "consistent_condition"
    assert d.sampling.num_inference_steps == 40 and d.rf_interval == (30, 40)


def test_missing_rfnet_and_bitsandbytes_fail_with_the_fix(products, model_home, monkeypatch):
    with pytest.raises(ValueError, match="feedback.rfnet is not set"):
        RFFTTrainer.from_config(make_config(products), model_home / "run-none")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ImportError, match="pip install bitsandbytes"):
        build_optimizer(OptimConfig(optimizer="adamw8bit"), [torch.nn.Parameter(torch.zeros(1))])
