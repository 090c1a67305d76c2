"""Labelled SynthAd datasets: a deterministic stream of (product, scene) pairs with a chosen class
mix, and a writer that lays them out as an RF1M-style release (what `data.readers.read_rf1m` reads),
optionally with the renderer's true depth and salience maps in the modality cache layout
(`data.maps`), so RFNet can train on SynthAd without running any estimator.

    <out>/images/<product id>_<k>.png        the scenes (k-th scene of a product)
    <out>/labels.txt                         "<image path>\\t<class name>" per scene
    <out>/products/<product id>.png          the RGBA cut-outs
    <out>/captions.json                      {product id: caption}
    <out>/scenes.jsonl                       per scene: prompt, attributes, defect variant, layout
    <out>/synthad.json                       the settings that made it (any scene can be remade)
    <out>/modalities/{depth,salience}/images/<name>.png.npy, modalities/meta.json   (maps=True)
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.data.maps import CACHE_DIR, META_FILE, map_path
from reliable_ad.synthad.layout import LayoutError
from reliable_ad.synthad.products import SynthProduct, product_png_bytes, sample_product
from reliable_ad.synthad.scenes import SCENE_SIZES, Scene, render_scene

logger = logging.getLogger(__name__)

TRUE_MAPS = "synthad-true"  # the estimator name recorded for the renderer's own depth and salience
BALANCED: dict[str, float] = {name: 1.0 / len(CLASS_NAMES) for name in CLASS_NAMES}


@dataclass(frozen=True)
class SceneItem:
    """One element of the stream: the product's id, the scene's index for that product, both objects."""

    product_id: str
    index: int
    product: SynthProduct
    scene: Scene

    @property
    def image_name(self) -> str:
        return f"images/{self.product_id}_{self.index}.png"


@dataclass
class DatasetSummary:
    root: Path
    written: int = 0
    per_class: dict[str, int] = field(default_factory=lambda: {name: 0 for name in CLASS_NAMES})
    failed: dict[str, str] = field(default_factory=dict)  # image name -> error

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_shares(class_shares: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(class_shares, Mapping) or not class_shares:
        raise ValueError(f"class_shares={class_shares!r} must be a non-empty mapping class name -> share")
    for name, share in class_shares.items():
        if name not in CLASS_NAMES:
            raise ValueError(f"class_shares has unknown class {name!r}; use names from {CLASS_NAMES}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share >= 0:
            raise ValueError(f"class_shares[{name!r}]={share!r} must be a number >= 0")
    total = float(sum(class_shares.values()))
    if total <= 0:
        raise ValueError(f"class_shares={dict(class_shares)!r} sums to 0; give at least one positive share")
    return {name: float(class_shares.get(name, 0.0)) / total for name in CLASS_NAMES}


def class_schedule(n: int, class_shares: Mapping[str, float] = BALANCED, seed: int = 0) -> list[int]:
    """`n` class indices with counts as close to the shares as integers allow (largest remainder),
    in a seeded random order."""
    shares = _check_shares(class_shares)
    exact = np.array([shares[name] * n for name in CLASS_NAMES])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.arange(len(CLASS_NAMES)), counts)
    np.random.default_rng([seed, 1]).shuffle(labels)
    return [int(v) for v in labels]


def scene_seed(seed: int, product_index: int, k: int) -> int:
    """The render seed of the k-th scene of a product: depends only on (seed, product, k)."""
    return int(np.random.SeedSequence([seed, product_index, k]).generate_state(1)[0])


def _check_stream(n: int, seed: int, size: int, scenes_per_product: int) -> None:
    for name, value, low in (("n", n, 0), ("scenes_per_product", scenes_per_product, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an int >= {low}")
    if size not in SCENE_SIZES:
        raise ValueError(f"size={size!r} must be one of {SCENE_SIZES}")


def _plan(n: int, seed: int, class_shares: Mapping[str, float],
          scenes_per_product: int) -> Iterator[tuple[int, int, int]]:
    """(product index, scene index of that product, class index) of each scene of a stream."""
    for j, label in enumerate(class_schedule(n, class_shares, seed)):
        yield (*divmod(j, scenes_per_product), label)


def stream_product(seed: int, p: int) -> SynthProduct:
    """The p-th product of the stream with this seed."""
    return sample_product(np.random.default_rng([seed, p, 0xB0]))


def render_item(product: SynthProduct, p: int, k: int, label: int, *, seed: int = 0, size: int = 64,
                image_scale: float | None = None) -> SceneItem:
    """The k-th scene of the stream's p-th product, with class `label`. A seed whose layout does not
    fit is replaced by the next one (five tries, then LayoutError)."""
    for retry in range(5):
        try:
            scene = render_scene(product, None, label, scene_seed(seed, p, k + 1000 * retry), size=size,
                                 image_scale=image_scale)
            return SceneItem(f"p{p:06d}", k, product, scene)
        except LayoutError:
            if retry == 4:
                raise
    raise AssertionError("unreachable")


def generate_scenes(n: int, *, seed: int = 0, size: int = 64, class_shares: Mapping[str, float] = BALANCED,
                    scenes_per_product: int = 2, image_scale: float | None = None,
                    skip_unfit: bool = False) -> Iterator[SceneItem]:
    """Yield `n` labelled scenes, deterministically from `seed`: products p000000, p000001, ...
    each in `scenes_per_product` scenes (as a generator's attempts are several images of one
    product), the classes mixed as `class_shares` says (`class_schedule`).

    A planned scene whose layout cannot fit (`LayoutError`, e.g. a defect that needs more room than
    `image_scale` leaves) raises, or with `skip_unfit` is left out (fewer than `n` are yielded)."""
    _check_stream(n, seed, size, scenes_per_product)
    product = None
    for p, k, label in _plan(n, seed, class_shares, scenes_per_product):
        product = stream_product(seed, p) if k == 0 else product
        try:
            item = render_item(product, p, k, label, seed=seed, size=size, image_scale=image_scale)
        except LayoutError:
            if not skip_unfit:
                raise
            logger.debug("scene %d of product %d (class %d) does not fit; skipped", k, p, label)
            continue
        yield item


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array.astype(np.float16))
    return buf.getvalue()


def write_synthad_dataset(out_dir: str | os.PathLike, n: int, *, seed: int = 0, size: int = 64,
                          class_shares: Mapping[str, float] = BALANCED, scenes_per_product: int = 2,
                          image_scale: float | None = None, maps: bool = True,
                          transform: Callable[[SceneItem], np.ndarray] | None = None,
                          transform_name: str | None = None) -> DatasetSummary:
    """Write `n` labelled scenes to `out_dir` in the RF1M layout (module docstring).

    Every file is written atomically; the label, caption and scene files are written last, so a
    folder with a labels.txt is complete. A scene that fails is recorded in `summary.failed`, the
    others are still written. `maps`: also write the true depth and salience maps
    (float16 (S, S), near = 1, salient = 1) with `modalities/meta.json` naming them "synthad-true".
    `transform(item)` replaces each scene's image before it is written (e.g. a VAE round trip with the
    product pasted back: scenes whose labels are known by construction, as a generator shows them);
    `transform_name` records it in synthad.json. Maps stay the clean render's.
    """
    if transform is not None and not transform_name:
        raise ValueError("transform_name is required with transform: synthad.json must say how the images were made")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    summary = DatasetSummary(root)
    settings = {"n": n, "seed": seed, "size": size, "class_shares": _check_shares(class_shares),
                "scenes_per_product": scenes_per_product, "image_scale": image_scale, "maps": maps,
                **({"transform": transform_name} if transform is not None else {})}
    _check_stream(n, seed, size, scenes_per_product)
    labels, captions, records = [], {}, []
    product = None
    for p, k, label in _plan(n, seed, class_shares, scenes_per_product):
        name = f"images/p{p:06d}_{k}.png"
        try:
            product = stream_product(seed, p) if k == 0 or product is None else product
            item = render_item(product, p, k, label, seed=seed, size=size, image_scale=image_scale)
            if k == 0 or not (root / "products" / f"{item.product_id}.png").exists():
                atomic_write_bytes(root / "products" / f"{item.product_id}.png", product_png_bytes(product.rgba))
            image = item.scene.image if transform is None else transform(item)
            atomic_write_bytes(root / name, _png(image))
            if maps:
                atomic_write_bytes(map_path(root, "depth", name), _npy(item.scene.depth))
                atomic_write_bytes(map_path(root, "salience", name), _npy(item.scene.salience))
        except (OSError, ValueError) as e:  # one bad scene must not lose the rest
            summary.failed[name] = f"{type(e).__name__}: {e}"
            logger.error("synthad: %s not written: %s", name, e)
            continue
        labels.append(f"{name}\t{item.scene.label_name}")
        captions[item.product_id] = product.caption
        records.append({"image": name, "product_id": item.product_id, **item.scene.info()})
        summary.written += 1
        summary.per_class[item.scene.label_name] += 1
    if maps:
        atomic_write_json(root / CACHE_DIR / META_FILE, {"depth": TRUE_MAPS, "salience": TRUE_MAPS, "size": size,
                                                         "format": "npy float16, values in [0, 1]"})
    atomic_write_json(root / "captions.json", captions)
    atomic_write_text(root / "scenes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(root / "synthad.json", settings)
    atomic_write_text(root / "labels.txt", "".join(line + "\n" for line in labels))
    logger.info("synthad: wrote %d scenes to %s (%s)", summary.written, root, summary.per_class)
    return summary
