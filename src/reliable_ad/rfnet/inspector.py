"""RFNet inference (docs/method.md §3, §4): turn (product, generated ad, caption) into a verdict.

`Inspector` bundles an RFNet, its processor and the depth and salience estimators it was trained
with (``modalities.json``, see modality_spec.py). It prepares images exactly as training does
(`data.tensors.rgb_to_tensor`), computes the maps itself, batched on the model's device, unless cached
maps are given, and returns one `Verdict` per image. `reliable-ad inspect` and Recurrent
Generation use it.

    inspector = Inspector.from_pretrained("tiny")          # or a trained folder, a hub id
    verdicts = inspector.inspect(products, generated, captions)
    verdicts[0].label, verdicts[0].p_available
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reliable_ad.core.labels import AVAILABLE_INDEX
from reliable_ad.rfnet.modality_spec import ModalitySpec, resolve_modality_spec

MapInput = Any  # None | np.ndarray (h, w) | torch.Tensor | str / PathLike of a .npy or image file


@dataclass(frozen=True)
class Verdict:
    label: str  # class name (CLASS_NAMES, or the model's own class names)
    label_index: int  # index of `label` in the model's outputs
    probs: dict[str, float]  # class name -> probability (temperature applied)
    p_available: float  # probability of "Available"

    def to_dict(self) -> dict:
        return {"label": self.label, "label_index": self.label_index, "probs": dict(self.probs),
                "p_available": self.p_available}

    @classmethod
    def from_probs(cls, probs: Sequence[float], class_names: Sequence[str]) -> Verdict:
        index = int(np.argmax(probs))
        named = {name: float(p) for name, p in zip(class_names, probs)}
        return cls(class_names[index], index, named, float(probs[AVAILABLE_INDEX]))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_estimators(spec: ModalitySpec, device: str | torch.device | None = None) -> dict[str, Any]:
    """The spec's depth and salience estimators (None for a modality the model does not use)."""
    from reliable_ad.modalities import build_depth, build_salience

    return {
        "depth": build_depth(spec.depth, size=spec.size, device=device) if spec.depth else None,
        "salience": build_salience(spec.salience, size=spec.size, device=device) if spec.salience else None,
    }


