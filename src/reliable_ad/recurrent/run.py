"""`reliable-ad run`, the main job: prepare, generate, inspect with RFNet, regenerate until Available.

Run folder:
    config.json, manifest.jsonl   every attempt with its verdict (not only winners)
    images/                       every attempt, labelled AI-generated
    accepted/<product>.png        the accepted image per product
    flagged/<product>.png         the best-scoring attempt of products with none available
    summary.json, report.html     statistics and a self-contained visual report
Resumable: a rerun continues with the same seeds and plans, so its results equal an uninterrupted run.
Under `accelerate launch` the products are sharded across processes (each handled exactly once, each
process writing its own manifest shard) and the first process merges the shards at the end.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reliable_ad import __version__
from reliable_ad.config import to_dict
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.inputs import ProductInput
from reliable_ad.generation.product import Product, ProductError, load_product, prepare_product
from reliable_ad.generation.prompts import PromptPreset, get_preset
from reliable_ad.generation.provenance import AI_LABEL, save_labelled_png
from reliable_ad.generation.run import image_name
from reliable_ad.recurrent.config import RunConfig
from reliable_ad.recurrent.loop import Attempt, Outcome, make_acceptor, recurrent_generation
from reliable_ad.recurrent.policies import plan_attempt
from reliable_ad.recurrent.summary import latest_attempts, summarize
from reliable_ad.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, sha256_file

logger = logging.getLogger(__name__)

_IDENTITY = ("generation", "recurrent", "rfnet", "depth", "salience")


@dataclass
class ProductTask:
    item: ProductInput
    product: Product
    product_hash: str
    preset: PromptPreset

    @property
    def key(self) -> str:
        return self.product_hash[:16]

    @property
    def product_id(self) -> str:
        return f"{Path(self.item.path).stem}-{self.product_hash[:8]}"

    @property
    def rgba(self) -> np.ndarray:
        return np.dstack([self.product.rgb, self.product.alpha])


def resolve_rfnet(cfg: RunConfig) -> str:
    """The reviewer to use; real generators need a trained RFNet, named before anything is generated."""
    if cfg.rfnet:
        if cfg.rfnet != "tiny" and not Path(cfg.rfnet).exists() and "/" not in cfg.rfnet:
            from reliable_ad.rfnet.presets import list_presets

            if cfg.rfnet not in list_presets():
                raise ValueError(f"--rfnet {cfg.rfnet!r} is neither an RFNet folder, a hub id, nor a preset ({sorted(list_presets())})")
        return cfg.rfnet
    from reliable_ad.generation.models import MODEL_PRESETS

    model = MODEL_PRESETS.get(cfg.generation.model.model)
    if model is not None and model.rfnet:
        return model.rfnet
    raise ValueError(
        f"--model {cfg.generation.model.model!r} needs a trained RFNet to judge its images: pass --rfnet FOLDER|HUB_ID "
        "(train one with `reliable-ad rfnet train`); the random-weight `--rfnet tiny` only suits --model tiny"
    )


def _manifests(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.glob("manifest*.jsonl"))


def _read_all(out_dir: Path) -> list[dict]:
    return [r for p in _manifests(out_dir) for r in read_jsonl(p, repair=True)]


def _history(records: list[dict]) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = {}
    for product_hash, attempts in latest_attempts(records).items():
        out[product_hash[:16]] = [
            Outcome(Attempt(product_hash[:16], a["attempt"], a["seed"], a.get("variation") or {}),
                    a["verdict"]["label"], float(a["verdict"]["p_available"]), bool(a["accepted"]))
            for a in attempts
        ]
    return out


def _check_config(out_dir: Path, cfg: RunConfig) -> None:
    import json

    path, new = out_dir / "config.json", to_dict(cfg)
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in _IDENTITY if old.get(k) != new.get(k)]
        if changed:
            raise ValueError(f"{out_dir} holds a run made with a different config ({', '.join(changed)} differ); "
                             "rerun with the same settings to resume, or choose another --out")
    atomic_write_json(path, {**new, "reliable_ad_version": __version__})


def _load_tasks(inputs: list[ProductInput], cfg: RunConfig) -> tuple[list[ProductTask], dict[str, str]]:
    tasks, failed = [], {}
    for item in inputs:
        try:
            preset = get_preset(item.preset or cfg.generation.prompt_preset, cfg.generation.presets_file)
            product = load_product(item.path, white_threshold=cfg.generation.product.white_threshold)
            tasks.append(ProductTask(item, product, sha256_file(item.path), preset))
        except (ProductError, ValueError, OSError) as e:
            failed[item.path] = str(e)
            logger.error("product %s skipped: %s", item.path, e)
    return tasks, failed


class _Worker:
    """The generate and judge callables of the loop, and the writing of each judged attempt."""

    def __init__(self, cfg: RunConfig, generator: AdGenerator, judge, out_dir: Path, manifest: Path, rfnet_name: str):
        self.cfg, self.generator, self.judge = cfg, generator, judge
        self.out_dir, self.manifest, self.rfnet_name = out_dir, manifest, rfnet_name
        self.size = generator.size
        self.rank = 0
        self._prepared: dict[tuple[str, float], object] = {}
        self._pending: dict[tuple[str, int], dict] = {}
        self.model_info = {k: v for k, v in generator.info.items() if k != "native_size"}
        self.sampling = to_dict(generator.sampling)

    def scale(self, task: ProductTask, attempt: Attempt) -> float:
        return attempt.variation.get("image_scale") or self.cfg.generation.product.image_scale or task.preset.image_scale

    def plan(self, task: ProductTask, k: int, history: list[Outcome]) -> Attempt:
        rendered0 = task.preset.render(0)
        return plan_attempt(task.key, k, history, run_seed=self.cfg.generation.seed, config=self.cfg.recurrent,
                            base_scale=self.cfg.generation.product.image_scale or task.preset.image_scale,
                            slots=task.preset.slots, base_slot_values=rendered0.slot_values)

    def _job(self, task: ProductTask, attempt: Attempt) -> GenerationJob:
        g = self.cfg.generation
        scale = self.scale(task, attempt)
        if (task.key, scale) not in self._prepared:
            self._prepared[(task.key, scale)] = prepare_product(
                task.product, size=self.size, image_scale=scale, keep_loc=g.product.keep_loc or task.preset.keep_loc,
                canny_low=g.product.canny_low, canny_high=g.product.canny_high)
        prepared = self._prepared[(task.key, scale)]
        preset = get_preset(attempt.variation["preset"], g.presets_file) if "preset" in attempt.variation else task.preset
        rendered = preset.render(attempt.seed, slot_values=attempt.variation.get("slot_values"))
        self._pending[(task.key, attempt.attempt)] = {
            "preset": preset.name, "prompt": rendered.prompt, "negative_prompt": rendered.negative_prompt,
            "slots": rendered.slot_values, "placement": prepared.placement.to_dict(), "image_scale": scale,
        }
        return GenerationJob(prepared, rendered.prompt, rendered.negative_prompt, attempt.seed)

    def generate(self, planned):
        results = self.generator.generate([self._job(t, a) for t, a in planned])
        return results

    def judge_batch(self, planned, results):
        t0 = time.perf_counter()
        verdicts = self.judge([t.rgba for t, _ in planned], [r.image for r in results],
                              [t.item.caption or "" for t, _ in planned])
        per = (time.perf_counter() - t0) / max(1, len(planned))
        for r in results:
            r.inspect_seconds = per
        return verdicts

    def write(self, task: ProductTask, attempt: Attempt, result, verdict, accepted: bool) -> dict:
        name = image_name(task.item.path, task.product_hash, attempt.attempt)
        rec = {
            "image": f"images/{name}", "product": task.item.path, "product_hash": task.product_hash,
            "product_id": task.product_id, "caption": task.item.caption or "", "caption_given": task.item.caption is not None,
            **self._pending.pop((task.key, attempt.attempt)),
            "run_seed": self.cfg.generation.seed, "attempt": attempt.attempt, "seed": attempt.seed,
            "variation": attempt.variation, "size": self.size, "model": self.model_info, "sampling": self.sampling,
            "nsfw": result.nsfw, "seconds": round(result.seconds, 4),
            "inspect_seconds": round(getattr(result, "inspect_seconds", 0.0), 4),
            "rfnet": self.rfnet_name, "verdict": _verdict_dict(verdict), "accepted": accepted, "process": self.rank,
            "ai_label": AI_LABEL, "error": None, "reliable_ad_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        params = {k: rec[k] for k in ("prompt", "negative_prompt", "seed", "preset", "product_hash")}
        save_labelled_png(self.out_dir / rec["image"], result.image, params)
        append_jsonl(self.manifest, rec)
        return rec


def _verdict_dict(v) -> dict:
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return {"label": v.label, "label_index": int(v.label_index), "probs": dict(v.probs), "p_available": float(v.p_available)}


def _distributed(device: str):
    import torch

    try:
        from accelerate import PartialState

        # on CPU-only machines (or --device cpu) processes talk over gloo
        return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - accelerate missing or no distributed env: one process
        return None


def run_recurrent_job(
    inputs: list[ProductInput],
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    generator: AdGenerator | None = None,
    judge=None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the main job; returns the summary (the merged one on the main process)."""
    out_dir = Path(out_dir)
    rfnet_name = resolve_rfnet(cfg)  # before any generation: a missing reviewer is an error now
    state = _distributed(cfg.generation.model.device)
    rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_config(out_dir, cfg)
    if state:
        state.wait_for_everyone()
    mine = [item for i, item in enumerate(inputs) if i % world == rank]
    manifest = out_dir / ("manifest.jsonl" if world == 1 else f"manifest.rank{rank}.jsonl")
    records = _read_all(out_dir)
    history = _history(records)
    tasks, failed = _load_tasks(mine, cfg)
    known_errors = {(r.get("product"), r["error"]) for r in records if r.get("error")}
    for path, err in failed.items():
        if (path, err) not in known_errors:
            append_jsonl(manifest, {"product": path, "error": err, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    rc = cfg.recurrent
    todo = [t for t in tasks if not _finished(history.get(t.key, []), rc.max_attempts)]
    if todo:
        if generator is None:
            generator = AdGenerator.from_config(cfg.generation.model, cfg.generation.sampling)
        if judge is None:
            from reliable_ad.rfnet.inspector import Inspector

            inspector = Inspector.from_pretrained(rfnet_name, depth=cfg.depth, salience=cfg.salience,
                                                  device=str(generator.device), batch_size=cfg.inspect_batch_size)
            judge = inspector.inspect
        worker = _Worker(cfg, generator, judge, out_dir, manifest, rfnet_name)
        worker.rank = rank
        done = len(tasks) - len(todo)
        n_ok = sum(any(o.accepted for o in history.get(t.key, [])) for t in tasks)
        bar = tqdm(total=len(tasks), initial=done, desc=f"products{'' if world == 1 else f' [rank {rank}]'}",
                   unit="product", disable=not progress)

        n_attempts = 0

        def on_result(task, attempt, result, verdict, ok):
            nonlocal n_ok, done, n_attempts
            worker.write(task, attempt, result, verdict, ok)
            n_attempts += 1
            if ok or attempt.attempt + 1 >= rc.max_attempts:
                n_ok += ok
                done += 1
                bar.update(1)
            bar.set_postfix(available=f"{n_ok / max(done, 1):.0%}", attempts=n_attempts)

        recurrent_generation(
            todo, key=lambda t: t.key, plan=worker.plan, generate=worker.generate, judge=worker.judge_batch,
            accept=make_acceptor(rc.acceptance, rc.threshold), max_attempts=rc.max_attempts,
            batch_size=generator.sampling.batch_size, history=history, on_result=on_result,
        )
        bar.close()
    if state:
        state.wait_for_everyone()
    if rank != 0:
        return {}
    return finalize(out_dir, rc.max_attempts)


def _finished(history: list[Outcome], k: int) -> bool:
    return any(o.accepted for o in history) or len(history) >= k


def finalize(out_dir: Path, max_attempts: int) -> dict:
    """Merge manifest shards, copy accepted and flagged images, write summary.json and report.html."""
    records = _read_all(out_dir)
    shards = [p for p in _manifests(out_dir) if p.name != "manifest.jsonl"]
    if shards:  # merge: the main manifest is rewritten atomically, then the shards go
        seen, merged = set(), []
        for r in records:
            k = (r.get("product_hash"), r.get("attempt"), r.get("error"), r.get("product"))
            if k not in seen:
                seen.add(k)
                merged.append(r)
        merged.sort(key=lambda r: (str(r.get("product")), r.get("attempt", -1)))
        import json

        atomic_write_text(out_dir / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))
        for p in shards:
            p.unlink()
        records = merged
    for attempts in latest_attempts(records).values():
        winner = next((a for a in attempts if a.get("accepted")), None)
        if winner is None and len(attempts) >= max_attempts:
            best = max(attempts, key=lambda a: a["verdict"]["p_available"])
            _copy(out_dir / best["image"], out_dir / "flagged" / f"{best['product_id']}.png")
        elif winner is not None:
            _copy(out_dir / winner["image"], out_dir / "accepted" / f"{winner['product_id']}.png")
    summary = summarize(records, max_attempts)
    atomic_write_json(out_dir / "summary.json", summary)
    from reliable_ad.recurrent.report import write_report

    write_report(out_dir, records, summary)
    return summary


def _copy(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
