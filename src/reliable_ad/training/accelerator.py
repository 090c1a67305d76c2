"""The one Accelerator set-up of RFNet training, RFNet evaluation and RFFT.

CPU runs (``device: cpu``, or no GPU) use gloo when launched as several processes (torchrun's
launcher: ``accelerate launch --multi_gpu --num_processes N ... --device cpu``); mixed precision is
named as accelerate names it, with ``auto`` = bf16 (fp16 without bf16 support) on a GPU, ``no`` on CPU.
"""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs


_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _uses_cpu(device: str) -> bool:
    return device == "cpu" or not (torch.cuda.is_available() or torch.backends.mps.is_available())


def _launched() -> bool:
    """Started as one of several processes (torchrun / accelerate launch, or an MPI launcher)."""
    return "LOCAL_RANK" in os.environ or any(int(os.environ.get(v, "1") or 1) > 1 for v in _WORLD_SIZE_VARS)


def resolve_mixed_precision(setting: str, device: str) -> str:
    """accelerate's name for ``setting`` on ``device`` ("auto" resolved; others as they are)."""
    if setting != "auto":
        return setting
    if _uses_cpu(device) or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(runtime, *, gradient_accumulation_steps: int = 1) -> Accelerator:
    """An Accelerator for ``runtime`` (a `RuntimeConfig`, or anything with ``device`` and ``mixed_precision``).

    ``gradient_accumulation_steps``: for trainers that step through ``accelerator.accumulate``; RFFT
    accumulates by hand and leaves it at 1. Logging is not the accelerator's: see `RunLog`.
    """
    cpu = _uses_cpu(runtime.device)
    return Accelerator(
        cpu=cpu, mixed_precision=resolve_mixed_precision(runtime.mixed_precision, runtime.device),
        gradient_accumulation_steps=gradient_accumulation_steps,
        kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if cpu and _launched() else None,
    )
