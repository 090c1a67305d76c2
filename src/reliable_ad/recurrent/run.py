"""`reliable-ad run`, the main job: prepare, generate, inspect with RFNet, regenerate until Available.

Run folder:
    config.json, manifest.jsonl   every attempt with its verdict (not only winners)
    images/                       every attempt, labelled AI-generated
    accepted/<product>.png        the accepted image per product
    flagged/<product>.png         the best-scoring attempt of products with none available
An image the safety checker flagged (`nsfw`) is recorded but never accepted nor copied: its product is
regenerated as after a rejection, and the report shows it blurred.
    summary.json, report.html     statistics and a self-contained visual report
Resumable: a rerun continues with the same seeds and plans, so its results equal an uninterrupted run.
Under `accelerate launch` the products are sharded across processes (each handled exactly once, each
process writing its own manifest shard) and the first process merges the shards at the end.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from reliable_ad.core.config import to_dict
from reliable_ad.data.records import MANIFEST, ManifestRecord, VerdictRecord, read_records
from reliable_ad.generation.generator import AdGenerator, GenerationJob
from reliable_ad.generation.inputs import InputProblem, ProductInput
from reliable_ad.data.product import prepare_product
from reliable_ad.generation.prompts import get_preset
from reliable_ad.generation.provenance import ImageMarker
from reliable_ad.generation.run import (
    ProductTask, image_record, load_tasks, record_failures, save_image, store_product,
)
from reliable_ad.recurrent.config import RunConfig, upgrade_stored_run_config
from reliable_ad.recurrent.loop import Attempt, LoopTimings, Outcome, recurrent_generation
from reliable_ad.recurrent.policies import plan_attempt
from reliable_ad.recurrent.summary import latest_attempts, summarize
from reliable_ad.rfnet.judge import Judge
from reliable_ad.core.io import atomic_write_json, atomic_write_text
from reliable_ad.training.resume import check_resume_config

logger = logging.getLogger(__name__)

_IDENTITY = ("generation", "recurrent", "judge")


def resolve_rfnet(cfg: RunConfig) -> str:
    """The reviewer to use; real generators need a trained RFNet, named before anything is generated."""
    rfnet = cfg.judge.rfnet
    if rfnet:
        if rfnet != "tiny" and not Path(rfnet).exists() and "/" not in rfnet:
            from reliable_ad.rfnet.presets import list_presets

            if rfnet not in list_presets():
                raise ValueError(f"--rfnet {rfnet!r} is neither an RFNet folder, a hub id, nor a preset ({sorted(list_presets())})")
        return rfnet
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


def _read_all(out_dir: Path) -> list[ManifestRecord]:
    return [r for p in _manifests(out_dir) for r in read_records(p, repair=True)]


def _history(records: list[ManifestRecord]) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = {}
    for product_hash, attempts in latest_attempts(records).items():
        out[product_hash[:16]] = [
            Outcome(Attempt(product_hash[:16], a.attempt, a.seed, a.variation or {}),
                    a.verdict.label, float(a.verdict.p_available), bool(a.accepted))
            for a in attempts
        ]
    return out


class _Worker:
    """The generate and judge callables of the loop, and the writing of each judged attempt."""

    def __init__(self, cfg: RunConfig, generator: AdGenerator, judge, out_dir: Path, manifest: Path, rfnet_name: str):
        self.cfg, self.generator, self.judge = cfg, generator, judge
        self.out_dir, self.manifest, self.rfnet_name = out_dir, manifest, rfnet_name
        self.size = generator.size
        self.rank = 0
        self._prepared: dict[tuple[str, float], object] = {}
        self._pending: dict[tuple[str, int], dict] = {}
        self._slots: dict[tuple[str, int], dict] = {}  # slot values each attempt used (defect-aware retries)
        self._stored: dict[str, str] = {}
        self.model_info = {k: v for k, v in generator.info.items() if k != "native_size"}
        self.sampling = to_dict(generator.sampling)
        self.marker = ImageMarker(cfg.generation.provenance)  # before any generation: a bad identity stops here

    def remember_slots(self, records: list[ManifestRecord]) -> None:
        """The slot values of attempts made before a resume (defect-aware retries step from them)."""
        for r in records:
            if r.is_image and r.product_hash and r.attempt is not None:
                self._slots[(r.product_hash[:16], r.attempt)] = dict(r.slots or {})

    def scale(self, task: ProductTask, attempt: Attempt) -> float:
        return attempt.variation.get("image_scale") or self.cfg.generation.product.image_scale or task.preset.image_scale

    def plan(self, task: ProductTask, k: int, history: list[Outcome]) -> Attempt:
        previous = self._slots.get((task.key, k - 1)) if k > 0 else None
        background = {n: v for n, v in task.preset.slots.items() if n in task.preset.background_slots}
        return plan_attempt(task.key, k, history, run_seed=self.cfg.generation.seed, config=self.cfg.recurrent,
                            base_scale=self.cfg.generation.product.image_scale or task.preset.image_scale,
                            slots=background, previous_slot_values=previous)

    def _job(self, task: ProductTask, attempt: Attempt) -> GenerationJob:
        g = self.cfg.generation
        scale = self.scale(task, attempt)
        if (task.key, scale) not in self._prepared:
            self._prepared[(task.key, scale)] = prepare_product(
                task.product, size=self.size, image_scale=scale, keep_loc=g.product.keep_loc or task.preset.keep_loc,
                canny_low=g.product.canny_low, canny_high=g.product.canny_high,
                box_alpha_threshold=g.product.box_alpha_threshold)
        prepared = self._prepared[(task.key, scale)]
        preset = get_preset(attempt.variation["preset"], g.presets_file) if "preset" in attempt.variation else task.preset
        rendered = preset.render(attempt.seed, slot_values=attempt.variation.get("slot_values"),
                                 caption=task.item.caption)
        self._pending[(task.key, attempt.attempt)] = {
            "preset": preset.name, "prompt": rendered.prompt, "negative_prompt": rendered.negative_prompt,
            "slots": rendered.slot_values, "placement": prepared.placement.to_dict(), "image_scale": scale,
        }
        self._slots[(task.key, attempt.attempt)] = dict(rendered.slot_values)
        return GenerationJob(prepared, rendered.prompt, rendered.negative_prompt, attempt.seed)

    def generate(self, planned):
        results = self.generator.generate([self._job(t, a) for t, a in planned])
        return results

    def judge_batch(self, planned, results):
        t0 = time.perf_counter()
        with _side_stream(self.generator.device if self.cfg.generation.speed.overlap_inspection else None):
            verdicts = self.judge([t.rgba for t, _ in planned], [r.image for r in results],
                                  [t.item.caption or "" for t, _ in planned])
        per = (time.perf_counter() - t0) / max(1, len(planned))
        for r in results:
            r.inspect_seconds = per
        return verdicts

    def write(self, task: ProductTask, attempt: Attempt, result, verdict, accepted: bool) -> ManifestRecord:
        if task.key not in self._stored:
            self._stored[task.key] = store_product(self.out_dir, task)
        rec = image_record(
            task, product_rel=self._stored[task.key], run_seed=self.cfg.generation.seed, attempt=attempt.attempt,
            seed=attempt.seed, size=self.size, **self._pending.pop((task.key, attempt.attempt)),
            variation=attempt.variation, model=self.model_info, sampling=self.sampling, nsfw=result.nsfw,
            seconds=round(result.seconds, 4), inspect_seconds=round(getattr(result, "inspect_seconds", 0.0), 4),
            rfnet=self.rfnet_name, verdict=_verdict_record(verdict), accepted=accepted, process=self.rank)
        placed = self._prepared[(task.key, self.scale(task, attempt))]
        save_image(self.out_dir, self.manifest, rec, result.image, marker=self.marker, product_alpha=placed.alpha)
        return rec


def _side_stream(device):
    """With overlapped inspection on a GPU, the judge's kernels go to a CUDA stream of their own (the
    current stream is per thread), so they run beside the generator's; verdicts come back as Python floats,
    which waits for them. Elsewhere: nothing."""
    import contextlib

    import torch

    if device is None or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device=device))


def _verdict_record(v) -> VerdictRecord:
    return VerdictRecord(v.label, int(v.label_index), {k: float(p) for k, p in dict(v.probs).items()},
                         float(v.p_available))


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
    problems: list[InputProblem] | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the main job; returns the summary (the merged one on the main process).

    ``problems`` (bad rows of a products file) are recorded as failed items with their location."""
    out_dir = Path(out_dir)
    rfnet_name = resolve_rfnet(cfg)  # before any generation: a missing reviewer is an error now
    state = _distributed(cfg.generation.model.device)
    rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_resume_config(out_dir, to_dict(cfg), _IDENTITY, ignore=("judge.batch_size", "generation.speed"),
                           upgrade=upgrade_stored_run_config)
    if state:
        state.wait_for_everyone()
    manifest = out_dir / (MANIFEST if world == 1 else f"manifest.rank{rank}.jsonl")
    records = _read_all(out_dir)
    history = _history(records)
    # every process loads every product (cheap next to generating) so that duplicates by content go
    # to one process, then keeps its share; bad rows are recorded by the main process
    tasks, failures, duplicates = load_tasks(inputs, cfg.generation, problems if rank == 0 else None)
    tasks = tasks[rank::world]
    failures = [f for f in failures if f.product_source is None] + [
        f for f in failures if f.product_source is not None][rank::world]
    record_failures(manifest, records, failures, cfg.generation.seed)

    rc = cfg.recurrent
    timings = LoopTimings()  # this invocation's (a resumed run counts only its own part)
    todo = [t for t in tasks if not _finished(history.get(t.key, []), rc.max_attempts)]
    if todo:
        # one bar per phase: loading, generate & inspect, report (the libraries' own bars are off, cli/console.py)
        loading = tqdm(total=2, desc="loading models", unit="model", disable=not progress)
        if generator is None:
            loading.set_postfix_str("generator")
            generator = AdGenerator.from_config(cfg.generation.model, cfg.generation.sampling,
                                                speed=cfg.generation.speed)
        loading.update(1)
        if judge is None:
            loading.set_postfix_str("RFNet")
            judge = Judge.from_config(replace(cfg.judge, rfnet=rfnet_name), device=str(generator.device))
        loading.set_postfix_str("")
        loading.update(1)
        loading.close()
        worker = _Worker(cfg, generator, judge, out_dir, manifest, rfnet_name)
        worker.rank = rank
        worker.remember_slots(records)
        done = len(tasks) - len(todo)
        n_ok = sum(any(o.accepted for o in history.get(t.key, [])) for t in tasks)
        bar = tqdm(total=len(tasks), initial=done, desc=f"generate & inspect{'' if world == 1 else f' [rank {rank}]'}",
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
            accept=lambda v: cfg.judge.accepts(int(v.label_index), float(v.p_available)), max_attempts=rc.max_attempts,
            batch_size=generator.sampling.batch_size, history=history, on_result=on_result,
            vetoed=lambda result: bool(result.nsfw),  # the safety checker flagged it: never accepted
            overlap=cfg.generation.speed.overlap_inspection, timings=timings,
        )
        bar.close()
    if state:
        state.wait_for_everyone()
    if rank != 0:
        return {}
    summary = finalize(out_dir, rc.max_attempts, progress=progress)
    # the records' sums above cover every invocation; "loop": where this one's wall time went (main process)
    summary["seconds"]["loop"] = timings.to_dict()
    if duplicates:
        summary["duplicate_products"] = duplicates
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _finished(history: list[Outcome], k: int) -> bool:
    return any(o.accepted for o in history) or len(history) >= k


