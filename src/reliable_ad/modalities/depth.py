"""Depth maps of generated images, RFNet's I_d input (docs/method.md §3; the paper used DPT).

`TransformersDepth` runs any transformers depth-estimation model (DPT, Depth Anything, ...) on
batches of tensors. Convention: near = 1, far = 0; these models predict relative inverse depth,
which is min-max normalised per image without inversion. `build_tiny_depth` makes a random-weight
DPT for tests and first runs; it loads from its folder through the same path as a real model.
"""

from __future__ import annotations

import torch

from reliable_ad.modalities.base import DepthEstimator
from reliable_ad.modalities.hf import TransformersEstimator, reinit_unit_gain

TINY_DEPTH_SIZE = 64  # the tiny DPT's input side, in pixels


class TransformersDepth(TransformersEstimator, DepthEstimator):
    """A transformers `AutoModelForDepthEstimation` model as a `DepthEstimator` (near = 1).

    Preprocessing (resize to the processor's size with its aspect and multiple-of rules, rescale,
    mean/std) runs in torch, so a batch stays on its device and gradients reach `images`.
    Output maps are square (size x size) whatever the input aspect, as RFNet's inputs are.
    """

    auto_class = "AutoModelForDepthEstimation"

    def _model_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).predicted_depth.unsqueeze(1)


def build_tiny_depth(size: int = 384, seed: int = 0) -> TransformersDepth:
    """A random-weight DPT (2 layers, width 32, 64 px input), identical for a given seed. No download.

    Its maps are structured noise: it exercises shapes, batching, devices and save/load, nothing more.
    """
    from transformers import DPTConfig, DPTForDepthEstimation

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import DPTImageProcessorPil as DPTImageProcessor
    except ImportError:  # transformers 4
        from transformers import DPTImageProcessor

    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=TINY_DEPTH_SIZE,
        patch_size=8,
        backbone_out_indices=(0, 1),  # one neck stage per layer
        neck_hidden_sizes=(16, 32),
        reassemble_factors=(2, 1),
        fusion_hidden_size=16,
        use_auxiliary_head=False,
    )
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config)
    reinit_unit_gain(model, seed)
    with torch.no_grad():  # the head ends in a ReLU: lift its input so the map is not all zeros
        model.head.head[-2].bias.fill_(2.0)
    processor = DPTImageProcessor(
        size={"height": TINY_DEPTH_SIZE, "width": TINY_DEPTH_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return TransformersDepth(model, processor, size=size)
