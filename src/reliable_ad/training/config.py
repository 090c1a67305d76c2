"""The settings every trainer shares, named as diffusers' and accelerate's training scripts name them.

``optim``: ``learning_rate``, ``weight_decay``, ``batch_size`` (per process), ``gradient_accumulation_steps``,
``max_grad_norm``, ``max_steps``. ``runtime``: ``seed``, ``mixed_precision`` (accelerate's names, plus
``auto``), ``device``, ``log_every``, ``checkpoint_every``, ``keep_checkpoints``, ``tensorboard``.
RFNet training (docs/method.md §3) and RFFT (§5) subclass `OptimConfig` to add their schedule and set
their paper defaults; they share `RuntimeConfig` (RFNet with its own defaults).

Config files written with older names still load: `rename_keys` moves each old key to its new place
with a ``FutureWarning`` naming both. Torch-free: command lines import this to parse their flags.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from dataclasses import dataclass
from typing import Any

from reliable_ad.core.config import check

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")  # auto = bf16 (fp16 without bf16 support) on a GPU, no on CPU
DEVICES = ("auto", "cpu")  # auto = the launcher's device / a GPU when there is one; cpu forces the CPU


def check_int(value: Any, name: str, minimum: int = 1) -> None:
    """``name=value`` must be an int (not a bool) >= ``minimum``."""
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name}={value!r} must be an int >= {minimum}")


@dataclass
class OptimConfig:
    """Optimizer settings of every trainer (AdamW); trainers subclass it for their schedule and defaults."""

    learning_rate: float = 1e-4  # peak AdamW learning rate
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    batch_size: int = 8  # samples per micro-batch per process (global batch: x processes x accumulation)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None = no clipping
    max_steps: int | None = None  # optimizer steps to stop after; None = the end of the trainer's schedule

    def __post_init__(self) -> None:
        check(isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0,
              f"optim.learning_rate={self.learning_rate!r} must be > 0, e.g. 1e-4")
        check(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0,
              f"optim.weight_decay={self.weight_decay!r} must be >= 0")
        check_int(self.batch_size, "optim.batch_size")
        check_int(self.gradient_accumulation_steps, "optim.gradient_accumulation_steps")
        check(self.max_grad_norm is None or self.max_grad_norm > 0,
              f"optim.max_grad_norm={self.max_grad_norm!r} must be > 0, or null for no clipping")
        if self.max_steps is not None:
            check_int(self.max_steps, "optim.max_steps")


@dataclass
class RuntimeConfig:
    """Where and how a trainer runs, logs and checkpoints; nothing here changes what is learnt but the seed."""

    seed: int = 0  # every random draw of a run derives from it: resume is exact
    mixed_precision: str = "no"  # auto | no | fp16 | bf16 (accelerate autocast; trained weights stay fp32)
    device: str = "auto"  # auto | cpu; under `accelerate launch` each process gets its own device
    log_every: int = 10  # optimizer steps between log records
    checkpoint_every: int = 100  # optimizer steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 3  # newest checkpoints kept (a trainer may protect one more, e.g. a roll-back target)
    tensorboard: bool = True  # also log to TensorBoard when it is installed (JSON Lines are always written)

    def __post_init__(self) -> None:
        check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**63,
              f"runtime.seed={self.seed!r} must be an int in [0, 2**63)")
        check(self.mixed_precision in MIXED_PRECISION,
              f"runtime.mixed_precision={self.mixed_precision!r} is not one of {MIXED_PRECISION}")
        check(self.device in DEVICES, f"runtime.device={self.device!r} is not one of {DEVICES}")
        check_int(self.log_every, "runtime.log_every")
        check_int(self.checkpoint_every, "runtime.checkpoint_every", 0)
        check_int(self.keep_checkpoints, "runtime.keep_checkpoints")
        check(isinstance(self.tensorboard, bool), f"runtime.tensorboard={self.tensorboard!r} must be true or false")


_ABSENT = object()


def _pop(data: dict, path: list[str]) -> Any:
    node = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return _ABSENT
    return node.pop(path[-1], _ABSENT) if isinstance(node, dict) else _ABSENT


def rename_keys(data: dict, renames: dict[str, str], *, where: str = "config", warn: bool = True) -> dict:
    """A copy of ``data`` with each deprecated key of ``renames`` (dotted old path -> dotted new path)
    moved to its new path; a ``FutureWarning`` names both (unless ``warn`` is False, for run folders
    written by an older version). Raises ``ValueError`` when a config gives both names."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    for old, new in renames.items():
        value = _pop(out, old.split("."))
        if value is _ABSENT:
            continue
        *parents, leaf = new.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key, {}), dict):
                raise ValueError(f"{where}: {old!r} moved to {new!r}, but {key!r} is not a mapping")
            node = node.setdefault(key, {})
        if leaf in node:
            raise ValueError(f"{where}: both {old!r} (the old name) and {new!r} are given; keep only {new!r}")
        node[leaf] = value
        if warn:
            warnings.warn(f"{where}: {old!r} is deprecated, use {new!r} (read as {new}={value!r}); "
                          "the old name will stop working in a future release", FutureWarning, stacklevel=3)
    return out


def accepts_old_names(renames: dict[str, str]):
    """Class decorator for a config dataclass: its constructor also takes the old top-level names of
    ``renames`` (old -> dotted new path, as `rename_keys`) as keyword arguments, with the same
    FutureWarning; a value for a nested path replaces that field of the section (given or default)."""

    def wrap(cls):
        init = cls.__init__
        old_names = set(renames)
        defaults = {f.name: f for f in dataclasses.fields(cls)}

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            old = {k: kwargs.pop(k) for k in list(kwargs) if k in old_names}
            for key, value in rename_keys(old, renames, where=cls.__name__).items():
                if key in kwargs and not isinstance(value, dict):
                    raise TypeError(f"{cls.__name__}() got {key!r} under its old and its new name; give only {key!r}")
                if isinstance(value, dict):  # a section: replace those of its fields
                    f = defaults[key]
                    section = kwargs[key] if key in kwargs else f.default_factory()
                    value = dataclasses.replace(section, **value)
                kwargs[key] = value
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    return wrap
