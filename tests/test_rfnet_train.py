"""RFNet training and evaluation (`reliable-ad rfnet train|eval`) on a synthetic RF1M folder, tiny model, CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from reliable_ad.modalities.cache import build_cache
from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.rfnet import load_rfnet
from reliable_ad.rfnet.eval_loop import evaluate_model
from reliable_ad.rfnet.inspector import Inspector
from reliable_ad.rfnet.train import train
from reliable_ad.rfnet.train_config import DataSource, TrainConfig, parse_set
from reliable_ad.core.io import read_jsonl

COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (40, 220, 220)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_rf1m(root: Path, n_products: int = 8, per_product: int = 2, size: int = 64, seed: int = 0) -> Path:
    """A synthetic RF1M release: images/<id>_<k>.png, products/<id>.png (RGBA), labels.txt, captions.json.
    The label shows in the image (a dominant colour channel), so a model can learn it."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "products").mkdir()
    lines, captions = [], {}
    for p in range(n_products):
        pid = str(1000 + p)
        product = np.zeros((40, 24, 4), np.uint8)
        product[8:36, 4:20] = (*COLORS[p % 5], 255)
        Image.fromarray(product, "RGBA").save(root / "products" / f"{pid}.png")
        captions[pid] = ["red cup", "green lamp", "blue chair", "黄色 杯子", "cyan box"][p % 5]
        for k in range(per_product):
            label = (p + k) % 5
            image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            image[..., label % 3] += 150
            image[: size // 2, :, (label + 1) % 3] += 60 * (label // 3)
            Image.fromarray(image).save(root / "images" / f"{pid}_{k}.png")
            lines.append(f"images/{pid}_{k}.png\t{CLASS_NAMES[label]}")
    (root / "labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "captions.json").write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_rf1m(tmp_path_factory.mktemp("rf1m") / "data")


def _config(data: Path, **changes) -> TrainConfig:
    base = {
        "data": {"sources": [{"path": str(data)}], "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"source": "tiny", "overrides": {"fusion": {"dropout": 0.2}}},  # dropout: RNG state matters
        "optim": {"epochs": 3, "batch_size": 4},
        "num_workers": 0, "runtime": {"checkpoint_every": 100, "log_every": 1, "device": "cpu"},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            base[section] = {**base.get(section, {}), field: value}
        else:
            base[section] = value
    return TrainConfig.from_dict(base)


def _losses(out: Path) -> list[float]:
    return [r["train/loss"] for r in read_jsonl(out / "logs" / "metrics.jsonl") if "train/loss" in r]


def test_config_is_validated_and_overridable():
    with pytest.raises(ValueError, match=r"optim.learning_rate=-1.0 must be > 0"):
        TrainConfig.from_dict({"optim": {"learning_rate": -1.0}})
    with pytest.raises(ValueError, match=r"runtime.checkpoint_every=-1 must be an int >= 0"):
        TrainConfig.from_dict({"runtime": {"checkpoint_every": -1}})
    with pytest.raises(ValueError, match="optim.class_weighting='balanced'"):
        TrainConfig.from_dict({"optim": {"class_weighting": "balanced"}})
    with pytest.raises(ValueError, match="unknown key.*'lrr'"):
        TrainConfig.from_dict({"optim": {"lrr": 1.0}})
    with pytest.raises(ValueError, match="unsuitable='sometimes'"):
        TrainConfig.from_dict({"data": {"unsuitable": "sometimes"}})
    with pytest.raises(ValueError, match="section.key=value"):
        parse_set(["lr"])
    cfg = TrainConfig.load(None, parse_set(["optim.learning_rate=3e-5", "model.overrides.modalities.depth=false"]))
    assert cfg.optim.learning_rate == 3e-5 and cfg.model.overrides == {"modalities": {"depth": False}}
    # the older names still load, each with a FutureWarning naming the new key
    with pytest.warns(FutureWarning, match="'optim.lr' is deprecated, use 'optim.learning_rate'"):
        old = TrainConfig.load(None, parse_set(["optim.lr=3e-5", "log_every=5"]))
    assert old.optim.learning_rate == 3e-5 and old.runtime.log_every == 5
    # and so do the older flag spellings (hidden from --help)
    from reliable_ad.cli.main import build_parser

    with pytest.warns(FutureWarning, match="--lr is deprecated, use --learning-rate"):
        args = build_parser().parse_args(["rfnet", "train", "--out", "o", "--lr", "2e-4", "--grad-accum-steps", "2"])
    assert (args.learning_rate, args.gradient_accumulation_steps) == (2e-4, 2)
    assert cfg.optim.epochs == 10 and cfg.optim.lr_milestones == [5] and cfg.optim.lr_gamma == 0.1  # the paper's
    other = TrainConfig.load(None, parse_set(["optim.max_steps=3"]))
    assert other.identity() == TrainConfig().identity()  # stopping early does not change what is trained


def test_loss_falls_when_overfitting_on_cached_maps(tmp_path):
    data = make_rf1m(tmp_path / "data")
    build_cache(data, depth="tiny", salience="fine-grained", size=64, progress=False)
    cfg = _config(data, data__split_fractions=[1.0, 0.0, 0.0], model={"source": "tiny"},
                  optim={"epochs": 20, "batch_size": 16, "learning_rate": 5e-3, "lr_milestones": []},
                  eval_every_epoch=False)
    result = train(cfg, tmp_path / "out", progress=False)
    losses = _losses(tmp_path / "out")
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert result == {}  # no val or test split to evaluate
    model, _ = load_rfnet(tmp_path / "out" / "model")
    assert model.config.temperature == 1.0  # nothing to calibrate on
    info = json.loads((tmp_path / "out" / "data.json").read_text())
    assert info["splits"]["train"]["samples"] == 16 and info["modalities"]["depth"] == "tiny"
    assert info["with_cached"] == {"depth": 16, "salience": 16}


def test_resume_gives_the_same_weights_as_a_straight_run(dataset, tmp_path):
    # 3 steps per epoch: the resume point (step 2) is mid-epoch, and step 3 ends the epoch
    train(_config(dataset, optim__max_steps=4), tmp_path / "straight", progress=False)
    train(_config(dataset, optim__max_steps=2), tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "checkpoints" / "step_00000002" / "trainer_state.json").is_file()
    train(_config(dataset, optim__max_steps=4), tmp_path / "resumed", progress=False)
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    with pytest.raises(ValueError, match=r"different config \(optim.learning_rate differ\)"):
        train(_config(dataset, optim={"epochs": 3, "batch_size": 4, "learning_rate": 5e-4}), tmp_path / "resumed")


def test_training_calibrates_evaluates_and_saves(dataset, tmp_path):
    out = tmp_path / "out"
    metrics = train(_config(dataset, optim__max_steps=3), out, progress=False)
    val = json.loads((out / "eval" / "val" / "metrics.json").read_text())
    test = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    info = json.loads((out / "data.json").read_text())
    assert val["n"] == info["splits"]["val"]["samples"] and test["n"] == info["splits"]["test"]["samples"]
    assert val["class_names"] == list(CLASS_NAMES) and len(test["confusion_matrix"]) == 5
    assert metrics["test"]["temperature"] == val["temperature"] != 1.0
    preds = read_jsonl(out / "eval" / "test" / "predictions.jsonl")
    assert len(preds) == test["n"] and all(p["predicted"] in CLASS_NAMES for p in preds)
    # the fitted temperature is stored in the saved model and comes back with it
    model, _ = load_rfnet(out / "model")
    assert model.config.temperature == pytest.approx(val["temperature"])
    inspector = Inspector.from_pretrained(str(out / "model"), device="cpu")
    assert (inspector.spec.depth, inspector.spec.salience, inspector.spec.size) == ("tiny", "fine-grained", 64)
    # `rfnet eval` on training's test split reproduces training's test metrics
    again = evaluate_model(str(out / "model"), [DataSource(str(dataset))], tmp_path / "eval", split="test",
                           num_workers=0, device="cpu", progress=False)
    assert again["n"] == test["n"] and again["accuracy"] == test["accuracy"]
    assert again["available"]["average_precision"] == pytest.approx(test["available"]["average_precision"])
    assert again["temperature"] == pytest.approx(val["temperature"])
    everything = evaluate_model(str(out / "model"), [DataSource(str(dataset))], tmp_path / "all", num_workers=0,
                                device="cpu", progress=False)
    assert everything["n"] == 16 and (tmp_path / "all" / "metrics.json").is_file()


def test_modalities_switch_off_and_baselines_are_configs(tmp_path):
    data = make_rf1m(tmp_path / "data", n_products=4)
    # the ablation: RFNet without depth and salience is a config of the same trainer
    train(_config(data, optim__max_steps=1, model={"source": "tiny", "overrides": {
        "modalities": {"depth": False, "salience": False}}}), tmp_path / "ablation", progress=False)
    model, _ = load_rfnet(tmp_path / "ablation" / "model")
    assert model.image_modalities == ("product", "generated")
    assert json.loads((tmp_path / "ablation" / "model" / "modalities.json").read_text())["depth"] is None
    # the paper's generated-image-only ResNet-50 baseline (random weights here, at 64 px)
    train(_config(data, optim={"max_steps": 1, "batch_size": 2}, model={
        "source": "baseline-resnet50", "load_pretrained": False, "overrides": {"image_size": 64}}),
        tmp_path / "baseline", progress=False)
    model, _ = load_rfnet(tmp_path / "baseline" / "model")
    assert model.image_modalities == ("generated",) and model.config.image_encoder.arch["hidden_sizes"][-1] == 2048
    with pytest.raises(ValueError, match="num_classes=5.*num_classes: 6"):
        train(_config(data, data__unsuitable="keep"), tmp_path / "bad", progress=False)


def _cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, **kw)


def test_cli_train_and_eval(dataset, tmp_path, capsys):
    from reliable_ad.cli.main import main

    cfg = tmp_path / "rfnet.yaml"
    cfg.write_text(f"data:\n  sources: [{{path: {dataset}}}]\n  split_fractions: [0.5, 0.25, 0.25]\n"
                   "model: {source: tiny}\noptim: {batch_size: 4, learning_rate: 2e-4}\nnum_workers: 0\n")
    out = tmp_path / "out"
    r = _cli("-m", "reliable_ad.cli.main", "rfnet", "train", "--config", str(cfg), "--out", str(out), "--max-steps",
             "2", "--device", "cpu", "--set", "runtime.log_every=1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "test: n=" in r.stderr and (out / "model" / "modalities.json").is_file()
    written = json.loads((out / "config.json").read_text())
    assert written["optim"]["max_steps"] == 2 and written["optim"]["learning_rate"] == 2e-4  # YAML: a float
    assert written["runtime"]["device"] == "cpu"
    assert len(_losses(out)) == 2
    # eval and a usage error, in-process (the subprocess path is the same `main`)
    rc = main(["rfnet", "eval", "--model", str(out / "model"), "--data", str(dataset), "--out", str(tmp_path / "ev"),
               "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert rc == 0 and json.loads(capsys.readouterr().err.strip().splitlines()[-1])["n"] == 16
    assert main(["rfnet", "train", "--config", str(cfg), "--out", str(tmp_path / "x"), "--set", "optim.learning_rate=-1"]) == 2
    assert "optim.learning_rate=-1" in capsys.readouterr().err


def test_accelerate_two_processes_train_and_evaluate_each_sample_once(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo). accelerate's --cpu runs multi-CPU only through
    MPI; without it, torchrun's launcher (--multi_gpu) with the trainer's --device cpu does the job."""
    data = make_rf1m(tmp_path / "data", n_products=12, per_product=1)
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reliable_ad.cli.main", "rfnet"]
    out = tmp_path / "out"
    t0 = time.time()
    r = _cli(*launch, "train", "--data", str(data), "--model", "tiny", "--out", str(out), "--epochs", "1",
             "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--no-progress",
             "--set", "data.split_fractions=[0.4, 0.3, 0.3]", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("model saved to") == 1  # one summary, from the main process
    info = json.loads((out / "data.json").read_text())["splits"]
    assert (info["train"]["samples"], info["val"]["samples"], info["test"]["samples"]) == (6, 3, 3)
    state = json.loads(next((out / "checkpoints").glob("step_*/trainer_state.json")).read_text())
    assert state["step"] == 2  # 6 samples, 2 processes x batch 2 (the last batch padded)
    assert {p.name for p in (out / "checkpoints").glob("step_*/random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}
    for split in ("val", "test"):  # 3 samples over 2 processes: accelerate pads with a repeat, which must go
        preds = read_jsonl(out / "eval" / split / "predictions.jsonl")
        assert len(preds) == 3 and len({p["image"] for p in preds}) == 3
        assert json.loads((out / "eval" / split / "metrics.json").read_text())["n"] == 3
    print(f"accelerate launch, 2 processes: {time.time() - t0:.1f} s")