def model_fingerprint(source: str | os.PathLike, config_dict: dict, spec: ModalitySpec) -> str:
    """A short id of a model + its estimators: equal ids give equal verdicts (used to resume inspection)."""
    digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str).encode())
    weights = Path(source) / "model.safetensors"
    if weights.is_file():
        with open(weights, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    name = Path(source).name if Path(source).is_dir() else str(source)
    return f"{name}#{digest.hexdigest()[:12]}|depth={spec.depth}|salience={spec.salience}|size={spec.size}"


def load_for_inference(name_or_path: str | os.PathLike, *, depth: str | None = None, salience: str | None = None):
    """(model in eval mode on the CPU, processor, modality spec, fingerprint) for a preset, a config
    file, a saved folder or a hub id; the spec as in `resolve_modality_spec`."""
    from reliable_ad.rfnet.io import resolve_folder
    from reliable_ad.rfnet.presets import _config_source, load_rfnet

    source: str | os.PathLike = name_or_path
    if _config_source(name_or_path) is None:  # a saved model: folder or hub id
        source = resolve_folder(name_or_path)
    model, processor = load_rfnet(source)
    spec = resolve_modality_spec(source, model.config, depth=depth, salience=salience)
    return model.eval(), processor, spec, model_fingerprint(source, model.config.to_dict(), spec)


def _check_rgb(name: str, i: int, image: Any, channels: tuple[int, ...]) -> np.ndarray:
    ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
    if not ok or image.shape[2] not in channels:
        found = f"dtype {image.dtype} shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        want = " or ".join(f"(H, W, {c})" for c in channels)
        raise ValueError(f"{name}[{i}] must be a uint8 {want} array, got {found}")
    return image


class Inspector:
    """RFNet + processor + estimators on one device; see the module docstring.

    ``timings`` accumulates seconds spent on ``modalities`` (depth and salience maps, computed or
    loaded), ``preprocess`` (image resizing) and ``classifier`` (RFNet forward), and ``images``
    counts the images inspected, so throughput is ``timings["images"] / sum of the seconds``.
    """

    def __init__(self, model, processor, spec: ModalitySpec, *, estimators: dict[str, Any] | None = None,
                 device: str | torch.device | None = None, batch_size: int = 16, fingerprint: str | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        self.device = torch.device(device or default_device())
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.spec = spec.for_config(model.config)
        self.estimators = estimators if estimators is not None else build_estimators(self.spec, self.device)
        self.batch_size = batch_size
        self.fingerprint = fingerprint or model_fingerprint("custom", model.config.to_dict(), self.spec)
        self.timings: dict[str, float] = {"modalities": 0.0, "preprocess": 0.0, "classifier": 0.0, "images": 0}

    @classmethod
    def from_pretrained(cls, name_or_path: str = "tiny", *, depth: str | None = None, salience: str | None = None,
                        device: str | None = None, batch_size: int = 16) -> Inspector:
        """An Inspector for a preset ("tiny": random, offline; "synthad": the packaged SynthAd model), a
        config file, a saved folder or a hub id.

        The estimators are ``depth``/``salience`` when given, else the folder's modalities.json, else
        the defaults (tiny: "tiny" depth and "fine-grained" salience; others: "dpt-hybrid", "u2netp").
        """
        model, processor, spec, fingerprint = load_for_inference(name_or_path, depth=depth, salience=salience)
        return cls(model, processor, spec, device=device, batch_size=batch_size, fingerprint=fingerprint)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.model.class_names

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- maps -------------------------------------------------------------------------------------

    def _maps(self, kind: str, generated: list[np.ndarray], cached: Sequence[MapInput] | None) -> torch.Tensor:
        """(B, 1, S, S) maps in [0, 1] at the model's image size: cached ones loaded, the rest computed."""
        from reliable_ad.modalities.base import resize_maps
        from reliable_ad.data.tensors import _load_map, map_to_tensor

        size = self.model.config.image_size
        out: list[torch.Tensor | None] = [None] * len(generated)
        for i, value in enumerate(cached or [None] * len(generated)):
            if isinstance(value, (str, os.PathLike)):
                out[i] = _load_map(os.fspath(value), size)
            elif value is not None:
                out[i] = map_to_tensor(value, size)
        todo = [i for i, m in enumerate(out) if m is None]
        if todo:
            estimator = self.estimators.get(kind)
            if estimator is None:
                raise ValueError(f"the model uses {kind} but this Inspector has no {kind} estimator; pass {kind}= maps")
            shapes = {generated[i].shape for i in todo}
            groups = [todo] if len(shapes) == 1 else [[i] for i in todo]  # one size per estimator call
            for group in groups:
                images = torch.from_numpy(np.stack([generated[i] for i in group])).to(self.device)
                with torch.no_grad():
                    maps = estimator(images.permute(0, 3, 1, 2).float().div_(255.0))
                maps = resize_maps(maps, size).clamp_(0.0, 1.0)
                for j, i in enumerate(group):
                    out[i] = maps[j]
        return torch.stack([m.to(self.device) for m in out])

    # --- inspection -------------------------------------------------------------------------------

    def inspect(self, products: list[np.ndarray], generated: list[np.ndarray], captions: list[str], *,
                depth: list | None = None, salience: list | None = None) -> list[Verdict]:
        """One verdict per generated image.

        ``products``: uint8 (H, W, 3) RGB or (H, W, 4) RGBA (composited on white, padded to a square);
        ``generated``: uint8 (S, S, 3) RGB; ``captions``: product captions. ``depth``/``salience``:
        optional cached maps, one per image (an (h, w) array or a .npy/.png path; None = compute it).
        """
        n = len(generated)
        if not (len(products) == n == len(captions)):
            raise ValueError(f"got {len(products)} products, {n} generated images, {len(captions)} captions; "
                             "pass one of each per image")
        for name, maps in (("depth", depth), ("salience", salience)):
            if maps is not None and len(maps) != n:
                raise ValueError(f"{name} has {len(maps)} maps for {n} images; pass one per image (None = compute)")
        for i in range(n):
            _check_rgb("products", i, products[i], (3, 4))
            _check_rgb("generated", i, generated[i], (3,))
            if not isinstance(captions[i], str):
                raise TypeError(f"captions[{i}] must be a str, got {type(captions[i]).__name__}")
        verdicts: list[Verdict] = []
        for start in range(0, n, self.batch_size):
            part = slice(start, start + self.batch_size)
            probs = self._probs(products[part], generated[part], captions[part],
                                None if depth is None else depth[part], None if salience is None else salience[part])
            verdicts += [Verdict.from_probs(row, self.class_names) for row in probs]
        return verdicts

    def _probs(self, products, generated, captions, depth, salience) -> np.ndarray:
        from reliable_ad.data.tensors import rgb_to_tensor

        config, size = self.model.config, self.model.config.image_size
        mods = config.modalities
        t0 = time.perf_counter()
        inputs: dict[str, Any] = {}
        if mods.product:
            inputs["product"] = torch.stack([rgb_to_tensor(p, size, pad_square=True) for p in products])
        if mods.generated:
            inputs["generated"] = torch.stack([rgb_to_tensor(g, size) for g in generated])
        t1 = time.perf_counter()
        if mods.depth:
            inputs["depth"] = self._maps("depth", generated, depth)
        if mods.salience:
            inputs["salience"] = self._maps("salience", generated, salience)
        self._sync()
        t2 = time.perf_counter()
        batch = self.processor(list(captions) if mods.caption else None, **inputs)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            probs = self.model.predict_proba(**batch).float().cpu().numpy()
        t3 = time.perf_counter()
        self.timings["preprocess"] += t1 - t0
        self.timings["modalities"] += t2 - t1
        self.timings["classifier"] += t3 - t2
        self.timings["images"] += len(generated)
        return probs

    def __repr__(self) -> str:
        return f"Inspector({self.fingerprint!r}, device={self.device}, batch_size={self.batch_size})"
