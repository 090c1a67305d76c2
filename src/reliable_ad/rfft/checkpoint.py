"""RFFT run files: checkpoints for exact resume, the export of the trained model, and the logs.

A checkpoint is a folder `checkpoints/step_XXXXXXX/` written under a temporary name and renamed
into place, so a crash never leaves a half checkpoint that a resume would pick up. It holds only
what is not a pure function of the config: trainable weights, optimizer, LR schedule, grad scaler,
and the trainer's counters. All randomness derives from (seed, step, process, item), so no RNG
state is needed for an exact resume.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from reliable_ad.core.io import append_jsonl, atomic_write_json

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
EXPORT = "export"
_STEP_DIR = re.compile(r"^step_(\d{7})$")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / "state.json").is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def save_checkpoint(out_dir: Path, step: int, *, trainable, optimizer, lr_scheduler, scaler, state: dict) -> Path:
    """Write the checkpoint of optimizer step `step` atomically; returns its folder."""
    from safetensors.torch import save_file

    target = checkpoint_dir(out_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        save_file(trainable.state_dict(), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        atomic_write_json(tmp / "state.json", {**state, "step": step})
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_checkpoint(folder: Path, *, trainable, optimizer=None, lr_scheduler=None, scaler=None) -> dict:
    """Restore a checkpoint into the given objects; returns its trainer state (counters)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    trainable.load_state_dict(load_file(str(folder / "trainable.safetensors")))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    if lr_scheduler is not None:
        lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", map_location="cpu", weights_only=True))
    if scaler is not None and (folder / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", map_location="cpu", weights_only=True))
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def prune_checkpoints(out_dir: Path, keep: int, protect: set[int] = frozenset()) -> None:
    """Delete all but the newest `keep` checkpoints, never those whose step is in `protect`."""
    found = list_checkpoints(out_dir)
    for step, folder in found[: max(0, len(found) - keep)]:
        if step not in protect:
            shutil.rmtree(folder, ignore_errors=True)


def _replace_dir(tmp: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def export_trained(out_dir: Path, trainable, *, step: int, info: dict) -> dict[str, str]:
    """Write the trained model where `reliable-ad generate` can use it; returns {what: folder}.

    ControlNet target: `export/controlnet/`, a diffusers folder (`--controlnet PATH`).
    LoRA on the ControlNet: the adapter (`export/lora/controlnet/`) and the ControlNet with it merged
    (`export/controlnet/`, for `--controlnet PATH`). LoRA on the UNet: `export/lora/unet/` in the
    diffusers LoRA format (`--lora PATH --lora-scale 1.0`: it was trained at scale 1).
    """
    root = Path(out_dir) / EXPORT
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def into(name: str, write) -> None:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            write(tmp)
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[name] = str(target)

    controlnet = trainable.modules.get("controlnet")
    if not trainable.lora:
        into("controlnet", lambda d: controlnet.save_pretrained(d, safe_serialization=True))
    else:
        from reliable_ad.rfft.trainable import ADAPTER

        if controlnet is not None:
            into("lora/controlnet", lambda d: controlnet.save_lora_adapter(d, adapter_name=ADAPTER))
            merged = copy.deepcopy(controlnet)
            merged.fuse_lora(lora_scale=1.0, adapter_names=[ADAPTER])
            merged.unload_lora()
            into("controlnet", lambda d: merged.save_pretrained(d, safe_serialization=True))
        unet = trainable.modules.get("unet")
        if unet is not None:
            from diffusers import StableDiffusionPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=ADAPTER))
            into("lora/unet", lambda d: StableDiffusionPipeline.save_lora_weights(d, unet_lora_layers=layers))
    atomic_write_json(root / "export.json", {"step": step, "written": written, "model": info})
    return written


class RunLog:
    """Scalars to `logs/train.jsonl` (always) and to TensorBoard when it is installed and wanted."""

    def __init__(self, out_dir: Path, *, tensorboard: bool, enabled: bool = True):
        self.path = Path(out_dir) / "logs" / "train.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(out_dir) / "logs" / "tensorboard"))
            except ImportError:
                logger.info("TensorBoard not installed (pip install tensorboard); logging to %s only", self.path)

    def log(self, kind: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        append_jsonl(self.path, {"kind": kind, "step": step, **values})
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
