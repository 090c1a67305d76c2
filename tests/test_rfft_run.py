"""RFFT runs: exact resume, and the collapse monitor's metrics and roll-back."""

from __future__ import annotations

import json

import pytest
import torch

from reliable_ad.rfft.config import CollapseConfig, ValidationConfig
from reliable_ad.rfft.trainer import STOPPED, RFFTTrainer
from reliable_ad.rfft.validation import CollapseMonitor, background_distance, background_diversity
from reliable_ad.training.checkpoint import list_checkpoints
from rfft_helpers import config, judge, products  # noqa: F401 - products is a fixture


def test_resume_reproduces_an_uninterrupted_run(products, model_home, tmp_path):
    full = RFFTTrainer.from_config(config(products), tmp_path / "full", judge=judge)
    full.train()
    half = RFFTTrainer.from_config(config(products, max_steps=2), tmp_path / "resumed", judge=judge)
    assert half.train().step == 2
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [1, 2]
    # the shared checkpoint format: accelerate's state, the trainable weights, the counters
    files = {p.name for p in (tmp_path / "resumed" / "checkpoints" / "step_00000002").iterdir()}
    assert {"optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl", "trainable.safetensors",
            "trainer_state.json"} <= files
    resumed = RFFTTrainer.from_config(config(products), tmp_path / "resumed", judge=judge)
    summary = resumed.train()
    assert summary.step == 4 and resumed.micro_step == full.micro_step == 8
    a, b = full.trainable.state_dict(), resumed.trainable.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the optimizer's moments too, so training would go on identically
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [3, 4]  # keep_checkpoints=2
    # a resume with another config is refused, naming what differs
    with pytest.raises(ValueError, match="different config \\(loss.beta differ\\)"):
        other = config(products)
        other.loss.beta = 5.0
        RFFTTrainer.from_config(other, tmp_path / "resumed", judge=judge).train()


def test_collapse_monitor_rolls_back_and_a_rerun_only_reexports(products, model_home, tmp_path):
    # any move away from the original counts as collapse: the first validation after training triggers it
    collapse = CollapseConfig(max_distance=1e-6, patience=1, action="rollback")
    cfg = config(products, validation=ValidationConfig(every=2, num_products=2, images_per_product=2,
                                                       collapse=collapse))
    trainer = RFFTTrainer.from_config(cfg, tmp_path / "run", judge=judge)
    initial = trainer.trainable.state_dict()
    summary = trainer.train()
    assert summary.stopped == "collapse: rolled back to step 0" and summary.step == 2
    assert [v["collapsed"] for v in summary.validations] == [False, True]
    assert all(torch.equal(initial[k], v) for k, v in trainer.trainable.state_dict().items())
    assert (tmp_path / "run" / "validation" / "step_0000002.png").is_file()
    assert json.loads((tmp_path / "run" / STOPPED).read_text())["weights_step"] == 0
    again = RFFTTrainer.from_config(cfg, tmp_path / "run", judge=judge).train()
    assert again.stopped == summary.stopped and again.step == 2


def test_collapse_metrics_and_monitor_rule():
    alphas = torch.zeros(3, 1, 8, 8)
    same = torch.full((3, 3, 8, 8), 0.5)
    varied = same.clone()
    varied[1], varied[2] = 0.2, 0.9
    assert background_diversity(same, alphas) == 0.0
    assert background_diversity(varied, alphas) == pytest.approx((0.3 + 0.4 + 0.7) / 3)
    assert background_distance(varied, same, alphas) == pytest.approx((0 + 0.3 + 0.4) / 3)
    alphas[:, :, :, :4] = 1.0  # the product covers the left half: only the right half counts
    varied[:, :, :, :4] = 0.0
    assert background_distance(varied, same, alphas) == pytest.approx((0 + 0.3 + 0.4) / 3)
    monitor = CollapseMonitor(CollapseConfig(min_diversity_ratio=0.5, max_distance=0.3, patience=2, action="stop"))
    assert monitor.update(0, 1.0, 0.0) == (False, None) and monitor.last_healthy_step == 0
    assert monitor.update(5, 0.4, 0.0) == (True, None)
    assert monitor.update(10, 1.0, 0.5) == (True, "stop")
    assert monitor.last_healthy_step == 0
