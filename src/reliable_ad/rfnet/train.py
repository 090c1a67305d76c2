"""`reliable-ad rfnet train`: train RFNet or a baseline with accelerate (docs/method.md §3), on CPU,
one GPU, several GPUs or nodes (`accelerate launch`), with exact resume.

Layout of ``--out`` (the accelerator, checkpoints, log and resume check are `reliable_ad.training`'s)::

    config.json                 the resolved TrainConfig (a resumed run must match it)
    data.json                   samples, splits, class counts and weights, data problems
    logs/metrics.jsonl          training and evaluation metrics (always); logs/tensorboard/ when installed
    checkpoints/step_XXXXXXXX/  accelerate state (model, optimizer, scheduler, RNG) + trainer_state.json
                                (epoch, batch in the epoch, step; with --shards also the stream's layout and
                                the shards each process had read to their end)
    model/                      the final RFNet (temperature fitted on val) + modalities.json
    eval/{val,test}/            metrics.json (+ PNGs with matplotlib), predictions.jsonl

Rerunning the same command resumes from the newest checkpoint: the same batches in the same order,
the same dropout masks, the same learning rates, so 2 + 2 steps give the weights of 4 straight.
Checkpoints on several nodes need a shared filesystem.

With ``data.shards`` (`reliable-ad data shard`) the train split streams from WebDataset shards
(`reliable_ad.data.shard_stream`: each process and DataLoader worker reads its own shards, every
sample once per epoch); resuming needs the same number of processes, workers and batch size.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reliable_ad.core.config import merge_dicts
from reliable_ad.rfnet.config import RFNetConfig
from reliable_ad.rfnet.dataset import RFDataset
from reliable_ad.rfnet.eval_loop import TRAINING_FILE, evaluate_split, make_loader, predict
from reliable_ad.rfnet.inspector import build_estimators
from reliable_ad.rfnet.modality_spec import ModalitySpec, resolve_modality_spec, save_rfnet
from reliable_ad.data.splits import class_weights
from reliable_ad.rfnet.train_config import RENAMED, RESUME_IDENTITY, RESUME_MAY_CHANGE, TrainConfig
from reliable_ad.rfnet.trainer_data import (
    EpochSampler,
    ModelInputs,
    RobustDataset,
    ShardLoader,
    Splits,
    build_datasets,
    collate_robust,
    estimators_needed,
    shard_datasets,
)
from reliable_ad.core.io import atomic_write_json
from reliable_ad.training.accelerator import make_accelerator
from reliable_ad.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from reliable_ad.training.config import rename_keys
from reliable_ad.training.resume import check_resume_config, write_run_config
from reliable_ad.training.runlog import RunLog

logger = logging.getLogger(__name__)


# --- set-up ----------------------------------------------------------------------------------------


def build_model(section) -> tuple[Any, Any, Any]:
    """(model, processor, modality spec) for the config's ``model`` section; see ModelSection."""
    from reliable_ad.rfnet.io import resolve_folder
    from reliable_ad.rfnet.presets import _config_source, build_rfnet, load_rfnet
    from reliable_ad.rfnet.processor import RFNetProcessor

    base = _config_source(section.source)
    if base is None:  # fine-tune a saved model: its architecture is fixed
        if section.overrides:
            raise ValueError(f"model.overrides={section.overrides!r} cannot change the saved model {section.source!r}; "
                             "start from a preset or config file to change the architecture")
        source = resolve_folder(section.source)
        model, processor = load_rfnet(source)
        model.set_temperature(1.0)  # refitted after training
    else:
        source = section.source
        config = RFNetConfig.from_dict(merge_dicts(base.to_dict(), section.overrides))
        model = build_rfnet(config, load_pretrained=section.load_pretrained)
        processor = RFNetProcessor.from_config(config)
    spec = resolve_modality_spec(source, model.config, depth=section.depth, salience=section.salience,
                                 size=section.map_size)
    return model, processor, spec


def save(run: Run) -> None:
    """Checkpoint the run (every process; see `reliable_ad.training.checkpoint`)."""
    state = dict(run.state)
    if isinstance(run.loader, ShardLoader):  # which shards each process has read to their end this epoch
        stream = run.loader.stream
        consumed = {str(r): stream.consumed_shards(state["batch_in_epoch"], r) for r in range(stream.world_size)}
        state["shards"] = {**run.loader.layout(), "epoch": state["epoch"], "consumed": consumed}
    save_checkpoint(run.accelerator, run.out, run.state["step"], state, keep=run.config.runtime.keep_checkpoints)
    run.last_saved = run.state["step"]


