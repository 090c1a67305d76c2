"""Data plumbing shared by RFNet training and evaluation: read the configured sources, attach cached
modality maps, split by product, load batches that survive unreadable files, and turn a batch into
RFNet's inputs (computing the depth and salience maps a batch lacks, without gradient).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reliable_ad.data.tensors import ImageLoadError
from reliable_ad.data.readers import Problem, Sample, policy_class_names, read_annotation_export, read_manifest, read_rf1m
from reliable_ad.rfnet.dataset import RFDataset, collate_rf
from reliable_ad.rfnet.modality_spec import ModalitySpec
from reliable_ad.data.splits import SPLIT_NAMES, split_by_product

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"


def source_kind(path: str | os.PathLike, kind: str = "auto") -> tuple[str, Path]:
    """(kind, file or folder to read) of a data source; ``auto`` guesses from the path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data source {str(p)!r} does not exist")
    if kind == "auto":
        if p.is_dir():
            kind = "manifest" if (p / MANIFEST_NAME).is_file() else "rf1m"
        else:
            kind = "manifest" if p.name == MANIFEST_NAME else "annotations"
    if kind == "manifest" and p.is_dir():
        p = p / MANIFEST_NAME
    if (kind == "rf1m") != p.is_dir():
        raise ValueError(f"data source {str(p)!r} of kind {kind!r}: rf1m sources are folders, the others .jsonl files")
    return kind, p


def read_source(path: str | os.PathLike, kind: str = "auto", *, unsuitable: str = "drop", check_files: bool = True,
                label_file: str | None = None, spec: ModalitySpec | None = None,
                use_cache: bool = True) -> tuple[list[Sample], list[Problem]]:
    """Samples of one source, with its cached maps (``<folder>/modalities/``) attached when they
    were made with the estimators of ``spec``."""
    from reliable_ad.modalities.cache import attach_cached_maps

    kind, p = source_kind(path, kind)
    if kind == "rf1m":
        samples, problems = read_rf1m(p, unsuitable=unsuitable, label_file=label_file, check_files=check_files)
        root = p
    elif kind == "manifest":
        samples, problems = read_manifest(p, unsuitable=unsuitable, check_files=check_files)
        root = p.parent
    else:
        samples, problems = read_annotation_export(p, unsuitable=unsuitable, check_files=check_files)
        root = p.parent
    if use_cache and spec is not None and (spec.depth or spec.salience):
        samples, counts = attach_cached_maps(samples, root, depth=spec.depth, salience=spec.salience)
        if any(counts.values()):
            logger.info("%s: cached maps attached: %s", p, counts)
    return samples, problems


@dataclass
class Splits:
    datasets: dict[str, RFDataset]  # train / val / test (an "all" key when not split)
    info: dict[str, Any]  # counts and problems, written next to the run


def build_datasets(sources: list[Any], *, unsuitable: str, num_classes: int, image_size: int,
                   spec: ModalitySpec | None, split: str | None = "by_product",
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), split_seed: int = 0,
                   check_files: bool = True, use_cache: bool = True, needs_product: bool = True) -> Splits:
    """Read every source (DataSource-like: path, kind, label_file) and split by product.

    ``split=None`` keeps one ``all`` dataset. Labels follow the Unsuitable policy; a two-class model
    gets Available (0) vs every other class (1).
    """
    names = policy_class_names(unsuitable)
    if num_classes not in (2, len(names)):
        raise ValueError(
            f"data.unsuitable={unsuitable!r} gives {len(names)} classes but the model has num_classes={num_classes}; "
            f"set model.overrides.num_classes: {len(names)} (or 2 for Available vs the rest), or change the policy"
        )
    samples: list[Sample] = []
    problems: list[Problem] = []
    for src in sources:
        s, p = read_source(src.path, src.kind, unsuitable=unsuitable, check_files=check_files,
                           label_file=getattr(src, "label_file", None), spec=spec, use_cache=use_cache)
        samples += s
        problems += p
    if not samples:
        raise ValueError(f"no labelled samples in {[s.path for s in sources]} ({len(problems)} problems); "
                         "check data.sources and the label files")
    without_product = sum(s.product is None for s in samples)
    if needs_product and without_product == len(samples):
        raise ValueError("the model reads the product image but no sample has one; add products/ to the data or "
                         "switch it off with model.overrides.modalities.product: false")
    if needs_product and without_product:
        logger.warning("%d of %d samples have no product image; they get a blank (white) one", without_product,
                       len(samples))
    full = RFDataset(samples, image_size=image_size)
    if num_classes == 2:
        full.labels = (full.labels != 0).astype(np.int64)
    if split is None:
        datasets = {"all": full}
    else:
        indices = split_by_product(samples, fractions, split_seed)
        datasets = {name: full.subset(indices[name]) for name in SPLIT_NAMES}
    info = {
        "samples": len(samples),
        "without_product": without_product,
        "with_cached": {k: sum(getattr(s, k) is not None for s in samples) for k in ("depth", "salience")},
        "splits": {name: {"samples": len(ds), "products": len(set(ds.product_ids)),
                          "class_counts": np.bincount(ds.labels, minlength=num_classes).tolist()}
                   for name, ds in datasets.items()},
        "problems": len(problems),
        "first_problems": [f"{p.file}:{p.line}: {p.message}" for p in problems[:200]],
    }
    return Splits(datasets, info)


