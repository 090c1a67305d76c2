"""`reliable-ad generate`: a resumable generation run with a manifest (JSON Lines) and provenance.

Layout of a run folder:
    config.json      the resolved config (a rerun must match it)
    manifest.jsonl   one record per image or failed item (`reliable_ad.data.records`), appended atomically
    images/          labelled PNGs, written atomically before their manifest record
    products/        the run's copy of each product, so the folder is self-contained
Rerunning the same command resumes: images whose record exists are skipped; a kill at any moment
leaves at most a torn last manifest line (dropped on resume) and never a half-written image.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

import numpy as np

from reliable_ad import __version__
from reliable_ad.core.config import to_dict
from reliable_ad.data.records import MANIFEST, PRODUCTS_DIR, ManifestRecord, append_record, read_records
from reliable_ad.generation.config import GenerateConfig, upgrade_stored_config
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.inputs import InputProblem, ProductInput
from reliable_ad.generation.models import MODEL_PRESETS
from reliable_ad.data.product import Product, ProductError, load_product, prepare_product
from reliable_ad.generation.prompts import PromptPreset, get_preset
from reliable_ad.generation.provenance import AI_LABEL, ImageMarker, marker_for_run, placed_alpha
from reliable_ad.generation.seeds import derive_seed
from reliable_ad.core.io import atomic_write_bytes, sha256_file
from reliable_ad.training.resume import check_resume_config

logger = logging.getLogger(__name__)

# Fields of the config that change what an image is; a resumed run must not change them.
_IDENTITY = ("model", "sampling", "product", "preset", "presets_file", "seed", "provenance")  # all images marked alike


@dataclass
class GenerateSummary:
    out_dir: Path
    written: int = 0
    skipped: int = 0
    nsfw: int = 0  # images the safety checker flagged (recorded with nsfw: true; diffusers blacks them out)
    failed_products: dict[str, str] = field(default_factory=dict)  # where (path or file:row) -> error
    duplicates: dict[str, str] = field(default_factory=dict)  # path -> the path with the same content
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed_products


def output_size(cfg: GenerateConfig) -> int:
    preset = MODEL_PRESETS.get(cfg.model.model)
    return cfg.sampling.size or (preset.native_size if preset else 512)


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_stem(product_path: str) -> str:
    """The product file's stem as it may appear in the names a run writes: characters that label files,
    URLs or shells treat specially (tabs, newlines, ``#``, spaces, quotes, ...) become ``_``."""
    return _UNSAFE.sub("_", Path(product_path).stem).strip("._") or "product"


def image_name(product_path: str, product_hash: str, attempt: int) -> str:
    return f"{safe_stem(product_path)}-{product_hash[:8]}_{attempt:03d}.png"


# ---------------------------------------------------------------------------------------------
# Products: identity, loading, the run's own copy


@dataclass
class ProductTask:
    """A loaded product of a run. Its identity is the SHA-256 of the file's bytes: the same image
    given twice (the same file, or two files with equal content) is one product, generated once."""

    item: ProductInput
    product: Product
    product_hash: str
    preset: PromptPreset

    @property
    def key(self) -> str:
        return self.product_hash[:16]

    @property
    def product_id(self) -> str:
        return f"{safe_stem(self.item.path)}-{self.product_hash[:8]}"

    @property
    def rgba(self) -> np.ndarray:
        return np.dstack([self.product.rgb, self.product.alpha])


@dataclass(frozen=True)
class Failure:
    """An input that produced no image: a product that cannot be used, or a bad products-file row."""

    error: str
    product_source: str | None = None  # the product's absolute path
    source: str | None = None  # "products.csv:3" for a row of a products file

    @property
    def where(self) -> str:
        return self.source or self.product_source or "(unknown)"


def load_tasks(inputs: list[ProductInput], cfg: GenerateConfig | None = None,
               problems: list[InputProblem] | None = None, *, preset: str | None = None,
               presets_file: str | None = None, white_threshold: int | None = None,
               ) -> tuple[list[ProductTask], list[Failure], dict[str, str]]:
    """Load every product once: (tasks, failures, duplicates). A bad product or row is a failure and
    the others go on; a product whose content equals an earlier one's is a duplicate (path -> first).

    The prompt preset of a product without its own, the presets file and the white threshold come from
    ``cfg`` (`generate`, `run`) or are given (RFFT's data)."""
    if cfg is not None:
        preset, presets_file = cfg.prompt_preset, cfg.presets_file
        white_threshold = cfg.product.white_threshold
    if preset is None or white_threshold is None:
        raise ValueError("load_tasks needs a GenerateConfig, or preset= and white_threshold=")
    failures = [Failure(p.message, None, p.source) for p in problems or ()]
    tasks: list[ProductTask] = []
    first: dict[str, ProductTask] = {}
    duplicates: dict[str, str] = {}
    for item in inputs:
        try:
            product_hash = sha256_file(item.path) if Path(item.path).is_file() else None
            if product_hash in first:
                seen = first[product_hash]
                duplicates[item.path] = seen.item.path
                note = "" if (item.caption or "") == (seen.item.caption or "") else (
                    f"; its caption {item.caption!r} is ignored, {seen.item.caption!r} is used")
                logger.warning("product %s has the same content as %s: generated once%s", item.path, seen.item.path, note)
                continue
            chosen = get_preset(item.preset or preset, presets_file)
            if chosen.uses_caption:
                chosen.render(0, caption=item.caption)  # a product its preset cannot name fails here, not mid-run
                if not (item.caption or "").strip():
                    logger.warning("product %s has no caption: its prompts say %r where preset %r names the product",
                                   item.path, chosen.caption_default, chosen.name)
            product = load_product(item.path, white_threshold=white_threshold)
        except (ProductError, ValueError, OSError) as e:
            failures.append(Failure(str(e), os.path.abspath(item.path)))
            logger.error("product %s skipped: %s", item.path, e)
            continue
        task = ProductTask(item, product, product_hash, chosen)
        first[product_hash] = task
        tasks.append(task)
    return tasks, failures, duplicates


def store_product(out_dir: Path, task: ProductTask) -> str:
    """The run's own copy of a product (``products/<product id><ext>``, written once, atomically), so
    the run folder is self-contained; returns its path relative to the run folder."""
    suffix = Path(task.item.path).suffix.lower() or ".png"
    rel = f"{PRODUCTS_DIR}/{task.product_id}{suffix}"
    dest = out_dir / rel
    if not dest.is_file() or sha256_file(dest) != task.product_hash:
        atomic_write_bytes(dest, Path(task.item.path).read_bytes())
    return rel


def image_record(task: ProductTask, *, product_rel: str, attempt: int, seed: int, run_seed: int, size: int,
                 preset: str, prompt: str, negative_prompt: str, slots: dict, placement: dict,
                 **fields) -> ManifestRecord:
    """The record of one generated image (`generate` and `run` both write it through here)."""
    return ManifestRecord(
        image=f"images/{image_name(task.item.path, task.product_hash, attempt)}", product=product_rel,
        product_source=os.path.abspath(task.item.path), product_hash=task.product_hash, product_id=task.product_id,
        caption=task.item.caption or "", caption_given=task.item.caption is not None, preset=preset, prompt=prompt,
        negative_prompt=negative_prompt, slots=slots, run_seed=run_seed, attempt=attempt, seed=seed, size=size,
        placement=placement, ai_label=AI_LABEL, error=None, reliable_ad_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), **fields)


