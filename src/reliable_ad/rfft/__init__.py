"""RFFT (SPEC §5): fine-tune the generator's ControlNet (or LoRA adapters) with RFNet's feedback,
regularised by the Consistent Condition, so that more ads are usable on the first attempt.

    sampler = ControlNetInpaintSampler(pipe)            # the pipeline's loop, open for gradients
    trainer = RFFTTrainer.from_config(RFFTConfig(...), out_dir)
    trainer.train()

Names are imported lazily, so `reliable_ad.rfft.config` loads without diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ControlNetInpaintSampler": "sampler",
    "GradedStep": "sampler",
    "SamplingState": "sampler",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
