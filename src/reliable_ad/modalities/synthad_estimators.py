"""The "synthad" depth and salience estimators: small transformers models trained from scratch to
predict the SynthAd renderer's true maps from 64 px scenes, so RFNet on SynthAd gets I_d and I_s
the way a real pipeline does, from an estimator, never from the renderer (docs/method.md §3).

Deviation from the paper: a 2-layer DPT (depth) and a 3-stage SegFormer with one foreground channel
(salience), trained on SynthAd, stand in for the pretrained DPT and U2-Net. The trained ones ship in
the package and load through the same `TransformersDepth` / `TransformersSalience` code as any hub
model (`build_depth("synthad")`, `build_salience("synthad")`); this module holds their architecture,
batched prediction and the quality measures against true maps. Training them is not part of the
package: `experiments/synthad/estimators.py` (`fit_estimator`), run by `experiments.synthad.train_rfnet`.

    depth = build_untrained("depth")                          # the architecture, random weights
    depth_correlation(predict_maps(depth, images), true)      # images uint8 (N, 3, S, S); per-image Pearson r
"""

from __future__ import annotations

import numpy as np
import torch

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
