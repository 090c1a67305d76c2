"""Depth and salience maps of generated images: RFNet's I_d and I_s inputs (docs/method.md §3).

Every estimator maps `images` (B, 3, H, W) float in [0, 1] (or a list of uint8 HxWx3 arrays / RGB
PIL images) to (B, 1, size, size) float32 in [0, 1], min-max normalised per image, on the input's
device. Depth: near = 1 (the paper used DPT; "dpt-hybrid"). Salience: salient = 1 (the paper used
U2-Net; "u2netp" is its small variant, the one whose weights install offline).

    depth = build_depth("dpt-hybrid", device="cuda")
    salience = build_salience("auto")
    d, s = depth(images), salience(images)

Names are imported lazily, so listing the registered estimators (`registry`) loads without torch.
"""

from __future__ import annotations

from reliable_ad.core.lazy import lazy_exports

_EXPORTS = {
    "DepthEstimator": "base",
    "ModalityEstimator": "base",
    "SalienceEstimator": "base",
    "as_image_batch": "base",
    "minmax_normalize": "base",
    "TransformersDepth": "depth",
    "build_tiny_depth": "depth",
    "DEPTH_ALIASES": "registry",
    "build_depth": "registry",
    "build_salience": "registry",
    "list_depth_estimators": "registry",
    "list_salience_estimators": "registry",
    "FineGrainedSalience": "salience",
    "U2NetPSalience": "salience",
    "find_u2netp": "salience",
    "TransformersSalience": "segmentation",
    "build_tiny_salience": "segmentation",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