def save_image(out_dir: Path, manifest: Path, record: ManifestRecord, image, *, marker: ImageMarker | None = None,
               product_alpha: np.ndarray | None = None) -> None:
    """The marked PNG first (label, C2PA manifest, watermark: `generation.provenance`), then its record: a
    kill between the two only redoes that image. ``marker``: the run's (None: the one the run folder's
    config.json asks for); ``product_alpha`` (S, S): the placed product, whose pixels the watermark spares
    (None: placed again from the record and the run's copy of the product)."""
    marker = marker or marker_for_run(out_dir)
    if product_alpha is None and marker.config.watermark and not marker.config.watermark_product:
        product_alpha = placed_alpha(out_dir, record)
    atomic_write_bytes(out_dir / record.image, marker.png_bytes(image, record, product_alpha))
    append_record(manifest, record)


def record_failures(manifest: Path, records: list[ManifestRecord], failures: list[Failure], run_seed: int) -> None:
    """A record per failure, once: a rerun that fails alike adds nothing."""
    known = {(r.where, r.error) for r in records if r.failed}
    for f in failures:
        if (f.where, f.error) not in known:
            known.add((f.where, f.error))
            append_record(manifest, ManifestRecord(error=f.error, product_source=f.product_source, source=f.source,
                                                   run_seed=run_seed, created=time.strftime("%Y-%m-%dT%H:%M:%S")))


