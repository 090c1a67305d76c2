"""The run log of every trainer: ``OUT/logs/metrics.jsonl`` always, TensorBoard when installed and wanted.

One JSON line per call: ``{"step": ..., "kind": ... (when given), <values>, "time": ...}``.
TensorBoard (``OUT/logs/tensorboard/``) gets the numeric values as ``kind/key`` (or ``key``).
Only the main process logs: pass ``enabled=accelerator.is_main_process``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from reliable_ad.core.io import append_jsonl

logger = logging.getLogger(__name__)

LOGS = "logs"
METRICS = "metrics.jsonl"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class RunLog:
    """``log(step, values, kind=...)`` appends to logs/metrics.jsonl and, when wanted and installed, to
    TensorBoard; ``config`` (a dict) is recorded with TensorBoard as text. ``close()`` at the end."""

    def __init__(self, out_dir: str | os.PathLike, *, tensorboard: bool = True, enabled: bool = True,
                 config: dict[str, Any] | None = None):
        self.path = Path(out_dir) / LOGS / METRICS
        self.enabled = enabled
        self.writer = None
        if not (enabled and tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package
        except ImportError:
            logger.warning("TensorBoard logging is off (pip install tensorboard, or set runtime.tensorboard: false); "
                           "metrics go to %s", self.path)
            return
        self.writer = SummaryWriter(str(Path(out_dir) / LOGS / "tensorboard"))
        if config is not None:
            flat = {k: str(v) for k, v in _flatten(config).items()}
            self.writer.add_text("config", "```\n" + json.dumps(flat, indent=1) + "\n```")

    def log(self, step: int, values: dict[str, Any], *, kind: str | None = None) -> None:
        if not self.enabled:
            return
        head = {"step": step} if kind is None else {"step": step, "kind": kind}
        append_jsonl(self.path, {**head, **values, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{key}" if kind else key, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