def finalize(out_dir: Path, max_attempts: int, *, progress: bool = False) -> dict:
    """Merge manifest shards, copy accepted and flagged images, write summary.json and report.html."""
    bar = tqdm(total=3, desc="report", unit="step", disable=not progress)  # images, summary, report.html
    records = _read_all(out_dir)
    shards = [p for p in _manifests(out_dir) if p.name != MANIFEST]
    if shards:  # merge: the main manifest is rewritten atomically, then the shards go
        seen, merged = set(), []
        for r in records:
            k = (r.product_hash, r.attempt, r.error, r.where if r.failed else None)
            if k not in seen:
                seen.add(k)
                merged.append(r)
        merged.sort(key=lambda r: (str(r.product_source), r.attempt if r.attempt is not None else -1))
        atomic_write_text(out_dir / MANIFEST, "".join(r.to_line() for r in merged))
        for p in shards:
            p.unlink()
        records = merged
    for attempts in latest_attempts(records).values():
        winner = next((a for a in attempts if a.accepted and not a.nsfw), None)
        shippable = [a for a in attempts if not a.nsfw]  # an image the safety checker flagged is never kept
        if winner is None and len(attempts) >= max_attempts and shippable:
            best = max(shippable, key=lambda a: a.verdict.p_available)
            _copy(out_dir / best.image, out_dir / "flagged" / f"{best.product_id}.png")
        elif winner is not None:
            _copy(out_dir / winner.image, out_dir / "accepted" / f"{winner.product_id}.png")
    bar.update(1)
    summary = summarize(records, max_attempts)
    atomic_write_json(out_dir / "summary.json", summary)
    bar.update(1)
    from reliable_ad.recurrent.report import write_report

    write_report(out_dir, records, summary)
    bar.update(1)
    bar.close()
    return summary


def _copy(src: Path, dst: Path) -> None:
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