def _upgrade_stored(config: dict) -> dict:
    """A config.json written before the shared vocabulary or before label codes, in today's terms (for
    the resume check): such a run read integer RF1M labels as 0..5, so it resumes with --label-codes paper0."""
    config = rename_keys(config, RENAMED, warn=False)
    data = config.get("data")
    if isinstance(data, dict):
        data.setdefault("shards", None)
        for source in data.get("sources") or []:
            if isinstance(source, dict):
                source.setdefault("label_codes", "paper0")
    return config


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
                  weights: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy (class-weighted mean, as torch's) over the valid samples of the batch."""
    per_sample = F.cross_entropy(logits.float(), labels, weight=weights, reduction="none")
    w = (weights[labels] if weights is not None else torch.ones_like(per_sample)) * valid.float()
    if float(w.sum()) == 0:  # nothing readable in this batch: a zero loss that still touches the graph
        return logits.sum() * 0.0
    return (per_sample * valid.float()).sum() / w.sum()


# --- training --------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one training run holds; built by `prepare`, advanced by `train_epochs`."""

    config: TrainConfig
    out: Path
    accelerator: Any
    model: Any  # prepared (DDP-wrapped under several processes)
    processor: Any
    spec: ModalitySpec
    splits: Splits
    inputs_of: ModelInputs
    sampler: EpochSampler | None  # None when the train split streams from shards
    loader: Any
    optimizer: Any
    scheduler: Any
    class_weights: torch.Tensor | None
    log: RunLog
    state: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "batch_in_epoch": 0, "step": 0})
    last_saved: int = -1  # step of the newest checkpoint

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.loader) / self.config.optim.gradient_accumulation_steps)


