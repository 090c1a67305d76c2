"""`reliable-ad generate`: a resumable generation run with a manifest (JSON Lines) and provenance.

Layout of a run folder:
    config.json      the resolved config (a rerun must match it)
    manifest.jsonl   one record per image (or per failed product), appended atomically
    images/          labelled PNGs, written atomically before their manifest record
Rerunning the same command resumes: images whose record exists are skipped; a kill at any moment
leaves at most a torn last manifest line (dropped on resume) and never a half-written image.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from reliable_ad import __version__
from reliable_ad.config import to_dict
from reliable_ad.generation.config import GenerateConfig
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.inputs import ProductInput
from reliable_ad.generation.models import MODEL_PRESETS
from reliable_ad.generation.product import ProductError, load_product, prepare_product
from reliable_ad.generation.prompts import get_preset
from reliable_ad.generation.provenance import AI_LABEL, save_labelled_png
from reliable_ad.generation.seeds import derive_seed
from reliable_ad.utils.io import append_jsonl, atomic_write_json, read_jsonl, sha256_file

logger = logging.getLogger(__name__)

# Fields of the config that change what an image is; a resumed run must not change them.
_IDENTITY = ("model", "sampling", "product", "preset", "presets_file", "seed")


@dataclass
class GenerateSummary:
    out_dir: Path
    written: int = 0
    skipped: int = 0
    failed_products: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed_products


def output_size(cfg: GenerateConfig) -> int:
    preset = MODEL_PRESETS.get(cfg.model.model)
    return cfg.sampling.size or (preset.native_size if preset else 512)


def _check_resume_config(out_dir: Path, cfg: GenerateConfig) -> None:
    path = out_dir / "config.json"
    new = to_dict(cfg)
    if path.exists():
        import json

        old = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in _IDENTITY if old.get(k) != new.get(k)]
        if changed:
            raise ValueError(
                f"{out_dir} holds a run made with a different config ({', '.join(changed)} differ); "
                "rerun with the same settings to resume, or choose another --out"
            )
    atomic_write_json(path, {**new, "reliable_ad_version": __version__})


def image_name(product_path: str, product_hash: str, attempt: int) -> str:
    return f"{Path(product_path).stem}-{product_hash[:8]}_{attempt:03d}.png"


def run_generate(
    inputs: list[ProductInput],
    cfg: GenerateConfig,
    out_dir: str | Path,
    *,
    generator: AdGenerator | None = None,
    progress: bool = True,
    on_image: Callable[[dict], None] | None = None,
) -> GenerateSummary:
    """Generate ``cfg.num_per_product`` images per product into ``out_dir``, resuming what exists."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume_config(out_dir, cfg)
    manifest = out_dir / "manifest.jsonl"
    records = read_jsonl(manifest, repair=True)
    done = {(r["product_hash"], r["attempt"]) for r in records if not r.get("error")}
    known_errors = {(r.get("product"), r["error"]) for r in records if r.get("error")}
    summary = GenerateSummary(out_dir)
    size = generator.size if generator else output_size(cfg)

    # 1. prepare every product; a bad one is recorded and the batch goes on
    jobs: list[tuple[GenerationJob, dict]] = []
    for item in inputs:
        try:
            product_hash = sha256_file(item.path) if Path(item.path).is_file() else None
            if product_hash and all((product_hash, k) in done for k in range(cfg.num_per_product)):
                summary.skipped += cfg.num_per_product
                continue
            preset = get_preset(item.preset or cfg.prompt_preset, cfg.presets_file)
            product = load_product(item.path, white_threshold=cfg.product.white_threshold)
            prepared = prepare_product(
                product,
                size=size,
                image_scale=cfg.product.image_scale or preset.image_scale,
                keep_loc=cfg.product.keep_loc or preset.keep_loc,
                canny_low=cfg.product.canny_low,
                canny_high=cfg.product.canny_high,
            )
        except (ProductError, ValueError, OSError) as e:
            summary.failed_products[item.path] = str(e)
            logger.error("product %s skipped: %s", item.path, e)
            continue
        for attempt in range(cfg.num_per_product):
            if (product_hash, attempt) in done:
                summary.skipped += 1
                continue
            seed = derive_seed(cfg.seed, product_hash[:16], attempt)
            rendered = preset.render(seed)
            record = {
                "image": f"images/{image_name(item.path, product_hash, attempt)}",
                "product": item.path,
                "product_hash": product_hash,
                "product_id": f"{Path(item.path).stem}-{product_hash[:8]}",
                "caption": item.caption or "",
                "caption_given": item.caption is not None,
                "preset": preset.name,
                "prompt": rendered.prompt,
                "negative_prompt": rendered.negative_prompt,
                "slots": rendered.slot_values,
                "run_seed": cfg.seed,
                "attempt": attempt,
                "seed": seed,
                "size": size,
                "placement": prepared.placement.to_dict(),
            }
            jobs.append((GenerationJob(prepared, rendered.prompt, rendered.negative_prompt, seed), record))

    # 2. generate in batches (models load only when there is work)
    if jobs:
        generator = generator or AdGenerator.from_config(cfg.model, cfg.sampling)
        model_info = {k: v for k, v in generator.info.items() if k != "native_size"}
        sampling = to_dict(generator.sampling)
        bar = tqdm(total=len(jobs), desc="generating", unit="img", disable=not progress)
        bs = generator.sampling.batch_size
        for start in range(0, len(jobs), bs):
            batch = jobs[start : start + bs]
            try:
                results = generator.generate([j for j, _ in batch])
            except Exception as e:  # noqa: BLE001 - one failed batch must not end the run
                logger.exception("batch failed")
                for _, rec in batch:
                    summary.failed_products.setdefault(rec["product"], f"generation failed: {e}")
                bar.update(len(batch))
                continue
            for (_, rec), res in zip(batch, results):
                rec = {**rec, "model": model_info, "sampling": sampling, "nsfw": res.nsfw,
                       "seconds": round(res.seconds, 4), "ai_label": AI_LABEL, "error": None,
                       "reliable_ad_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                params = {k: rec[k] for k in ("prompt", "negative_prompt", "seed", "preset", "product_hash")}
                save_labelled_png(out_dir / rec["image"], res.image, params)
                append_jsonl(manifest, rec)
                summary.written += 1
                if on_image:
                    on_image(rec)
                bar.update(1)
        bar.close()
    # 3. failed products get a manifest record too (once: a rerun that fails alike adds nothing)
    for path, error in summary.failed_products.items():
        if (path, error) not in known_errors:
            append_jsonl(manifest, {"product": path, "error": error, "run_seed": cfg.seed,
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    summary.seconds = time.perf_counter() - t_start
    return summary
