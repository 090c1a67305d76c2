"""The "synthad" depth and salience estimators: small transformers models trained from scratch to
predict the SynthAd renderer's true maps from 64 px scenes, so RFNet on SynthAd gets I_d and I_s
the way a real pipeline does, from an estimator, never from the renderer (SPEC §3).

Deviation from the paper: a 2-layer DPT (depth) and a 3-stage SegFormer with one foreground channel
(salience), trained on SynthAd, stand in for the pretrained DPT and U2-Net. They load through the
same `TransformersDepth` / `TransformersSalience` code as any hub model (`build_depth("synthad")`).

    depth = build_untrained("depth")
    fit_estimator(depth, images, true_depth, steps=800)      # images uint8 (N, 3, S, S), maps (N, 1, S, S)
    depth_correlation(depth(images / 255.0), true_depth)     # per-image Pearson r
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

ESTIMATOR_SIZE = 64  # input side of both models: SynthAd's scene size, the synthad RFNet's image size
ESTIMATOR_KINDS = ("depth", "salience")


def build_untrained(kind: str, *, seed: int = 0, size: int = ESTIMATOR_SIZE):
    """A randomly initialised (transformers' own init, seeded) "synthad" estimator of ``kind``."""
    from transformers import DPTConfig, DPTForDepthEstimation, SegformerConfig, SegformerForSemanticSegmentation

    from reliable_ad.modalities.depth import TransformersDepth
    from reliable_ad.modalities.segmentation import TransformersSalience

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import DPTImageProcessorPil as DPTImageProcessor
        from transformers import SegformerImageProcessorPil as SegformerImageProcessor
    except ImportError:  # transformers 4
        from transformers import DPTImageProcessor, SegformerImageProcessor

    torch.manual_seed(seed)
    side = {"height": ESTIMATOR_SIZE, "width": ESTIMATOR_SIZE}
    if kind == "depth":
        # 8 px patches give an 8x8 token grid; the neck and the head upsample back to 64 px
        config = DPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=ESTIMATOR_SIZE, patch_size=8, backbone_out_indices=(0, 1),
                           neck_hidden_sizes=(16, 32), reassemble_factors=(2, 1), fusion_hidden_size=16,
                           use_auxiliary_head=False)
        processor = DPTImageProcessor(size=side, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return TransformersDepth(DPTForDepthEstimation(config), processor, size=size)
    if kind == "salience":
        # stride-2 stages (not SegFormer's usual 4) keep a 32x32 map: SynthAd products are ~22 px tall
        config = SegformerConfig(num_encoder_blocks=3, depths=[1, 1, 1], sr_ratios=[4, 2, 1], hidden_sizes=[16, 32, 64],
                                 patch_sizes=[3, 3, 3], strides=[2, 2, 2], num_attention_heads=[1, 2, 4],
                                 mlp_ratios=[2, 2, 2], decoder_hidden_size=32, num_labels=1,
                                 id2label={0: "salient"}, label2id={"salient": 0})
        processor = SegformerImageProcessor(size=side)
        return TransformersSalience(SegformerForSemanticSegmentation(config), processor, size=size)
    raise ValueError(f"kind={kind!r} must be one of {ESTIMATOR_KINDS}")


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


@torch.no_grad()
def predict_maps(estimator, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The estimator's maps (N, 1, size, size) in [0, 1] for uint8 ``images`` (N, 3, S, S), in batches."""
    return torch.cat([estimator(images[i:i + batch_size].float().div(255.0))
                      for i in range(0, images.shape[0], batch_size)])


# --- quality against the true maps (pure functions on arrays) --------------------------------------


def depth_correlation(pred, true) -> np.ndarray:
    """Pearson r per image between predicted and true depth maps, each (N, 1, S, S) or (N, S, S).

    r is blind to the scale and offset that per-image normalisation changes; a constant map gives 0.
    """
    a, b = _flat(pred), _flat(true)
    a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-12), 0.0)


def salience_iou(pred, true, threshold: float = 0.5) -> np.ndarray:
    """IoU per image of the salient regions (above ``threshold`` after per-image min-max normalisation,
    the estimators' output convention) of predicted and true maps; 1.0 where both are empty."""
    p, t = _normalized(pred) > threshold, _normalized(true) > threshold
    union = (p | t).sum(1)
    return np.where(union > 0, (p & t).sum(1) / np.maximum(union, 1), 1.0)


def _flat(maps) -> np.ndarray:
    array = maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
    return array.reshape(array.shape[0], -1).astype(np.float32)


def _normalized(maps) -> np.ndarray:
    x = _flat(maps)
    lo, span = x.min(1, keepdims=True), np.ptp(x, axis=1, keepdims=True)
    return np.where(span > 1e-8, (x - lo) / np.maximum(span, 1e-8), 0.0)
