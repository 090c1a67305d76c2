"""Periodic validation of an RFFT run on held-out products: the available rate the judge gives full
generations, a sample grid, and the collapse monitor (docs/method.md §5: unregularised feedback fine-tuning
collapses to uniform, adversarial-looking backgrounds while the available rate soars).

Collapse is measured against the original model on the same products and seeds: background
diversity (mean pairwise distance of backgrounds) relative to the original's, and the mean
distance of the student's backgrounds to the original's. Images are (B, 3, S, S) in [0, 1];
alphas (B, 1, S, S) in [0, 1] with 1 = product.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from reliable_ad.rfft.config import CollapseConfig

_METRIC_SIZE = 32  # backgrounds are compared at this resolution: layout and colour, not texture noise


def _small(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x.float(), size=(_METRIC_SIZE, _METRIC_SIZE), mode="area")


def background_diversity(images01: torch.Tensor, alphas01: torch.Tensor) -> float:
    """Mean over image pairs of the mean |x_i - x_j| over pixels that are background in both."""
    n = images01.shape[0]
    if n < 2:
        raise ValueError(f"background diversity needs at least 2 images, got {n}")
    x, bg = _small(images01), 1.0 - _small(alphas01)
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            w = bg[i] * bg[j]
            total += float((w * (x[i] - x[j]).abs()).sum() / (3 * w.sum()).clamp(min=1e-8))
            pairs += 1
    return total / pairs


def background_distance(images01: torch.Tensor, reference01: torch.Tensor, alphas01: torch.Tensor) -> float:
    """Mean over images of the mean |x - reference| over background pixels, in [0, 1]."""
    x, ref, bg = _small(images01), _small(reference01), 1.0 - _small(alphas01)
    per_image = (bg * (x - ref).abs()).flatten(1).sum(1) / (3 * bg.flatten(1).sum(1)).clamp(min=1e-8)
    return float(per_image.mean())


def image_grid(rows: list[torch.Tensor], max_columns: int = 16) -> bytes:
    """PNG bytes of a grid: one row per (N, 3, S, S) [0, 1] batch, at most `max_columns` images each."""
    tiles = []
    for row in rows:
        row = row[:max_columns].clamp(0, 1)
        tiles.append(torch.cat(list(row), dim=2))  # (3, S, N*S)
    width = max(t.shape[2] for t in tiles)
    tiles = [F.pad(t, (0, width - t.shape[2])) for t in tiles]
    grid = (torch.cat(tiles, dim=1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class CollapseMonitor:
    """Counts consecutive collapsed validations; says what to do once `patience` is reached.

    A validation is collapsed when diversity < min_diversity_ratio x the original model's, or the
    distance to the original's backgrounds exceeds max_distance. A healthy one resets the count and
    becomes the roll-back target.
    """

    cfg: CollapseConfig
    strikes: int = 0
    last_healthy_step: int | None = None

    def update(self, step: int, diversity_ratio: float, distance: float) -> tuple[bool, str | None]:
        """(collapsed, action): action is None, or the configured action once patience is reached."""
        collapsed = diversity_ratio < self.cfg.min_diversity_ratio or distance > self.cfg.max_distance
        if not collapsed:
            self.strikes = 0
            self.last_healthy_step = step
            return False, None
        self.strikes += 1
        return True, (self.cfg.action if self.strikes >= self.cfg.patience else None)

    def state_dict(self) -> dict:
        return {"strikes": self.strikes, "last_healthy_step": self.last_healthy_step}

    def load_state_dict(self, state: dict) -> None:
        self.strikes = int(state.get("strikes", 0))
        self.last_healthy_step = state.get("last_healthy_step")
