"""Hub model cards: what `rfnet train` / save_pretrained and the RFFT export write beside the weights
parses back with huggingface_hub's ModelCard, carries the run's own metrics (and none it did not
measure), and leaves the folder loadable."""

from __future__ import annotations

import json
import math

import pytest
from huggingface_hub import ModelCard

from reliable_ad.core.io import read_jsonl
from reliable_ad.rfnet import load_rfnet, save_pretrained
from reliable_ad.rfnet.train import train
from reliable_ad.rfnet.train_config import TrainConfig
from reliable_ad.training.model_card import hub_ids
import rfft_helpers
from rfft_helpers import config, judge
from test_rfnet_train import make_rf1m

products = rfft_helpers.products  # the RFFT tests' product folder fixture


def _card(folder):
    card = ModelCard.load(folder / "README.md")
    return card, card.data.to_dict()


def test_rfnet_trained_model_card_has_the_runs_eval_metrics(tmp_path, one_torch_thread):
    data = make_rf1m(tmp_path / "data")
    cfg = TrainConfig.from_dict({
        "data": {"sources": [{"path": str(data)}], "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"source": "tiny"}, "optim": {"max_steps": 1, "batch_size": 4}, "num_workers": 0,
        "runtime": {"device": "cpu", "checkpoint_every": 100}})
    out = tmp_path / "out"
    train(cfg, out, progress=False)
    card, meta = _card(out / "model")
    assert meta["library_name"] == "reliable-ad" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] == "apache-2.0" and {"reliable-ad", "rfnet"} <= set(meta["tags"])
    assert "base_model" not in meta  # the tiny preset starts from no Hub model
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    for split in ("test", "val"):
        measured = json.loads((out / "eval" / split / "metrics.json").read_text())
        assert results[(split, "accuracy")] == round(measured["accuracy"], 4)
        assert results[(split, "macro F1")] == round(measured["macro_f1"], 4)
        if measured["available"]["average_precision"] is None:  # nan in the run: left out, not invented
            assert (split, "Available AP") not in results
    assert all(r.task_type == "image-classification" for r in card.data.eval_results)
    assert "model-index:" in card.content and "## Classes" in card.text
    model, _ = load_rfnet(out / "model")  # the card does not get in the way of loading
    assert model.config.temperature == pytest.approx(
        json.loads((out / "eval" / "val" / "metrics.json").read_text())["temperature"])


def test_save_pretrained_card_leaves_out_what_was_not_measured(tmp_path):
    model, processor = load_rfnet("tiny")
    folder = save_pretrained(model, tmp_path / "plain", processor)
    card, meta = _card(folder)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert meta["library_name"] == "reliable-ad"
    folder = save_pretrained(model, tmp_path / "some", processor,
                             metrics={"test": {"n": 8, "accuracy": math.nan, "macro_f1": 0.25, "ece": None}})
    card, _ = _card(folder)
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results] == [("f1", 0.25, "test")]
    loaded, _ = load_rfnet(folder)
    assert loaded.config == model.config
    assert hub_ids("hfl/chinese-roberta-wwm-ext", None, "tiny", str(tmp_path), "hfl/chinese-roberta-wwm-ext") == [
        "hfl/chinese-roberta-wwm-ext"]


def test_rfft_export_writes_a_diffusers_card_with_the_last_validation(products, model_home, tmp_path):
    from diffusers import ControlNetModel

    from reliable_ad.rfft.config import ValidationConfig
    from reliable_ad.rfft.trainer import RFFTTrainer

    cfg = config(products, max_steps=1, validation=ValidationConfig(every=1, num_products=1, images_per_product=2))
    summary = RFFTTrainer.from_config(cfg, tmp_path / "run", judge=judge).train()
    folder = tmp_path / "run" / "export" / "controlnet"
    card, meta = _card(folder)
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "image-to-image"
    assert {"reliable-ad", "controlnet", "rfft"} <= set(meta["tags"])
    last = [r for r in read_jsonl(tmp_path / "run" / "logs" / "metrics.jsonl") if r.get("kind") == "validation"][-1]
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["RFNet Available rate"] == round(last["available_rate"], 4)
    assert results["RFNet Available rate of the original model"] == round(last["original_available_rate"], 4)
    assert summary.exported["controlnet"] == str(folder)
    ControlNetModel.from_pretrained(folder)  # still a diffusers folder
