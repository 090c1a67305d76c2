"""Data plumbing shared by RFNet training and evaluation: read the configured sources, attach cached
modality maps, split by product, load batches that survive unreadable files, and turn a batch into
RFNet's inputs (computing the depth and salience maps a batch lacks, without gradient).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from reliable_ad.data.archives import read_bytes, split_member_path
from reliable_ad.data.tensors import ImageLoadError, _load_map, _load_rgb, rgb_to_tensor
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
                use_cache: bool = True, label_codes: str | None = None) -> tuple[list[Sample], list[Problem]]:
    """Samples of one source, with its cached maps (``<folder>/modalities/``) attached when they
    were made with the estimators of ``spec``. ``label_codes``: RF1M only, what integer labels mean
    (`reliable_ad.data.label_codes`; None = the release README's ``rf1m``)."""
    from reliable_ad.modalities.cache import attach_cached_maps

    kind, p = source_kind(path, kind)
    if kind == "rf1m":
        samples, problems = read_rf1m(p, unsuitable=unsuitable, label_file=label_file, check_files=check_files,
                                      label_codes=label_codes)
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
                           label_file=getattr(src, "label_file", None), spec=spec, use_cache=use_cache,
                           label_codes=getattr(src, "label_codes", None))
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
    keeps its shape (collectives across processes need that) and the loss and metrics skip them.
    A generated image inside a zip archive (``<archive>.zip/<member>``) is read in place."""

    def __init__(self, dataset: RFDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _item(self, index: int) -> dict[str, Any]:
        ds = self.dataset
        path = ds.images[index]
        if split_member_path(path) is None:
            return ds[index]
        # the image from its archive; product and maps (plain files) as RFDataset reads them
        size = ds.image_size
        try:
            with Image.open(io.BytesIO(read_bytes(path))) as im:
                image = rgb_to_tensor(im, size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ImageLoadError(f"cannot read image {path!r}: {e}", path) from e
        product = ds.products[index]
        maps = {kind: (None if paths is None or paths[index] is None else _load_map(paths[index], size))
                for kind, paths in (("depth", ds.depths), ("salience", ds.saliences))}
        return {"image": image, "product": _load_rgb(product, size, pad_square=True) if product else None, **maps,
                "caption": ds.captions[index], "label": int(ds.labels[index]), "index": int(index)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return {**self._item(index), "valid": True, "error": None}
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


class ShardLoader:
    """Batches of a :class:`~reliable_ad.data.shard_stream.ShardStream` with the calls the training loop
    makes (``set_epoch``, ``skip``). Not prepared by accelerate, whose dispatching would hand one
    process's batches to the others: the stream already gives each process its own shards."""

    def __init__(self, stream, *, batch_size: int, num_workers: int, pin_memory: bool = False):
        self.stream = stream
        self.loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                                  collate_fn=collate_robust, pin_memory=pin_memory)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def skip(self, batches: int) -> ShardLoader:
        """Start the next pass after ``batches`` batches of the epoch (exact resume; nothing re-read)."""
        self.stream.start_batch = int(batches)
        return self

    def __iter__(self):
        batches = iter(self.loader)  # the workers take their copy of the stream (epoch, start) here
        self.stream.start_batch = 0
        return batches

    def layout(self) -> dict[str, int]:
        """What an exact resume needs unchanged."""
        s = self.stream
        return {"world_size": s.world_size, "num_workers": s.workers, "batch_size": s.batch_size,
                "shards": len(s.shards), "seed": s.seed}


def shard_datasets(config, *, num_classes: int, image_size: int, spec: ModalitySpec | None, mods,
                   rank: int, world_size: int) -> tuple[Any, Splits]:
    """(train stream, val/test splits) for training on shards: val and test come from
    ``config.data.sources`` when given (their train split is not used), else they are empty."""
    from reliable_ad.data.shard_stream import ShardStream, load_shards

    data = config.data
    shards = load_shards(data.shards)
    names = shards.class_names
    if num_classes not in (2, len(names)):
        raise ValueError(f"--shards {data.shards!r} hold {len(names)} classes {names} but the model has "
                         f"num_classes={num_classes}; rewrite the shards with another --unsuitable or set "
                         f"model.overrides.num_classes: {len(names)}")
    written = shards.index["settings"].get("maps", {})
    for kind in ("depth", "salience"):
        wanted = getattr(spec, kind, None) if getattr(mods, kind, False) else None
        if wanted and written.get(kind) not in (None, wanted) and shards.with_cached()[kind]:
            raise ValueError(f"--shards {data.shards!r} carry {kind} maps of {written[kind]!r}, the model expects "
                             f"{wanted!r}; rewrite the shards with --no-cached-maps or pass --{kind} {written[kind]}")
    stream = ShardStream(shards.shards, batch_size=config.optim.batch_size, image_size=image_size,
                         seed=config.runtime.seed, rank=rank, world_size=world_size,
                         num_workers=config.num_workers, binary=num_classes == 2)
    settings = shards.index["settings"]
    if data.sources and settings.get("split") == "all":
        logger.warning("--shards %s hold every split (written with --split all) and val/test come from %s: "
                       "their products are in the training shards too; write the shards with --split train",
                       data.shards, [s.path for s in data.sources])
    elif data.sources and (settings.get("split_seed"), list(settings.get("split_fractions", []))) != (
            data.split_seed, list(data.split_fractions)):
        raise ValueError(f"--shards {data.shards!r} hold the train split of split seed {settings.get('split_seed')} "
                         f"and fractions {settings.get('split_fractions')}, but val/test would be split with seed "
                         f"{data.split_seed} and fractions {list(data.split_fractions)}; pass the same --split-seed "
                         "(and data.split_fractions) so no product is on both sides")
    if data.sources:
        splits = build_datasets(data.sources, unsuitable=data.unsuitable, num_classes=num_classes,
                                image_size=image_size, spec=spec, fractions=data.split_fractions,
                                split_seed=data.split_seed, check_files=data.check_files,
                                use_cache=data.use_cached_modalities, needs_product=mods.product)
    else:
        empty = RFDataset([], image_size=image_size)
        splits = Splits({"train": empty, "val": empty, "test": empty}, {"samples": 0, "splits": {}, "problems": 0})
    counts = shards.class_counts()
    if num_classes == 2:
        counts = np.array([counts[0], counts[1:].sum()])
    splits.info.update(shards={"spec": data.shards, "shards": len(shards.shards), "samples": shards.samples,
                               "class_counts": counts.tolist(), "with_cached": shards.with_cached(),
                               "settings": settings})
    return stream, splits