def train(config: TrainConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, checkpoint, calibrate and evaluate; returns the final metrics (also written to disk)."""
    run = prepare(config, Path(out_dir))
    train_epochs(run, progress=progress)
    if run.last_saved != run.state["step"]:
        save(run)
    data = config.data
    training = {"sources": [s.path for s in data.sources], "shards": data.shards, "unsuitable": data.unsuitable,
                "split_fractions": list(data.split_fractions), "split_seed": data.split_seed,
                "steps": run.state["step"]}
    final = finish(run.accelerator, run.model, run.processor, run.spec, run.splits.datasets, run.inputs_of, run.out,
                   training=training, batch_size=config.eval_batch_size or config.optim.batch_size,
                   num_workers=config.num_workers)
    run.log.log(run.state["step"], {f"{split}/{k}": v for split, m in final.items() for k, v in _headline(m).items()})
    run.log.close()
    run.accelerator.end_training()
    return final


def _train_data(config: TrainConfig, model, spec: ModalitySpec,
                accelerator) -> tuple[Splits, Any, np.ndarray, ModalitySpec]:
    """(splits, the train set or shard stream, its class counts, the estimators batches will need)."""
    mods = model.config.modalities
    if config.data.shards:
        stream, splits = shard_datasets(config, num_classes=model.config.num_classes,
                                        image_size=model.config.image_size, spec=spec, mods=mods,
                                        rank=accelerator.process_index, world_size=accelerator.num_processes)
        needed = estimators_needed(spec, splits.info["shards"], mods)
        if splits.info["samples"]:  # val/test from data.sources may lack cached maps the shards have
            also = estimators_needed(spec, splits.info, mods)
            needed = replace(needed, depth=needed.depth or also.depth, salience=needed.salience or also.salience)
        return splits, stream, np.array(splits.info["shards"]["class_counts"]), needed
    data = config.data
    splits = build_datasets(
        data.sources, unsuitable=data.unsuitable, num_classes=model.config.num_classes,
        image_size=model.config.image_size, spec=spec, fractions=data.split_fractions, split_seed=data.split_seed,
        check_files=data.check_files, use_cache=data.use_cached_modalities, needs_product=mods.product,
    )
    train_set = splits.datasets["train"]
    if len(train_set) == 0:
        raise ValueError(f"the train split is empty ({splits.info['splits']}); add data or change data.split_fractions")
    counts = np.bincount(train_set.labels, minlength=model.config.num_classes)
    return splits, train_set, counts, estimators_needed(spec, splits.info, mods)


def _train_loader(config: TrainConfig, train, accelerator) -> tuple[EpochSampler | None, Any]:
    """(sampler, loader) of the train set; no sampler for a shard stream, which orders itself."""
    pin = accelerator.device.type == "cuda"
    if not isinstance(train, RFDataset):
        return None, ShardLoader(train, batch_size=config.optim.batch_size, num_workers=config.num_workers,
                                 pin_memory=pin)
    sampler = EpochSampler(len(train), config.runtime.seed)
    loader = torch.utils.data.DataLoader(
        RobustDataset(train), batch_size=config.optim.batch_size, sampler=sampler, num_workers=config.num_workers,
        collate_fn=collate_robust, generator=torch.Generator().manual_seed(config.runtime.seed),  # not the global RNG
        pin_memory=pin,
    )
    return sampler, loader


def prepare(config: TrainConfig, out: Path) -> Run:
    """Model, data, optimizer and schedule, prepared by accelerate, resumed from the newest checkpoint."""
    from accelerate.utils import set_seed

    opt = config.optim
    if not config.data.sources and not config.data.shards:
        raise ValueError("data.sources is empty; give at least one RF1M folder, run manifest or annotation export "
                         "(--data), or shards (--shards)")
    accelerator = make_accelerator(config.runtime, gradient_accumulation_steps=opt.gradient_accumulation_steps)
    latest = latest_checkpoint(out)
    if latest is not None:  # a run that never checkpointed may start over with another config
        check_resume_config(out, config.to_dict(), RESUME_IDENTITY, ignore=RESUME_MAY_CHANGE, upgrade=_upgrade_stored,
                            write=False)
    if accelerator.is_main_process:
        write_run_config(out, config.to_dict())
    set_seed(config.runtime.seed)

    # 1. model, data, and the estimators for the maps the data has not cached
    model, processor, spec = build_model(config.model)
    splits, train, train_counts, needed = _train_data(config, model, spec, accelerator)
    weights = class_weights(train_counts, opt.class_weighting)
    splits.info.update(class_weights=weights.tolist(), modalities=spec.to_dict())
    if accelerator.is_main_process:
        atomic_write_json(out / "data.json", splits.info)
    estimators = build_estimators(needed, accelerator.device)
    inputs_of = ModelInputs(model.config, processor, estimators, accelerator.device)

    # 2. loader (order fixed by seed and epoch), AdamW, lr x gamma at each milestone epoch, per optimizer step
    sampler, loader = _train_loader(config, train, accelerator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay)
    if sampler is None:  # shards: each process already reads its own, accelerate must not split batches
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / opt.gradient_accumulation_steps)
    milestones = [m * steps_per_epoch for m in opt.lr_milestones]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer.optimizer, lambda step: opt.lr_gamma ** sum(step >= m for m in milestones)
    )
    accelerator.register_for_checkpointing(scheduler)  # stepped by us once per optimizer step, not prepared
    class_w = None if opt.class_weighting == "none" else torch.tensor(weights, dtype=torch.float32,
                                                                      device=accelerator.device)
    run = Run(config, out, accelerator, model, processor, spec, splits, inputs_of, sampler, loader, optimizer,
              scheduler, class_w, RunLog(out, tensorboard=config.runtime.tensorboard,
                                         enabled=accelerator.is_main_process, config=config.to_dict()))

    # 3. resume: weights, optimizer, schedule, RNG states, and where in which epoch
    if latest is not None:
        state = load_checkpoint(accelerator, latest[1])
        if sampler is None:
            _check_stream_layout(state, loader.layout(), latest[1])
        run.state = {k: int(state[k]) for k in ("epoch", "batch_in_epoch", "step")}
        run.last_saved = run.state["step"]
        logger.info("resumed at epoch %d, step %d", run.state["epoch"], run.state["step"])
    return run


def _check_stream_layout(state: dict[str, Any], layout: dict[str, int], folder) -> None:
    """A shard stream resumes exactly only with the processes, workers and batch size it ran with."""
    stored = state.get("shards")
    if stored is None:
        raise ValueError(f"{folder} was written without --shards; resume without it, or start a new --out")
    changed = {k: (stored.get(k), v) for k, v in layout.items() if stored.get(k) != v}
    if changed:
        raise ValueError(f"{folder}: the shard stream changed since the checkpoint ({changed}, as (then, now)); "
                         "resume with the same processes, --num-workers, --batch-size, shards and seed")


def train_epochs(run: Run, *, progress: bool = True) -> None:
    """Optimizer steps until the schedule ends or ``optim.max_steps``; checkpoints on the way."""
    from tqdm.auto import tqdm

    runtime, opt, state, accelerator = run.config.runtime, run.config.optim, run.state, run.accelerator
    total = opt.epochs * run.steps_per_epoch
    stop_at = min(total, opt.max_steps) if opt.max_steps else total
    bar = tqdm(total=stop_at, initial=min(state["step"], stop_at), desc="rfnet train", unit="step",
               disable=not (progress and accelerator.is_local_main_process))
    losses: list[torch.Tensor] = []
    while state["epoch"] < opt.epochs and state["step"] < stop_at:
        if run.sampler is not None:
            run.sampler.set_epoch(state["epoch"])
        run.loader.set_epoch(state["epoch"])
        skip = state["batch_in_epoch"]  # a resumed run continues mid-epoch, in the same order
        if isinstance(run.loader, ShardLoader):  # each worker skips what it had yielded, unread
            batches = run.loader.skip(skip)
        else:
            batches = accelerator.skip_first_batches(run.loader, skip) if skip else run.loader
        run.model.train()
        for batch in batches:
            losses.append(train_step(run, batch))
            state["batch_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            run.scheduler.step()
            state["step"] += 1
            bar.update(1)
            if state["step"] % runtime.log_every == 0 or state["step"] == stop_at:
                mean = accelerator.reduce(torch.stack(losses).mean(), "mean")
                run.log.log(state["step"], {"train/loss": float(mean), "lr": run.scheduler.get_last_lr()[0],
                                            "epoch": state["epoch"]})
                losses.clear()
            every = runtime.checkpoint_every
            if every and state["step"] % every == 0 and state["step"] < stop_at:
                save(run)
            if state["step"] >= stop_at:
                break
        else:  # the epoch ran out
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if run.config.eval_every_epoch and len(run.splits.datasets["val"]):
                _log_val(run)
    bar.close()


def train_step(run: Run, batch: dict[str, Any]) -> torch.Tensor:
    """Forward, loss, backward; the optimizer steps when accelerate says the accumulation is complete."""
    accelerator, opt = run.accelerator, run.config.optim
    with accelerator.accumulate(run.model):
        logits = run.model(**run.inputs_of(batch))
        loss = weighted_loss(logits, batch["label"].to(logits.device), batch["valid"].to(logits.device),
                             run.class_weights)
        accelerator.backward(loss)
        if accelerator.sync_gradients and opt.max_grad_norm:
            accelerator.clip_grad_norm_(run.model.parameters(), opt.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    keys = {"accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"), "ece": metrics.get("ece"),
            "available_ap": metrics.get("available", {}).get("average_precision")}
    return {k: float(v) for k, v in keys.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _log_val(run: Run) -> None:
    from reliable_ad.evaluation import accuracy, macro_f1

    val_set = run.splits.datasets["val"]
    batch_size = run.config.eval_batch_size or run.config.optim.batch_size
    loader = run.accelerator.prepare(make_loader(val_set, batch_size, run.config.num_workers))
    pred = predict(run.accelerator, run.model, loader, run.inputs_of, len(val_set))
    keep = pred["valid"]
    if keep.any():
        logits, labels = pred["logits"][keep], pred["labels"][keep]
        weight = None if run.class_weights is None else run.class_weights.cpu()
        loss = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), weight=weight))
        preds = logits.argmax(1)
        run.log.log(run.state["step"], {"val/loss": loss, "val/accuracy": accuracy(labels, preds),
                                        "val/macro_f1": macro_f1(labels, preds, logits.shape[1])})


def finish(accelerator, model, processor, spec, datasets, inputs_of, out: Path, *, training: dict[str, Any],
           batch_size: int, num_workers: int) -> dict[str, Any]:
    """Fit the temperature on val, evaluate val and test with it, save the model with it (and with
    ``training``, the data and split it was trained on, as training.json: `rfnet eval` reuses the split)."""
    from reliable_ad.evaluation import fit_temperature

    unwrapped = accelerator.unwrap_model(model)
    results: dict[str, Any] = {}
    predictions: dict[str, dict] = {}
    for split in ("val", "test"):
        if len(datasets[split]):
            loader = accelerator.prepare(make_loader(datasets[split], batch_size, num_workers))
            predictions[split] = predict(accelerator, model, loader, inputs_of, len(datasets[split]))
        else:
            logger.warning("the %s split is empty; it is not evaluated", split)
    temperature = 1.0
    val = predictions.get("val")
    if val is not None and val["valid"].any():
        temperature = fit_temperature(val["logits"][val["valid"]], val["labels"][val["valid"]])
    else:
        logger.warning("no validation predictions; the temperature stays 1.0 (uncalibrated)")
    unwrapped.set_temperature(temperature)
    for split, pred in predictions.items():
        results[split] = evaluate_split(pred, datasets[split], unwrapped.class_names, temperature,
                                        out / "eval" / split, write=accelerator.is_main_process)
    if accelerator.is_main_process:
        save_rfnet(unwrapped, out / "model", spec, processor=processor,
                   extra_files={TRAINING_FILE: json.dumps(training, indent=2, ensure_ascii=False) + "\n"})
        logger.info("model saved to %s (temperature %.4f)", out / "model", temperature)
    accelerator.wait_for_everyone()
    return results
