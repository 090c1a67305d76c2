"""reliable_ad.training, what RFNet training and RFFT share: the checkpoint format resumes exactly and
keeps the newest N, the resume-config check names what differs, older config names load with a
warning, the run log, and the package imports nothing above it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from reliable_ad.training.accelerator import make_accelerator, resolve_mixed_precision
from reliable_ad.training.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from reliable_ad.training.config import OptimConfig, RuntimeConfig, rename_keys
from reliable_ad.training.resume import check_resume_config
from reliable_ad.training.runlog import RunLog

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(init_seed: int):
    """A tiny model with dropout (the RNG state matters), AdamW and a decaying schedule, prepared."""
    accelerator = make_accelerator(RuntimeConfig(device="cpu"))
    torch.manual_seed(init_seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.8 ** step)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return accelerator, model, optimizer, scheduler


def _steps(model, optimizer, scheduler, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        x = torch.randn(16, 4)  # drawn from the global RNG, which a checkpoint restores
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    accelerator, model, optimizer, scheduler = _setup(0)
    straight = _steps(model, optimizer, scheduler, 6)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    accelerator, model, optimizer, scheduler = _setup(0)
    first = _steps(model, optimizer, scheduler, 3)
    folder = save_checkpoint(accelerator, tmp_path, 3, {"epoch": 0, "batch_in_epoch": 3}, keep=2)
    assert folder == checkpoint_dir(tmp_path, 3) == tmp_path / "checkpoints" / "step_00000003"
    assert {"model.safetensors", "optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl",
            "trainer_state.json"} <= {p.name for p in folder.iterdir()}
    _steps(model, optimizer, scheduler, 2)  # the interrupted run goes on a little, then dies

    # a fresh process: other initial weights, another RNG state; the checkpoint restores all of it
    accelerator, model, optimizer, scheduler = _setup(123)
    torch.manual_seed(999)
    step, latest = latest_checkpoint(tmp_path)
    state = load_checkpoint(accelerator, latest)
    assert step == state["step"] == 3 and (state["epoch"], state["batch_in_epoch"]) == (0, 3)
    rest = _steps(model, optimizer, scheduler, 3)
    assert first + rest == straight
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
    assert scheduler.get_last_lr() == [1e-2 * 0.8 ** 6]


def test_keep_last_n_protect_and_only_whole_checkpoints(tmp_path):
    accelerator, *_ = _setup(0)
    for step in range(1, 6):
        save_checkpoint(accelerator, tmp_path, step, {}, keep=2, protect={1},
                        extra=lambda folder: (folder / "weights.bin").write_bytes(b"x"))
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1, 4, 5]  # the newest 2, and the protected one
    assert all((f / "weights.bin").is_file() for _, f in list_checkpoints(tmp_path))
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary folder left behind
    # a folder without trainer_state.json (a crash mid-write) is never the latest
    (tmp_path / "checkpoints" / "step_00000009").mkdir()
    assert latest_checkpoint(tmp_path)[0] == 5
    # saving a step again replaces it whole
    save_checkpoint(accelerator, tmp_path, 5, {"again": True}, keep=5)
    assert json.loads((checkpoint_dir(tmp_path, 5) / "trainer_state.json").read_text())["again"] is True
    # RFFT's older format is refused, not silently restarted
    old = tmp_path / "checkpoints" / "step_0000003"
    old.mkdir()
    (old / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="older RFFT format.*another --out"):
        list_checkpoints(tmp_path)


def test_resume_config_check_names_the_keys_that_differ(tmp_path):
    config = {"optim": {"learning_rate": 1e-4, "max_steps": 10}, "runtime": {"seed": 0, "log_every": 5},
              "notes": "x"}
    identity, ignore = ("optim", "runtime.seed"), ("optim.max_steps",)
    check_resume_config(tmp_path, config, identity, ignore=ignore)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["optim"] == config["optim"] and "reliable_ad_version" in stored
    # what may change: ignored keys, keys outside the identity
    check_resume_config(tmp_path, {**config, "optim": {"learning_rate": 1e-4, "max_steps": 99},
                                   "runtime": {"seed": 0, "log_every": 1}, "notes": "y"}, identity, ignore=ignore)
    changed = {"optim": {"learning_rate": 3e-4, "max_steps": 10}, "runtime": {"seed": 1, "log_every": 5}}
    with pytest.raises(ValueError, match=r"different config \(optim.learning_rate, runtime.seed differ\).*--out"):
        check_resume_config(tmp_path, changed, identity, ignore=ignore)
    with pytest.raises(ValueError, match=r"\(optim.weight_decay differ\)"):  # a key only one side has
        check_resume_config(tmp_path, {"optim": {"learning_rate": 1e-4, "weight_decay": 0.1},
                                       "runtime": {"seed": 0}}, identity, ignore=ignore, write=False)
    # a config.json in older names is upgraded before the comparison
    (tmp_path / "config.json").write_text(json.dumps({"optim": {"lr": 1e-4}, "seed": 0}))
    renames = {"optim.lr": "optim.learning_rate", "seed": "runtime.seed"}
    check_resume_config(tmp_path, {"optim": {"learning_rate": 1e-4}, "runtime": {"seed": 0}}, identity,
                        upgrade=lambda old: rename_keys(old, renames, warn=False), write=False)


def test_old_config_names_load_with_a_warning_naming_the_new_key(tmp_path):
    from reliable_ad.rfft.config import OptimConfig as RFFTOptim
    from reliable_ad.rfft.config import RFFTConfig
    from reliable_ad.rfnet.train_config import OptimConfig as RFNetOptim
    from reliable_ad.rfnet.train_config import RuntimeConfig as RFNetRuntime
    from reliable_ad.rfnet.train_config import TrainConfig

    path = tmp_path / "old.yaml"
    path.write_text("optim: {lr: 3e-5, grad_accum_steps: 2}\nseed: 7\nmixed_precision: 'no'\ncheckpoint_every: 5\n",
                    encoding="utf-8")
    with pytest.warns(FutureWarning) as caught:
        cfg = TrainConfig.load(path)
    messages = " ".join(str(w.message) for w in caught)
    for old, new in [("optim.lr", "optim.learning_rate"), ("optim.grad_accum_steps", "optim.gradient_accumulation_steps"),
                     ("seed", "runtime.seed"), ("mixed_precision", "runtime.mixed_precision"),
                     ("checkpoint_every", "runtime.checkpoint_every")]:
        assert f"{old!r} is deprecated, use {new!r}" in messages
    assert (cfg.optim.learning_rate, cfg.optim.gradient_accumulation_steps) == (3e-5, 2)
    assert (cfg.runtime.seed, cfg.runtime.mixed_precision, cfg.runtime.checkpoint_every) == (7, "no", 5)
    with pytest.raises(ValueError, match="both 'optim.lr'.*and 'optim.learning_rate'.*keep only"):
        TrainConfig.from_dict({"optim": {"lr": 1e-3, "learning_rate": 1e-3}})
    # the constructors' old keywords too (scripts that build configs in Python)
    with pytest.warns(FutureWarning, match="TrainConfig: 'seed' is deprecated, use 'runtime.seed'"):
        built = TrainConfig(optim=RFNetOptim(lr=2e-4, grad_accum_steps=3), seed=3, device="cpu")
    assert (built.optim.learning_rate, built.optim.gradient_accumulation_steps) == (2e-4, 3)
    assert (built.runtime.seed, built.runtime.device, built.runtime.log_every) == (3, "cpu", 20)
    # one vocabulary: both trainers' sections are the shared classes, with their own defaults
    assert issubclass(RFNetOptim, OptimConfig) and issubclass(RFFTOptim, OptimConfig)
    assert issubclass(RFNetRuntime, RuntimeConfig) and type(RFFTConfig().runtime) is RuntimeConfig
    shared = {"learning_rate", "weight_decay", "batch_size", "gradient_accumulation_steps", "max_grad_norm",
              "max_steps"}
    assert shared <= set(cfg.to_dict()["optim"]) and shared <= set(vars(RFFTConfig().optim))
    assert (RFNetOptim().learning_rate, RFFTOptim().learning_rate) == (1e-4, 1e-5)  # the papers' values
    with pytest.raises(ValueError, match=r"runtime.mixed_precision='fp8' is not one of"):
        RuntimeConfig(mixed_precision="fp8")


def test_accelerator_and_run_log(tmp_path):
    accelerator = make_accelerator(RuntimeConfig(device="cpu", mixed_precision="auto"))
    assert accelerator.device.type == "cpu" and str(accelerator.mixed_precision) == "no"
    assert resolve_mixed_precision("auto", "cpu") == "no" and resolve_mixed_precision("bf16", "cpu") == "bf16"
    log = RunLog(tmp_path, tensorboard=False)
    log.log(3, {"loss": 0.5}, kind="train")
    log.log(4, {"train/loss": 0.25, "grid": "a.png"})
    RunLog(tmp_path, tensorboard=False, enabled=False).log(5, {"loss": 1.0})  # not the main process: nothing
    log.close()
    records = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("kind")) for r in records] == [(3, "train"), (4, None)]
    assert records[0]["loss"] == 0.5 and records[1]["grid"] == "a.png" and "time" in records[0]


def test_training_imports_nothing_above_it():
    code = (
        "import sys\n"
        "import reliable_ad.training\n"
        "from reliable_ad.training import accelerator, checkpoint, config, resume, runlog\n"
        "above = ('rfnet', 'rfft', 'generation', 'modalities', 'recurrent', 'annotation', 'synthad', 'cli')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in [['reliable_ad', a] for a in above]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
    light = subprocess.run([sys.executable, "-c", "import sys; import reliable_ad.training.config, "
                            "reliable_ad.training.resume; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=300)
    assert light.stdout.strip() == "False", light.stderr[-2000:]  # the config and the check stay torch-free