def estimators_needed(spec: ModalitySpec, info: dict[str, Any], mods) -> ModalitySpec:
    """``spec`` without the estimators no batch will need: a kind the model does not use, or whose
    every sample has a cached map (``info`` from build_datasets)."""
    n = info["samples"]
    return replace(spec, depth=spec.depth if mods.depth and info["with_cached"]["depth"] < n else None,
                   salience=spec.salience if mods.salience and info["with_cached"]["salience"] < n else None)


class RobustDataset(torch.utils.data.Dataset):
    """An RFDataset whose unreadable items become blank placeholders with ``valid=False``, so a batch
    keeps its shape (collectives across processes need that) and the loss and metrics skip them."""

    def __init__(self, dataset: RFDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return {**self.dataset[index], "valid": True, "error": None}
        except ImageLoadError as e:
            size = self.dataset.image_size
            return {"image": torch.zeros(3, size, size), "product": None, "depth": None, "salience": None,
                    "caption": "", "label": int(self.dataset.labels[index]), "index": int(index),
                    "valid": False, "error": str(e)}


def collate_robust(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = collate_rf(items)
    out["valid"] = torch.tensor([item["valid"] for item in items], dtype=torch.bool)
    out["errors"] = [item["error"] for item in items if item["error"]]
    return out


class EpochSampler(torch.utils.data.Sampler[int]):
    """A permutation of the dataset fixed by (seed, epoch) alone: every process draws the same one
    (accelerate then shards it by batch), and a resumed run redraws exactly the interrupted epoch's."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class ModelInputs:
    """A collated batch -> RFNet's keyword inputs on ``device``.

    Cached depth and salience maps are used where the batch has them; the rest are computed from the
    generated images with the estimators, without gradient. Missing product images become white.
    """

    def __init__(self, config, processor, estimators: dict[str, Any], device: torch.device):
        self.mods = config.modalities
        self.size = config.image_size
        self.processor = processor
        self.estimators = estimators
        self.device = device

    def _maps(self, kind: str, batch: dict[str, Any], generated: torch.Tensor) -> torch.Tensor:
        from reliable_ad.modalities.base import resize_maps

        maps = batch.get(kind)
        have = batch.get(f"{kind}_mask")
        if maps is not None and have is None:
            return maps.to(self.device)
        todo = torch.arange(len(generated)) if maps is None else (~have.cpu()).nonzero().flatten()
        estimator = self.estimators.get(kind)
        if estimator is None:
            raise ValueError(f"the model uses {kind} but no {kind} estimator is set and the batch lacks cached maps")
        with torch.no_grad():
            computed = resize_maps(estimator(generated[todo.to(generated.device)]), self.size).clamp(0.0, 1.0)
        if maps is None:
            return computed
        maps = maps.to(self.device).clone()
        maps[todo.to(self.device)] = computed.to(maps.dtype)
        return maps

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        generated = batch["image"].to(self.device)
        images: dict[str, torch.Tensor] = {}
        if self.mods.generated:
            images["generated"] = generated
        if self.mods.product:
            product = batch.get("product")
            if product is None:
                product = torch.ones_like(generated)
            else:
                product = product.to(self.device)
                if "product_mask" in batch:
                    product = torch.where(batch["product_mask"].to(self.device).view(-1, 1, 1, 1), product, 1.0)
            images["product"] = product
        for kind in ("depth", "salience"):
            if getattr(self.mods, kind):
                images[kind] = self._maps(kind, batch, generated)
        inputs = self.processor(list(batch["caption"]) if self.mods.caption else None, **images)
        return {k: v.to(self.device) for k, v in inputs.items()}
