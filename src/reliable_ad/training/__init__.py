"""What RFNet training (docs/method.md §3) and RFFT (§5) share: one accelerator set-up, one
checkpoint format with exact resume, one run log, one resume-config check, one settings vocabulary.

    accelerator = make_accelerator(cfg.runtime, gradient_accumulation_steps=...)   # accelerator.py
    check_resume_config(out, to_dict(cfg), ("data", "model", "optim"), ignore=("optim.max_steps",))
    save_checkpoint(accelerator, out, step, state, keep=3)  /  load_checkpoint(accelerator, folder)
    log = RunLog(out, tensorboard=True, enabled=accelerator.is_main_process); log.log(step, {...})

Layering: below `generation`, `modalities`, `rfnet` and `rfft` (which use it), above `core` and
`data`; it imports nothing above it. Names load lazily: `reliable_ad.training.config` and
`reliable_ad.training.resume` are torch-free.
"""

from __future__ import annotations

from reliable_ad.core.lazy import lazy_exports

_EXPORTS = {
    "OptimConfig": "config",
    "RuntimeConfig": "config",
    "MIXED_PRECISION": "config",
    "DEVICES": "config",
    "rename_keys": "config",
    "make_accelerator": "accelerator",
    "resolve_mixed_precision": "accelerator",
    "CHECKPOINTS": "checkpoint",
    "checkpoint_dir": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint",
    "prune_checkpoints": "checkpoint",
    "save_checkpoint": "checkpoint",
    "RunLog": "runlog",
    "check_resume_config": "resume",
    "identity_view": "resume",
    "write_run_config": "resume",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
