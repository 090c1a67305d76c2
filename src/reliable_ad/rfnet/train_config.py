"""Configuration of `reliable-ad rfnet train` (SPEC §3): typed nested dataclasses, validated at construction.

Defaults are the paper's schedule (notes): AdamW, lr 1e-4 divided by 10 at epoch 5, 10 epochs, on
the rfnet-r50 preset with DPT depth and U2-Net-p salience. The paper's baselines and the modality
ablation are configs of the same trainer:

    model: {source: baseline-resnet50}                           # generated image only
    model: {source: rfnet-r50, overrides: {modalities: {depth: false}}}   # RFNet without I_d
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliable_ad.core.config import check, from_dict, load_config_file, load_yaml, merge_dicts, to_dict
from reliable_ad.data.splits import WEIGHT_SCHEMES

SOURCE_KINDS = ("auto", "rf1m", "manifest", "annotations")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
DEVICES = ("auto", "cpu")



def _positive_int(value: Any, name: str, minimum: int = 1) -> None:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
           f"{name}={value!r} must be an int >= {minimum}")


@dataclass
class DataSource:
    path: str  # an RF1M folder, a generation run folder or manifest.jsonl, or an annotation export .jsonl
    kind: str = "auto"  # auto | rf1m | manifest | annotations; auto guesses from the path
    label_file: str | None = None  # RF1M only: the label file, when not one of the usual names

    def __post_init__(self) -> None:
        check(isinstance(self.path, str) and bool(self.path), f"data source path={self.path!r} must be a path")
        check(self.kind in SOURCE_KINDS,
               f"data source {self.path!r}: kind={self.kind!r} must be one of {SOURCE_KINDS}")


@dataclass
class DataConfig:
    sources: list[DataSource] = field(default_factory=list)  # concatenated; each sample keeps its source
    unsuitable: str = "drop"  # the RF1M Unsuitable label: drop | keep (needs num_classes 6) | merge:<class>
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test, by product
    split_seed: int = 0  # products' split positions depend only on their id and this seed
    use_cached_modalities: bool = True  # use <source>/modalities/ maps made by `reliable-ad modalities`
    check_files: bool = True  # skip samples whose files are missing (one directory listing per folder)

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, DataSource) else DataSource(**s) if isinstance(s, dict)
                        else DataSource(str(s)) for s in self.sources]
        from reliable_ad.data.readers import policy_class_names

        policy_class_names(self.unsuitable)  # raises ValueError naming the bad policy
        from reliable_ad.data.splits import split_by_product

        split_by_product([], self.split_fractions, self.split_seed)  # validates fractions and seed


@dataclass
class ModelSection:
    source: str = "rfnet-r50"  # preset name (see `reliable-ad rfnet presets`), RFNetConfig file, or saved folder
    overrides: dict[str, Any] = field(default_factory=dict)  # RFNetConfig values over a preset/config file
    load_pretrained: bool = True  # start the encoders from their pretrained weights (presets, config files)
    depth: str | None = None  # depth estimator; None = the source's (modalities.json, else the default)
    salience: str | None = None  # salience estimator; None = the source's
    map_size: int | None = None  # side of the estimators' maps; None = the model's image_size

    def __post_init__(self) -> None:
        check(isinstance(self.source, str) and bool(self.source), f"model.source={self.source!r} must be a name")
        check(isinstance(self.overrides, dict), f"model.overrides={self.overrides!r} must be a mapping")
        if self.map_size is not None:
            _positive_int(self.map_size, "model.map_size", 8)


@dataclass
class OptimConfig:
    epochs: int = 10  # paper: 10
    lr: float = 1e-4  # AdamW learning rate (paper: 1e-4)
    lr_milestones: list[int] = field(default_factory=lambda: [5])  # epochs where lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # paper: lr / 10 at epoch 5
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not published; torch's default)
    batch_size: int = 32  # per process (the global batch is this x processes x grad_accum_steps)
    grad_accum_steps: int = 1  # optimizer step every this many batches
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None = no clipping
    class_weighting: str = "none"  # none | inverse | sqrt_inverse (train-split class counts)
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs); the schedule is unchanged

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "optim.epochs")
        check(self.lr > 0, f"optim.lr={self.lr} must be > 0 (paper: 1e-4)")
        check(all(isinstance(m, int) and m >= 1 for m in self.lr_milestones),
               f"optim.lr_milestones={self.lr_milestones!r} must be epoch numbers >= 1, e.g. [5]")
        check(0 < self.lr_gamma <= 1, f"optim.lr_gamma={self.lr_gamma} must be in (0, 1] (paper: 0.1)")
        check(self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0")
        _positive_int(self.batch_size, "optim.batch_size")
        _positive_int(self.grad_accum_steps, "optim.grad_accum_steps")
        check(self.max_grad_norm is None or self.max_grad_norm > 0,
               f"optim.max_grad_norm={self.max_grad_norm} must be > 0 or null")
        check(self.class_weighting in WEIGHT_SCHEMES,
               f"optim.class_weighting={self.class_weighting!r} must be one of {WEIGHT_SCHEMES}")
        if self.max_steps is not None:
            _positive_int(self.max_steps, "optim.max_steps")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mixed_precision: str = "auto"  # auto = bf16 (fp16 without bf16 support) on GPU, no on CPU
    device: str = "auto"  # auto = the launcher's / cuda if available; cpu forces the CPU
    num_workers: int = 4  # DataLoader worker processes per training process
    eval_batch_size: int | None = None  # None = optim.batch_size
    eval_every_epoch: bool = True  # log val loss, accuracy and macro-F1 after each epoch
    checkpoint_every: int = 1000  # optimizer steps between checkpoints (one is always saved at the end)
    keep_checkpoints: int = 2  # most recent checkpoints kept
    log_every: int = 20  # optimizer steps between log lines (JSONL, and TensorBoard when installed)
    seed: int = 0  # model init (with the preset's seed), data order, dropout

    def __post_init__(self) -> None:
        check(self.mixed_precision in MIXED_PRECISION,
               f"mixed_precision={self.mixed_precision!r} must be one of {MIXED_PRECISION}")
        check(self.device in DEVICES, f"device={self.device!r} must be one of {DEVICES}")
        _positive_int(self.num_workers, "num_workers", 0)
        if self.eval_batch_size is not None:
            _positive_int(self.eval_batch_size, "eval_batch_size")
        _positive_int(self.checkpoint_every, "checkpoint_every")
        _positive_int(self.keep_checkpoints, "keep_checkpoints")
        _positive_int(self.log_every, "log_every")
        _positive_int(self.seed, "seed", 0)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (everything that changes the weights)."""
        d = self.to_dict()
        d["optim"].pop("max_steps")
        return {k: d[k] for k in ("data", "model", "optim", "seed")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return from_dict(cls, data)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A config file (YAML/JSON; None = defaults) with ``overrides`` (nested dict) applied.

        YAML plain scalars like ``1e-4`` are floats (``reliable_ad.core.config.load_yaml``, shared by every command).
        """
        data = load_config_file(path) if path else {}
        return cls.from_dict(merge_dicts(data, overrides or {}))

    def save(self, path: str | os.PathLike) -> Path:
        from reliable_ad.core.io import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=3e-5", "model.overrides.modalities.depth=false"]`` -> nested dict (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ValueError(f"--set {item!r} must look like section.key=value, e.g. optim.lr=3e-5")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r} conflicts with another --set for {part!r}")
        try:
            node[leaf] = load_yaml(text)
        except ValueError as e:
            raise ValueError(f"--set {item!r}: the value is {e}; quote strings, e.g. key='a: b'") from None
    return out
