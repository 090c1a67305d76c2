"""Generated images of SynthAd products, labelled by the oracle: the stand-in for the paper's human
annotators (docs/method.md §6) on a generator's own output, as RFNet training data.

This package sits on `core` and `data` only, so it makes no image itself: the caller generates
(`reliable-ad synthad generated` with a diffusers generator, the studies in the repository's
experiments/ with theirs) and this module keys the products, knows where generation placed each one
(`data.product.prepare_product`), asks the oracle and writes the RF1M folder.

    items = make_products(4, seed=0, prefix="rf")            # keys rf0-00000 ... rf0-00003
    placed = prepared(items[0], 64, 0.35)                    # the PreparedProduct generation starts from
    verdicts = label_generated(items, images, image_scale=0.35)
    write_labelled_set(root, items, 2, make_images, image_scale=0.35)
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.core.io import (append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_lines,
                                 atomic_write_text, read_jsonl)
from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.synthad.dataset import _png
from reliable_ad.synthad.decisive import judge_decisive
from reliable_ad.synthad.oracle import OracleInspector
from reliable_ad.synthad.products import SynthProduct, sample_product, write_product_png
from reliable_ad.synthad.seeds import sub_seed  # noqa: F401 - re-exported: the studies' seeds come from here

logger = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"  # one line per labelled image: what made it and the oracle's verdict


@dataclass(frozen=True, eq=False)
class ProductItem:
    """One SynthAd product with a key: ``key`` (unique in a run), ``rgba`` (H, W, 4) uint8 cut-out,
    ``caption`` ("a large red suitcase") and the SynthProduct itself."""

    key: str
    product: SynthProduct

    @property
    def rgba(self) -> np.ndarray:
        return self.product.rgba

    @property
    def caption(self) -> str:
        return self.product.caption


def make_products(n: int, seed: int, *, prefix: str = "p") -> list[ProductItem]:
    """``n`` fresh SynthAd products, deterministic in (seed, index); keys ``<prefix><seed>-<index>``.
    Different seeds give disjoint product streams (use one seed per split)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be an int >= 0")
    return [ProductItem(f"{prefix}{seed}-{i:05d}", sample_product(np.random.default_rng([seed, i, 0x5A])))
            for i in range(n)]


@functools.lru_cache(maxsize=256)
def _prepared(product: SynthProduct, size: int, image_scale: float):
    from reliable_ad.data.product import prepare_product

    return prepare_product(product.to_product(), size, image_scale)


def prepared(item: ProductItem, size: int, image_scale: float):
    """The PreparedProduct of ``item`` on a ``size`` canvas at ``image_scale``: where generation puts
    the product, so where the oracle looks for it (cached; a SynthProduct hashes by identity)."""
    return _prepared(item.product, int(size), float(image_scale))


@functools.lru_cache(maxsize=1)
def shared_oracle() -> OracleInspector:
    """One OracleInspector per process (it caches where each product was found)."""
    return OracleInspector()


def label_generated(items: Sequence[ProductItem], images: Sequence[np.ndarray], *, image_scale: float,
                    size: int | None = None, oracle: OracleInspector | None = None) -> list:
    """The oracle's verdicts (OracleVerdict: .label, .p_available, .reasons, .measurements) on
    generated images of ``items``; the product's placement is the known one (``prepared`` at the
    image's size, or ``size``, and ``image_scale``)."""
    if len(items) != len(images):
        raise ValueError(f"got {len(items)} items and {len(images)} images; pass one image per item")
    masks = [prepared(item, size or img.shape[0], image_scale).alpha for item, img in zip(items, images)]
    return (oracle or shared_oracle()).inspect([it.rgba for it in items], list(images),
                                               [it.caption for it in items], masks=masks)


def judge_generated(item: ProductItem, image: np.ndarray, *, image_scale: float, key: str, oracle=None):
    """The abstaining oracle's verdict (`synthad.decisive.DecisiveVerdict`) on a generated image of
    ``item``, its product placed where generation placed it (``prepared`` at the image's size and
    ``image_scale``); ``key`` names the image and seeds the oracle's re-readings."""
    return judge_decisive(oracle or shared_oracle(), image, prepared(item, image.shape[0], image_scale).alpha,
                          item.caption, key)