def run_generate(
    inputs: list[ProductInput],
    cfg: GenerateConfig,
    out_dir: str | Path,
    *,
    problems: list[InputProblem] | None = None,
    generator: AdGenerator | None = None,
    progress: bool = True,
    on_image: Callable[[ManifestRecord], None] | None = None,
) -> GenerateSummary:
    """Generate ``cfg.num_per_product`` images per product into ``out_dir``, resuming what exists.

    ``problems`` (bad rows of a products file) are recorded as failed items with their location."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_resume_config(out_dir, to_dict(cfg), _IDENTITY, upgrade=upgrade_stored_config)
    marker = ImageMarker(cfg.provenance)  # before any generation: a bad signing identity stops the run here
    manifest = out_dir / MANIFEST
    records = read_records(manifest, repair=True)
    done = {r.identity for r in records if r.is_image}
    summary = GenerateSummary(out_dir)
    size = generator.size if generator else output_size(cfg)

    # 1. load and prepare every product; a bad one is recorded and the batch goes on
    tasks, failures, summary.duplicates = load_tasks(inputs, cfg, problems)
    jobs: list[tuple[GenerationJob, ProductTask, dict]] = []
    for task in tasks:
        todo = [k for k in range(cfg.num_per_product) if (task.product_hash, k) not in done]
        summary.skipped += cfg.num_per_product - len(todo)
        if not todo:
            continue
        try:
            prepared = prepare_product(
                task.product, size=size, image_scale=cfg.product.image_scale or task.preset.image_scale,
                keep_loc=cfg.product.keep_loc or task.preset.keep_loc, canny_low=cfg.product.canny_low,
                canny_high=cfg.product.canny_high, box_alpha_threshold=cfg.product.box_alpha_threshold,
            )
        except (ProductError, ValueError) as e:
            failures.append(Failure(str(e), os.path.abspath(task.item.path)))
            logger.error("product %s skipped: %s", task.item.path, e)
            continue
        for attempt in todo:
            seed = derive_seed(cfg.seed, task.key, attempt)
            rendered = task.preset.render(seed, caption=task.item.caption)
            fields = {"attempt": attempt, "seed": seed, "preset": task.preset.name, "prompt": rendered.prompt,
                      "negative_prompt": rendered.negative_prompt, "slots": rendered.slot_values,
                      "placement": prepared.placement.to_dict()}
            jobs.append((GenerationJob(prepared, rendered.prompt, rendered.negative_prompt, seed), task, fields))

    # 2. generate in batches (models load only when there is work)
    if jobs:
        generator = generator or AdGenerator.from_config(cfg.model, cfg.sampling, speed=cfg.speed)
        model_info = {k: v for k, v in generator.info.items() if k != "native_size"}
        sampling = to_dict(generator.sampling)
        stored: dict[str, str] = {}
        bar = tqdm(total=len(jobs), desc="generating", unit="img", disable=not progress)
        bs = generator.sampling.batch_size
        for start in range(0, len(jobs), bs):
            batch = jobs[start : start + bs]
            try:
                results = generator.generate([j for j, _, _ in batch])
            except Exception as e:  # noqa: BLE001 - one failed batch must not end the run
                logger.exception("batch failed")
                for _, task, _ in batch:
                    where = os.path.abspath(task.item.path)
                    if all(f.product_source != where for f in failures):
                        failures.append(Failure(f"generation failed: {e}", where))
                bar.update(len(batch))
                continue
            for (job, task, fields), res in zip(batch, results):
                if task.key not in stored:
                    stored[task.key] = store_product(out_dir, task)
                rec = image_record(task, product_rel=stored[task.key], run_seed=cfg.seed, size=size,
                                   model=model_info, sampling=sampling, nsfw=res.nsfw,
                                   seconds=round(res.seconds, 4), **fields)
                save_image(out_dir, manifest, rec, res.image, marker=marker, product_alpha=job.prepared.alpha)
                summary.written += 1
                if res.nsfw:
                    summary.nsfw += 1
                    logger.warning("%s: flagged by the safety checker (recorded with nsfw: true)", rec.image)
                if on_image:
                    on_image(rec)
                bar.update(1)
        bar.close()
    # 3. failed items get a record too, with their location
    record_failures(manifest, records, failures, cfg.seed)
    summary.failed_products = {f.where: f.error for f in failures}
    summary.seconds = time.perf_counter() - t_start
    return summary
