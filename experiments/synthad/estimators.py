"""Training the "synthad" depth and salience estimators (docs/method.md §3 on SynthAd): fit the
architecture of `reliable_ad.modalities.synthad_estimators` to the renderer's true maps. Run by
`experiments.synthad.train_rfnet`; the trained models ship in the package and load with
`build_depth("synthad")` / `build_salience("synthad")`.

    depth = build_untrained("depth")
    fit_estimator(depth, images, true_depth, steps=800)      # images uint8 (N, 3, S, S), maps (N, 1, S, S)
    depth_correlation(predict_maps(depth, images), true_depth)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from reliable_ad.modalities.synthad_estimators import (ESTIMATOR_KINDS, ESTIMATOR_SIZE, build_untrained,  # noqa: F401
                                                       depth_correlation, predict_maps, salience_iou)

logger = logging.getLogger(__name__)


def _raw_maps(estimator, images: torch.Tensor, side: int) -> torch.Tensor:
    """The model's trainable output at ``side`` px: depth itself (near = 1), or salience logits."""
    outputs = estimator.model(pixel_values=estimator.preprocess(images))
    raw = outputs.predicted_depth.unsqueeze(1) if estimator.kind == "depth" else outputs.logits
    return F.interpolate(raw, size=(side, side), mode="bilinear", align_corners=False)


def _degrade(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half the batch slightly blurred and noisy: generators redraw scenes less crisply than the renderer."""
    n = images.shape[0]
    sigma = float(torch.empty(1).uniform_(0.3, 0.9, generator=gen))
    radius = max(1, math.ceil(2 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = (taps / taps.sum()).to(images)
    blurred = F.conv2d(F.pad(images, (radius,) * 4, mode="replicate"), taps.view(1, 1, 1, -1).expand(3, 1, 1, -1),
                       groups=3)
    blurred = F.conv2d(blurred, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    noisy = blurred + torch.randn(images.shape, generator=gen).to(images) * (4.0 / 255.0)
    pick = (torch.rand(n, generator=gen) < 0.5).to(images.device).view(n, 1, 1, 1)
    return torch.where(pick, noisy.clamp(0.0, 1.0), images)


def fit_estimator(estimator, images: torch.Tensor, targets: torch.Tensor, *, steps: int, batch_size: int = 32,
                  lr: float = 3e-3, seed: int = 0, log_every: int = 100,
                  log: Callable[[str], None] | None = None) -> list[float]:
    """Train ``estimator``'s model in place to predict ``targets`` from ``images``; returns the losses.

    ``images``: uint8 (N, 3, S, S); ``targets``: float (N, 1, S, S) true maps in [0, 1]. Depth is an
    L1 regression of the map; salience a per-pixel binary cross-entropy against the soft true map.
    Batches are drawn with replacement from a generator seeded by ``seed``, flipped left-right half
    the time (maps too) and degraded half the time; AdamW with a one-cycle learning rate.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, S, S), got {images.dtype} {tuple(images.shape)}")
    if targets.ndim != 4 or targets.shape[1] != 1 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be (N, 1, S, S) with N = {images.shape[0]}, got {tuple(targets.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be a positive int")
    model = estimator.model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    side = targets.shape[-1]
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        # 1. a batch, flipped and degraded at random
        index = torch.randint(images.shape[0], (batch_size,), generator=gen)
        x = images[index].float().div_(255.0)
        y = targets[index].float()
        flip = (torch.rand(batch_size, generator=gen) < 0.5).view(-1, 1, 1, 1)
        x, y = torch.where(flip, x.flip(-1), x), torch.where(flip, y.flip(-1), y)
        x = _degrade(x, gen)
        # 2. loss against the true map, one optimizer step
        raw = _raw_maps(estimator, x, side)
        if estimator.kind == "depth":
            loss = F.l1_loss(raw, y)
        else:
            loss = F.binary_cross_entropy_with_logits(raw, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log is not None and (step % log_every == 0 or step == steps):
            recent = float(np.mean(losses[-log_every:]))
            log(f"{estimator.kind} estimator: step {step}/{steps}, loss {recent:.4f}, {time.perf_counter() - t0:.0f}s")
    estimator.model.eval().requires_grad_(False)
    return losses
