"""One checkpoint format for every trainer, for exact resume.

``OUT/checkpoints/step_XXXXXXXX/`` (the optimizer step, 8 digits) holds:

    accelerate's save_state   prepared models (model.safetensors), optimizers, registered schedulers
                              and other registered objects, the grad scaler, every process's RNG states
    extra files               what the trainer writes itself, e.g. RFFT's trainable.safetensors
    trainer_state.json        the trainer's counters ({"step": ..., ...}: epoch, position in the
                              epoch's batches, ...); written last

A checkpoint is written under a hidden name and renamed into place, so it is whole or absent; a
folder without trainer_state.json is never resumed from. The newest whole one is the run's latest.
Saving keeps the newest ``keep`` (and any ``protect``ed steps). Every process calls `save_checkpoint`
and `load_checkpoint` (accelerate saves each process's RNG state); several nodes need a shared
filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reliable_ad import __version__
from reliable_ad.core.io import atomic_write_json

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last: a checkpoint without it is incomplete
_NAME = re.compile(r"^step_(\d{8})$")
_OLD_RFFT_NAME = re.compile(r"^step_\d{7}$")  # RFFT's format before the shared one (state.json inside)


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of the whole checkpoints of a run, oldest first.

    Raises ``ValueError`` for checkpoints of the older RFFT format, which this version cannot resume.
    """
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and (d / STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
        elif _OLD_RFFT_NAME.match(d.name) and (d / "state.json").is_file():
            raise ValueError(f"{d} is a checkpoint of the older RFFT format (7-digit step, state.json), which this "
                             "version cannot resume; finish that run with the version that started it, or choose "
                             "another --out")
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """(step, folder) of the newest whole checkpoint, or None."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's trainer state (its counters)."""
    return json.loads((Path(folder) / STATE_FILE).read_text(encoding="utf-8"))


def prune_checkpoints(out_dir: str | os.PathLike, keep: int, protect: Iterable[int] = ()) -> None:
    """Delete all but the newest ``keep`` checkpoints, never those whose step is in ``protect``."""
    protect = set(protect)
    found = list_checkpoints(out_dir)
    for step, folder in found[: max(0, len(found) - keep)]:
        if step not in protect:
            shutil.rmtree(folder, ignore_errors=True)


def replace_dir(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``; an older ``target`` is moved aside first and removed after."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(accelerator, out_dir: str | os.PathLike, step: int, state: dict[str, Any], *, keep: int,
                    protect: Iterable[int] = (), extra: Callable[[Path], None] | None = None) -> Path:
    """Checkpoint optimizer step ``step`` on every process; returns its folder.

    accelerate's ``save_state`` (everything prepared or registered with the accelerator, and the RNG
    states), then ``extra(folder)`` on the main process (the trainer's own files), then ``state``
    (JSON; ``step`` is added) as trainer_state.json; then the rename into place and pruning to the
    newest ``keep`` (plus ``protect``). Collective: call it on every process.
    """
    final = checkpoint_dir(out_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            if extra is not None:
                extra(tmp)
            atomic_write_json(tmp / STATE_FILE, {**state, "step": step, "reliable_ad_version": __version__})
            replace_dir(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        prune_checkpoints(out_dir, keep, protect)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: str | os.PathLike) -> dict[str, Any]:
    """Restore everything accelerate saved in ``folder`` (models, optimizers, registered objects, scaler,
    RNG states) into the accelerator's objects; returns the trainer state. Call it on every process."""
    accelerator.load_state(str(folder))
    state = read_state(folder)
    logger.info("resumed from %s (step %d)", folder, state["step"])
    return state
