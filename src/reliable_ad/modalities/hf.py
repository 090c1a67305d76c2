"""Shared plumbing for estimators that wrap a transformers model plus its image processor.

Loading by hub id or local folder, saving, freezing and device moves live here; the depth and
salience subclasses only say which Auto class to load and how to turn the model output into a map.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path

import torch

from reliable_ad.modalities.base import ModalityEstimator
from reliable_ad.modalities.preprocess import TorchPreprocess

def reinit_unit_gain(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw conv/linear weights at unit gain (biases ~N(0, 0.1)) from `seed`, in place.

    transformers' init (std 0.02) makes a random tiny model's output almost constant, so maps of
    different images would differ only by rounding noise; tiny test models need visible structure.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                module.weight.normal_(0.0, module.weight[0].numel() ** -0.5, generator=gen)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=gen)
    return model


def load_image_processor(name_or_path: str | os.PathLike):
    """The model's image processor, preferring the PIL backend (no torchvision needed; only its settings are read)."""
    import transformers
    from transformers import AutoImageProcessor

    if int(transformers.__version__.split(".")[0]) >= 5:
        return AutoImageProcessor.from_pretrained(str(name_or_path), backend="pil")
    return AutoImageProcessor.from_pretrained(str(name_or_path), use_fast=False)


def _load_error(name_or_path, what: str, err: Exception) -> Exception:
    where = "folder" if Path(str(name_or_path)).expanduser().is_dir() else "hub id"
    return (OSError if isinstance(err, OSError) else ValueError)(
        f"could not load the {what} {str(name_or_path)!r} ({where}): {err}. A hub id must be downloadable or "
        "already in the local Hugging Face cache (offline: HF_HUB_OFFLINE=1); or pass a local folder holding "
        "config.json, the weights and preprocessor_config.json"
    )


class TransformersEstimator(ModalityEstimator):
    """A frozen transformers vision model + its processor settings, run on batches of tensors.

    Subclasses set `auto_class` (the name of a transformers Auto class) and implement `_model_map`.
    """

    auto_class = ""
    differentiable = True

    def __init__(self, model: torch.nn.Module, image_processor, size: int = 384):
        super().__init__(size)
        self.model = model.eval().requires_grad_(False)
        self.image_processor = image_processor
        fallback = getattr(model.config, "image_size", 384)
        fallback = fallback[0] if isinstance(fallback, (list, tuple)) else fallback
        self.preprocess = TorchPreprocess.from_image_processor(image_processor, fallback_size=int(fallback))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, size: int = 384, device: str | torch.device | None = None, **model_kwargs
    ):
        """Load model and processor from a hub id or a local folder (as written by `save_pretrained`).

        `model_kwargs` go to the Auto class's `from_pretrained` (e.g. `dtype=torch.float16`, `revision=`).
        """
        model, processor = cls._load(name_or_path, **model_kwargs)
        est = cls(model, processor, size=size)
        return est.to(device) if device is not None else est

    @classmethod
    def _load(cls, name_or_path: str | os.PathLike, **model_kwargs):
        """(model, image processor) from a hub id or folder; failures name the source and the fixes."""
        import transformers

        auto = getattr(transformers, cls.auto_class)
        try:
            processor = load_image_processor(name_or_path)
            model = auto.from_pretrained(str(name_or_path), **model_kwargs)
        except (OSError, ValueError) as e:
            raise _load_error(name_or_path, f"{cls.kind} model", e) from e
        return model, processor

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write model weights, config and processor settings to `folder`, loadable by `from_pretrained`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device) -> TransformersEstimator:
        self.model.to(torch.device(device))
        return self

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        pixel_values = self.preprocess(images).to(self.dtype)
        return self._model_map(pixel_values).float()

    @abstractmethod
    def _model_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Raw maps (B, 1, h, w) from the model's output for preprocessed `pixel_values`."""

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return f"{type(self).__name__}({name!r}, size={self.size}, device={self.device})"
