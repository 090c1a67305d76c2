"""Configuration of `reliable-ad rfnet train` (docs/method.md §3): typed nested dataclasses, validated
at construction.

Defaults are the paper's schedule: AdamW, learning rate 1e-4 divided by 10 at epoch 5, 10 epochs, on
the rfnet-r50 preset with DPT depth and U2-Net-p salience. The paper's baselines and the modality
ablation are configs of the same trainer:

    model: {source: baseline-resnet50}                           # generated image only
    model: {source: rfnet-r50, overrides: {modalities: {depth: false}}}   # RFNet without I_d

``optim`` and ``runtime`` use the vocabulary RFFT uses too (`reliable_ad.training.config`); files with
the older names (``optim.lr``, ``optim.grad_accum_steps``, top-level ``seed``, ``device``, ...) load
with a FutureWarning naming the new key (`RENAMED`), and so do the constructors' old keywords.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliable_ad.core.config import check, from_dict, load_config_file, load_yaml, merge_dicts, to_dict
from reliable_ad.data.splits import WEIGHT_SCHEMES
from reliable_ad.training import config as shared
from reliable_ad.core.io import atomic_write_text
from reliable_ad.training.config import accepts_old_names, check_int, rename_keys
from reliable_ad.training.resume import identity_view

SOURCE_KINDS = ("auto", "rf1m", "manifest", "annotations")

# old dotted key -> new dotted key (old config files still load, with a FutureWarning)
RENAMED = {
    "optim.lr": "optim.learning_rate",
    "optim.grad_accum_steps": "optim.gradient_accumulation_steps",
    "seed": "runtime.seed",
    "mixed_precision": "runtime.mixed_precision",
    "device": "runtime.device",
    "log_every": "runtime.log_every",
    "checkpoint_every": "runtime.checkpoint_every",
    "keep_checkpoints": "runtime.keep_checkpoints",
}

_TOP_LEVEL_RENAMED = {old: new for old, new in RENAMED.items() if "." not in old}

# what a resumed run must share with the run it resumes (everything that changes the weights)
RESUME_IDENTITY = ("data", "model", "optim", "runtime.seed")
RESUME_MAY_CHANGE = ("optim.max_steps",)


@dataclass
class DataSource:
    path: str  # an RF1M folder, a generation run folder or manifest.jsonl, or an annotation export .jsonl
    kind: str = "auto"  # auto | rf1m | manifest | annotations; auto guesses from the path
    label_file: str | None = None  # RF1M only: the label file, when not one of the usual names
    label_codes: str = "rf1m"  # RF1M only: integer labels' meaning: rf1m (README 1..6), paper0 (0..5) or a file

    def __post_init__(self) -> None:
        check(isinstance(self.path, str) and bool(self.path), f"data source path={self.path!r} must be a path")
        check(self.kind in SOURCE_KINDS,
               f"data source {self.path!r}: kind={self.kind!r} must be one of {SOURCE_KINDS}")
        from reliable_ad.data.label_codes import resolve_label_codes

        resolve_label_codes(self.label_codes)  # raises ValueError naming the mapping and the choices


@dataclass
class DataConfig:
    sources: list[DataSource] = field(default_factory=list)  # concatenated; each sample keeps its source
    unsuitable: str = "drop"  # the RF1M Unsuitable label: drop | keep (needs num_classes 6) | merge:<class>
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test, by product
    split_seed: int = 0  # products' split positions depend only on their id and this seed
    use_cached_modalities: bool = True  # use <source>/modalities/ maps made by `reliable-ad modalities`
    check_files: bool = True  # skip samples whose files are missing (one directory listing per folder)
    shards: str | None = None  # train on WebDataset shards (`reliable-ad data shard`): folder or glob; the
    # sources, when given, then provide only the val and test splits

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
            check_int(self.map_size, "model.map_size", 8)


@accepts_old_names({"lr": "learning_rate", "grad_accum_steps": "gradient_accumulation_steps"})
@dataclass
class OptimConfig(shared.OptimConfig):
    """The shared optimizer settings with RFNet's defaults, plus the paper's epoch schedule."""

    learning_rate: float = 1e-4  # AdamW (paper: 1e-4)
    weight_decay: float = 0.01  # not published; torch's default
    batch_size: int = 32  # per process (the global batch is this x processes x gradient_accumulation_steps)
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs); the schedule is unchanged
    epochs: int = 10  # paper: 10
    lr_milestones: list[int] = field(default_factory=lambda: [5])  # epochs where the learning rate x lr_gamma
    lr_gamma: float = 0.1  # paper: learning rate / 10 at epoch 5
    class_weighting: str = "none"  # none | inverse | sqrt_inverse (train-split class counts)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.epochs, "optim.epochs")
        check(all(isinstance(m, int) and m >= 1 for m in self.lr_milestones),
              f"optim.lr_milestones={self.lr_milestones!r} must be epoch numbers >= 1, e.g. [5]")
        check(0 < self.lr_gamma <= 1, f"optim.lr_gamma={self.lr_gamma} must be in (0, 1] (paper: 0.1)")
        check(self.class_weighting in WEIGHT_SCHEMES,
              f"optim.class_weighting={self.class_weighting!r} must be one of {WEIGHT_SCHEMES}")


@dataclass
class RuntimeConfig(shared.RuntimeConfig):
    """The shared runtime settings with RFNet training's defaults."""

    mixed_precision: str = "auto"  # auto = bf16 (fp16 without bf16 support) on GPU, no on CPU
    log_every: int = 20
    checkpoint_every: int = 1000  # 0 = only at the end (one is always saved at the end)
    keep_checkpoints: int = 2


@accepts_old_names(_TOP_LEVEL_RENAMED)  # TrainConfig(seed=...) etc. still work, with a FutureWarning
@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # seed (model init, data order, dropout), ...
    num_workers: int = 4  # DataLoader worker processes per training process
    eval_batch_size: int | None = None  # None = optim.batch_size
    eval_every_epoch: bool = True  # log val loss, accuracy and macro-F1 after each epoch

    def __post_init__(self) -> None:
        check_int(self.num_workers, "num_workers", 0)
        if self.eval_batch_size is not None:
            check_int(self.eval_batch_size, "eval_batch_size")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (everything that changes the weights)."""
        return identity_view(self.to_dict(), RESUME_IDENTITY, RESUME_MAY_CHANGE)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, warn: bool = True) -> TrainConfig:
        """From plain data; older key names are moved to today's (`RENAMED`) with a FutureWarning unless
        ``warn`` is False. A run's config.json loads too (its ``reliable_ad_version`` is dropped)."""
        data = {k: v for k, v in data.items() if k != "reliable_ad_version"}
        return from_dict(cls, rename_keys(data, RENAMED, where="rfnet train config", warn=warn))

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A config file (YAML/JSON; None = defaults) with ``overrides`` (nested dict) applied.

        YAML plain scalars like ``1e-4`` are floats (``reliable_ad.core.config.load_yaml``, shared by every command).
        """
        data = rename_keys(load_config_file(path), RENAMED, where=str(path)) if path else {}
        # old names on either side are renamed first, so that an override meets the key it overrides
        return cls.from_dict(merge_dicts(data, rename_keys(overrides or {}, RENAMED, where="command line")))

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.learning_rate=3e-5", "model.overrides.modalities.depth=false"]`` -> nested dict (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ValueError(f"--set {item!r} must look like section.key=value, e.g. optim.learning_rate=3e-5")
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
