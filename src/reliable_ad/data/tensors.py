"""Image tensors: the one conversion from images and maps on disk (or in memory) to the tensors RFNet
sees, shared by RFNet training (`reliable_ad.rfnet.dataset`), inspection and RFFT's judge, so that
every path feeds the model exactly what it was trained on."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class ImageLoadError(RuntimeError):
    """An image or map could not be read at load time. Constructible from one message string so a
    DataLoader worker re-raises it as itself; ``path`` names the file when known."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


def rgb_to_tensor(image: Image.Image | np.ndarray, size: int, *, pad_square: bool = False) -> torch.Tensor:
    """(3, size, size) float in [0, 1] from a PIL image or a uint8 (H, W, 3) RGB / (H, W, 4) RGBA array.

    Transparency is composited onto white (a cut-out product then looks like the paper's
    white-background photos); ``pad_square`` pads to a square with white before resizing, so a
    product's aspect ratio, which Size Mismatch depends on, is kept. Training (RFDataset) and
    inference (the Inspector) both prepare images here, so they see the same pixels.
    """
    im = image
    if isinstance(im, np.ndarray):
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] not in (3, 4):
            raise ValueError(
                f"image must be a uint8 (H, W, 3) RGB or (H, W, 4) RGBA array, got dtype {im.dtype} shape {im.shape}"
            )
        im = Image.fromarray(np.ascontiguousarray(im), "RGBA" if im.shape[2] == 4 else "RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    im = im.convert("RGB")
    if pad_square and im.width != im.height:
        side = max(im.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        im = canvas
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    array = np.array(im, dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _load_rgb(path: str, size: int, *, pad_square: bool = False) -> torch.Tensor:
    """:func:`rgb_to_tensor` of the image file ``path``; an unreadable file raises ImageLoadError."""
    try:
        with Image.open(path) as im:
            return rgb_to_tensor(im, size, pad_square=pad_square)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"cannot read image {path!r}: {e}", path) from e


def map_to_tensor(array: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(1, size, size) float in [0, 1] from a 2-D depth or salience map (raw model output, any
    scale: it is min-max scaled, so a map already in [0, 1] from an estimator passes unchanged)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    array = np.squeeze(np.asarray(array)).astype(np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return _resize_map(array, size)


def _resize_map(array: np.ndarray, size: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return tensor[0].clamp_(0.0, 1.0)


def _load_map(path: str, size: int) -> torch.Tensor:
    """(1, size, size) float in [0, 1] from a cached depth or salience map. An 8- or 16-bit image
    is divided by its full scale; a ``.npy`` array goes through :func:`map_to_tensor`."""
    try:
        if path.lower().endswith(".npy"):
            return map_to_tensor(np.load(path), size)
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "P", "LA"):
                im = im.convert("L")
            array = np.array(im)
        full_scale = 255.0 if array.dtype == np.uint8 else (65535.0 if array.dtype.kind in "iu" else 1.0)
        array = np.clip(array.astype(np.float32) / full_scale, 0.0, 1.0)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"cannot read map {path!r}: {e}", path) from e
    return _resize_map(array, size)


