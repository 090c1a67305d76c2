"""RFFT's data: prepared products with their captions and prompt presets, the train/validation split,
stateless batch order and seeds (so a resumed run draws exactly what an uninterrupted one would),
and real ads for the denoising regulariser.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reliable_ad.generation.inputs import ProductInput, read_product_inputs
from reliable_ad.data.product import PreparedProduct, Product, ProductError, load_product, prepare_product
from reliable_ad.data.tensors import rgb_to_tensor
from reliable_ad.generation.prompts import PromptPreset
from reliable_ad.generation.run import load_tasks
from reliable_ad.generation.seeds import derive_seed
from reliable_ad.rfft.config import DataConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class TrainItem:
    """One product ready for RFFT: canvas, mask, Canny control, I_o, caption and prompt preset."""

    key: str  # "<stem>-<sha256[:8]>": stable across runs and machines
    prepared: PreparedProduct
    product01: torch.Tensor  # (3, S, S) in [0, 1]: I_o as RFNet's data shows products (on white, padded square)
    caption: str
    preset: PromptPreset


def product_view(product: Product, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1]: the cut-out on white, padded to a square, resized: the view of a
    product that RFNet's training data and the Inspector give it (the same function)."""
    return rgb_to_tensor(np.dstack([product.rgb, product.alpha]), size, pad_square=True)


def load_items(inputs: list[ProductInput], cfg: DataConfig, size: int) -> tuple[list[TrainItem], dict[str, str]]:
    """Prepare every product at `size` (loaded as `generate` and `run` load them: one product per
    content, the same presets and failures); a product that fails is reported in the second value."""
    tasks, failures, duplicates = load_tasks(inputs, preset=cfg.preset, presets_file=cfg.presets_file,
                                             white_threshold=cfg.product.white_threshold)
    failed = {f.where: f.error for f in failures}
    items: list[TrainItem] = []
    for task in tasks:
        try:
            prepared = prepare_product(
                task.product, size=size, image_scale=cfg.product.image_scale or task.preset.image_scale,
                keep_loc=cfg.product.keep_loc or task.preset.keep_loc,
                canny_low=cfg.product.canny_low, canny_high=cfg.product.canny_high,
                box_alpha_threshold=cfg.product.box_alpha_threshold,
            )
        except (ProductError, ValueError) as e:
            failed[task.item.path] = str(e)
            logger.error("product %s skipped: %s", task.item.path, e)
            continue
        items.append(TrainItem(task.product_id, prepared, product_view(task.product, size), task.item.caption or "",
                               task.preset))
    return items, failed


def split_items(items: list[TrainItem], fraction: float) -> tuple[list[TrainItem], list[TrainItem]]:
    """(train, validation): the ceil(fraction * n) items with the smallest keys' hashes are held out.

    Deterministic and independent of input order; with fraction > 0 at least one item is held out
    and at least one is kept.
    """
    if fraction <= 0 or len(items) < 2:
        return list(items), []
    ranked = sorted(items, key=lambda it: derive_seed(0, it.key, 0))
    n_val = min(len(items) - 1, max(1, math.ceil(fraction * len(items))))
    held = {id(it) for it in ranked[:n_val]}
    return [it for it in items if id(it) not in held], [it for it in items if id(it) in held]


def read_items(cfg: DataConfig, size: int) -> tuple[list[TrainItem], list[TrainItem], dict[str, str]]:
    """(train items, validation items, failed products) as the config describes."""
    inputs, problems = read_product_inputs(list(cfg.products))
    failed = {p.source: p.message for p in problems}
    items, bad = load_items(inputs, cfg, size)
    failed.update(bad)
    if cfg.validation_products:
        val_inputs, val_problems = read_product_inputs(list(cfg.validation_products))
        failed.update({p.source: p.message for p in val_problems})
        val, bad = load_items(val_inputs, cfg, size)
        failed.update(bad)
        train = items
    else:
        train, val = split_items(items, cfg.validation_fraction)
    if not train:
        raise ValueError(
            f"no usable training products in data.products={list(cfg.products)} "
            f"({len(failed)} failed: {dict(list(failed.items())[:3])}); give product images, folders or a products file"
        )
    return train, val, failed


def batch_indices(n: int, batch_size: int, micro_step: int, *, seed: int, process_index: int = 0,
                  num_processes: int = 1) -> list[int]:
    """Indices of micro-batch `micro_step` for one process: a stream of per-epoch permutations.

    Stateless: the batch depends only on its arguments, so resuming at any micro-step is exact, and
    processes read disjoint slices of the same stream.
    """
    if n < 1:
        raise ValueError("no items to draw batches from")
    start = (micro_step * num_processes + process_index) * batch_size
    out = []
    perms: dict[int, np.ndarray] = {}
    for pos in range(start, start + batch_size):
        epoch = pos // n
        if epoch not in perms:
            perms[epoch] = np.random.default_rng(derive_seed(seed, "rfft-epoch", epoch)).permutation(n)
        out.append(int(perms[epoch][pos % n]))
    return out


@dataclass(frozen=True, eq=False)
class RealAd:
    """A real ad for the denoising regulariser: its product canvas/mask/control and the ad itself."""

    prepared: PreparedProduct  # from the aligned cut-out, placed with keep_loc (where it is in the ad)
    image: np.ndarray  # (S, S, 3) uint8, the ad resized to the canvas
    prompt: str
    negative_prompt: str


def read_real_ads(path: str, size: int, cfg: DataConfig) -> list[RealAd]:
    """Read a JSONL of real ads: `image` (the ad), `product` (its cut-out, aligned with the ad: same
    framing, transparent background), `prompt`, optional `negative_prompt`; paths relative to the file.
    Bad rows are logged and skipped; none usable is an error."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"data.real_ads={path!r} is not a file; give a JSONL of real ads (image, product, prompt)")
    ads: list[RealAd] = []
    for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            image_path = file.parent / rec["image"]
            product = load_product(file.parent / rec["product"], white_threshold=cfg.product.white_threshold)
            prepared = prepare_product(product, size=size, image_scale=1.0, keep_loc=True,
                                       canny_low=cfg.product.canny_low, canny_high=cfg.product.canny_high,
                                       box_alpha_threshold=cfg.product.box_alpha_threshold)
            with Image.open(image_path) as im:
                image = np.array(im.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
            ads.append(RealAd(prepared, image, str(rec["prompt"]), str(rec.get("negative_prompt", ""))))
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as e:
            logger.error("%s:%d skipped: %s", path, i, e)
    if not ads:
        raise ValueError(f"data.real_ads={path!r} holds no usable ad; each line needs image, product and prompt")
    return ads
