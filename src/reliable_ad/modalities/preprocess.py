"""A transformers image processor's resize + normalise, redone in torch on (B, 3, H, W) [0, 1] tensors.

The processors work on PIL/numpy images one at a time and leave the graph; this keeps a batch on
its device and differentiable. It reads size, aspect handling, multiple-of rounding, rescale and
mean/std from the processor; padding and cropping are not reproduced (the depth and segmentation
processors used here do neither by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# PIL resample codes as stored in preprocessor_config.json -> torch modes (no lanczos in torch).
_RESAMPLE_TO_TORCH = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


@dataclass(frozen=True)
class TorchPreprocess:
    """Resize + normalise as an image processor would, for images already in [0, 1]."""

    height: int
    width: int
    keep_aspect_ratio: bool = False  # DPT-style: scale both sides by the factor closer to 1
    shortest_edge: bool = False  # height == width == the target shortest edge, aspect kept
    ensure_multiple_of: int = 1
    mode: str = "bicubic"
    do_resize: bool = True
    value_scale: float = 1.0  # 255 * rescale_factor: 1.0 for the usual 1/255
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    do_normalize: bool = True

    @classmethod
    def from_image_processor(cls, processor, fallback_size: int = 384) -> TorchPreprocess:
        """Read the settings of a transformers image processor (any backend); missing ones get defaults."""
        size = getattr(processor, "size", None)
        get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
        height, width, shortest = get("height"), get("width"), get("shortest_edge")
        if height and width:
            h, w, short = int(height), int(width), False
        elif shortest:
            h = w = int(shortest)
            short = True
        else:
            h = w = int(fallback_size)
            short = False
        rescale = float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255)
        mean = getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)
        std = getattr(processor, "image_std", None) or (0.5, 0.5, 0.5)
        return cls(
            height=h,
            width=w,
            keep_aspect_ratio=bool(getattr(processor, "keep_aspect_ratio", False)),
            shortest_edge=short,
            ensure_multiple_of=int(getattr(processor, "ensure_multiple_of", 1) or 1),
            mode=_RESAMPLE_TO_TORCH.get(int(getattr(processor, "resample", 3) or 3), "bicubic"),
            do_resize=bool(getattr(processor, "do_resize", True)),
            value_scale=255.0 * rescale if getattr(processor, "do_rescale", True) else 255.0,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            do_normalize=bool(getattr(processor, "do_normalize", True)),
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the model sees for an input of (height, width)."""
        if not self.do_resize:
            return height, width
        if self.shortest_edge:
            scale_h = scale_w = self.height / min(height, width)
        else:
            scale_h, scale_w = self.height / height, self.width / width
            if self.keep_aspect_ratio:  # scale as little as possible, as DPT's processor does
                scale_h = scale_w = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
        return _multiple(scale_h * height, self.ensure_multiple_of), _multiple(scale_w * width, self.ensure_multiple_of)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> model-ready pixel values (B, 3, h, w)."""
        h, w = self.output_size(*images.shape[-2:])
        x = images
        if (h, w) != tuple(images.shape[-2:]):
            antialias = self.mode in ("bilinear", "bicubic") and (h < images.shape[-2] or w < images.shape[-1])
            kwargs = {} if self.mode == "nearest" else {"align_corners": False, "antialias": antialias}
            x = F.interpolate(images, size=(h, w), mode=self.mode, **kwargs)
            if self.mode == "bicubic":  # bicubic overshoots; the processors clip to the pixel range too
                x = x.clamp(0.0, 1.0)
        x = x * self.value_scale
        if self.do_normalize:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x


def _multiple(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)
