"""The contract every depth or salience estimator meets, and the input/output helpers they share.

An estimator takes `images` (B, 3, H, W) float in [0, 1] (or a list of uint8 HxWx3 arrays / RGB PIL
images) and returns maps (B, 1, S, S) float32 in [0, 1], min-max normalised per image, on the
input's device. Subclasses only implement `_predict`, which returns raw maps at any resolution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageInput = Union[torch.Tensor, Sequence[Union[np.ndarray, Image.Image]]]

# Values this far outside [0, 1] are a range bug (a [-1, 1] VAE decode, or 0-255), not rounding.
_RANGE_TOLERANCE = 1e-3


def _check_image_tensor(images: torch.Tensor) -> torch.Tensor:
    if not torch.is_floating_point(images):
        raise TypeError(
            f"images must be a float tensor in [0, 1], got dtype {images.dtype}; for uint8 use images.float() / 255"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    lo, hi = (float(v) for v in images.detach().aminmax())
    if lo < -_RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
        hint = "a [-1, 1] decode? pass (images + 1) / 2" if lo < 0 else "0-255 values? divide by 255"
        raise ValueError(f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] ({hint})")
    return images.float()


def _one_image_to_tensor(image, index: int) -> torch.Tensor:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(
                f"images[{index}] is a PIL image in mode {image.mode!r}; pass image.convert('RGB') "
                "(for RGBA, composite onto a background first)"
            )
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"images[{index}] must be a uint8 HxWx3 numpy array or an RGB PIL image, got {type(image)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"images[{index}] must be a uint8 HxWx3 RGB array, got dtype {image.dtype} and shape {image.shape}"
        )
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div(255.0)


def image_batches(images: ImageInput) -> list[torch.Tensor]:
    """Validate `images` and return it as one or more (B, 3, H, W) float [0, 1] tensors.

    A tensor comes back as one batch. A list of same-sized images is stacked into one batch; a list
    of differently sized images comes back one image per batch (each estimator resizes anyway).
    """
    if isinstance(images, torch.Tensor):
        return [_check_image_tensor(images)]
    if isinstance(images, (np.ndarray, str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(
            "images must be a (B, 3, H, W) float tensor in [0, 1] or a list of uint8 HxWx3 arrays / RGB PIL "
            f"images, got {type(images).__name__}; wrap a single array in a list"
        )
    if len(images) == 0:
        raise ValueError("images is an empty list")
    tensors = [_one_image_to_tensor(im, i)[None] for i, im in enumerate(images)]
    if len({t.shape for t in tensors}) == 1:
        return [torch.cat(tensors)]
    return tensors


def as_image_batch(images: ImageInput) -> torch.Tensor:
    """`images` as a single (B, 3, H, W) float32 tensor in [0, 1]; list items must share one size."""
    batches = image_batches(images)
    if len(batches) > 1:
        sizes = sorted({tuple(b.shape[-2:]) for b in batches})
        raise ValueError(f"images of different sizes {sizes} cannot form one batch; resize them to one size first")
    return batches[0]


def resize_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, h, w) -> (B, 1, size, size), bilinear; antialiased when shrinking, so no value leaves [min, max]."""
    if tuple(maps.shape[-2:]) == (size, size):
        return maps
    shrink = maps.shape[-2] > size or maps.shape[-1] > size
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each map of (B, 1, H, W) to [0, 1]; a constant map (no information) becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    rng = hi - lo
    constant = rng <= eps * torch.clamp(hi.abs(), min=1.0)
    out = (maps - lo) / torch.where(constant, torch.ones_like(rng), rng)
    return torch.where(constant, torch.zeros_like(out), out).clamp(0.0, 1.0)


class ModalityEstimator(ABC):
    """Base of depth and salience estimators: input checks, resizing, normalisation, devices.

    `differentiable` says whether gradients reach `images` (torch models) or not (OpenCV estimators,
    whose output is detached). Gradients follow the ambient mode: wrap calls in `torch.no_grad()`
    when only the maps are wanted.
    """

    kind = "modality"
    differentiable = False

    def __init__(self, size: int = 384):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (output maps are size x size), got {size!r}")
        self.size = size

    @property
    def device(self) -> torch.device:
        """Where the model runs. OpenCV-based estimators always run on the CPU."""
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> ModalityEstimator:
        """Move the model to `device` (a no-op for CPU-only estimators); returns self."""
        torch.device(device)  # validates the spelling
        return self

    def __call__(self, images: ImageInput) -> torch.Tensor:
        """Maps (B, 1, size, size) float32 in [0, 1] for `images`, on the input's device."""
        outs = []
        for batch in image_batches(images):
            raw = self._predict(batch.to(self.device))
            if raw.ndim != 4 or raw.shape[:2] != (batch.shape[0], 1):
                raise RuntimeError(f"{type(self).__name__}._predict returned shape {tuple(raw.shape)}, not (B, 1, h, w)")
            maps = minmax_normalize(resize_maps(raw.float(), self.size))
            outs.append(maps.to(batch.device))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    @abstractmethod
    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """Raw maps (B, 1, h, w), any scale, larger = the kind's "high" end, for `images` on `self.device`."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, device={self.device})"


class DepthEstimator(ModalityEstimator):
    """Depth maps, convention near = 1, far = 0 (relative: min-max normalised per image).

    Monocular models such as DPT and Depth Anything predict relative inverse depth (disparity), which
    already grows towards the camera; it is min-max normalised as is, not inverted.
    """

    kind = "depth"


class SalienceEstimator(ModalityEstimator):
    """Salience maps: 1 = the most salient (foreground) pixels, 0 = the least; min-max normalised per image."""

    kind = "salience"
