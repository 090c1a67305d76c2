"""Depth and salience maps of generated images: RFNet's I_d and I_s inputs (SPEC §3).

Every estimator maps `images` (B, 3, H, W) float in [0, 1] (or a list of uint8 HxWx3 arrays / RGB
PIL images) to (B, 1, size, size) float32 in [0, 1], min-max normalised per image, on the input's
device. Depth: near = 1 (the paper used DPT; "dpt-hybrid"). Salience: salient = 1 (the paper used
U2-Net; "u2netp" is its small variant, the one whose weights install offline).

    depth = build_depth("dpt-hybrid", device="cuda")
    salience = build_salience("auto")
    d, s = depth(images), salience(images)
"""

from reliable_ad.modalities.base import (
    DepthEstimator,
    ModalityEstimator,
    SalienceEstimator,
    as_image_batch,
    minmax_normalize,
)
from reliable_ad.modalities.depth import DEPTH_ALIASES, TransformersDepth, build_tiny_depth
from reliable_ad.modalities.registry import (
    build_depth,
    build_salience,
    list_depth_estimators,
    list_salience_estimators,
)
from reliable_ad.modalities.salience import FineGrainedSalience, U2NetPSalience, find_u2netp
from reliable_ad.modalities.segmentation import TransformersSalience, build_tiny_salience

__all__ = [
    "DEPTH_ALIASES",
    "DepthEstimator",
    "FineGrainedSalience",
    "ModalityEstimator",
    "SalienceEstimator",
    "TransformersDepth",
    "TransformersSalience",
    "U2NetPSalience",
    "as_image_batch",
    "build_depth",
    "build_salience",
    "build_tiny_depth",
    "build_tiny_salience",
    "find_u2netp",
    "list_depth_estimators",
    "list_salience_estimators",
    "minmax_normalize",
]