def _judge_older_records(root: Path, records: list[dict], items: dict[str, ProductItem], image_scale: float) -> list[dict]:
    """Records written before the oracle could abstain get their re-readings now (from their saved
    image), and records.jsonl is rewritten with them: a resumed older folder is upgraded in place."""
    from PIL import Image

    older = [r for r in records if "decisive" not in r]
    if not older:
        return records
    for r in older:
        item = items.get(r["product_id"])
        if item is None:
            raise ValueError(f"{root / RECORDS_FILE}: {r['image']} is of product {r['product_id']!r}, not one of this "
                             "run's products; resume the folder with the --products, --seed it was made with")
        image = np.asarray(Image.open(root / r["image"]).convert("RGB"))
        judged = judge_generated(item, image, image_scale=image_scale, key=r["image"])
        r.update(label=judged.label, decisive=judged.decisive, checks_agreeing=f"{judged.agreeing}/{judged.checks}")
    logger.info("synthad: %d older records judged again by the abstaining oracle", len(older))
    atomic_write_lines(root / RECORDS_FILE, (json.dumps(r) + "\n" for r in records))
    return records


MakeImages = Callable[[list[tuple[ProductItem, int]]], Sequence[tuple[np.ndarray, dict[str, Any]]]]


def write_labelled_set(root: str | Path, items: Sequence[ProductItem], per_product: int, make_images: MakeImages,
                       *, image_scale: float, chunk: int = 32, abstain: bool = True) -> dict[str, Any]:
    """Generate ``per_product`` images of each of ``items`` into ``root`` (RF1M layout: images/,
    products/, captions.json, labels.txt) and label them with the oracle; returns
    {"images", "products", "per_class", "abstained"}.

    With ``abstain`` (the default) the oracle abstains on knife-edge images (`synthad.decisive`: its
    decision changes under an imperceptible re-reading): they are kept in images/ and records.jsonl
    ("decisive": false) but left out of labels.txt, so a reader trains and tests only on labels the
    oracle gives with confidence. ``abstain=False`` labels every image.

    ``make_images(part)`` gets up to ``chunk`` (item, k) pairs and returns one (image (S, S, 3) uint8,
    fields) per pair; the fields (what made the image: prompt, seed, ...) are recorded in records.jsonl
    between the caption and the verdict. ``image_scale``: the placement the images were generated
    with. Resumable: images already in records.jsonl are not made again (nor is anything when all
    are); labels.txt is written last, so a folder with one is complete.
    """
    root = Path(root)
    if isinstance(per_product, bool) or not isinstance(per_product, int) or per_product < 1:
        raise ValueError(f"per_product={per_product!r} must be an int >= 1")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be an int >= 1")
    done = {r["image"] for r in read_jsonl(root / RECORDS_FILE, repair=True)}
    todo = [(item, k) for item in items for k in range(per_product) if f"images/{item.key}_{k}.png" not in done]
    for item in items:
        path = root / "products" / f"{item.key}.png"
        if not path.is_file():
            write_product_png(item.product, path)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        made = list(make_images(part))
        if len(made) != len(part):
            raise ValueError(f"make_images returned {len(made)} images for {len(part)} (item, k) pairs")
        for (item, k), (image, fields) in zip(part, made):
            name = f"images/{item.key}_{k}.png"
            judged = judge_generated(item, image, image_scale=image_scale, key=name)
            verdict = judged.verdict
            atomic_write_bytes(root / name, _png(image))
            append_jsonl(root / RECORDS_FILE, {
                "image": name, "product_id": item.key, "caption": item.caption, **fields, "label": verdict.label,
                "p_available": round(verdict.p_available, 6), "reasons": list(verdict.reasons),
                "decisive": judged.decisive, "checks_agreeing": f"{judged.agreeing}/{judged.checks}"})
        logger.info("synthad: %d/%d generated images labelled", min(start + chunk, len(todo)), len(todo))
    records = _judge_older_records(root, read_jsonl(root / RECORDS_FILE), {it.key: it for it in items}, image_scale)
    labelled = [r for r in records if not abstain or r["decisive"]]
    atomic_write_json(root / "captions.json", {it.key: it.caption for it in items})
    atomic_write_text(root / "labels.txt", "".join(f"{r['image']}\t{r['label']}\n" for r in labelled))
    counts = {name: sum(r["label"] == name for r in labelled) for name in CLASS_NAMES}
    return {"images": len(records), "products": len(items), "per_class": counts,
            "abstained": len(records) - len(labelled)}
