"""The prepared GPU check: one script, one CUDA GPU, no network, 8 minutes, one JSON and its Markdown table.

    timeout 540 python benchmarks/gpu.py --out docs/results/gpu.json --budget-s 480   # on a lent GPU
    python benchmarks/gpu.py --smoke --out /tmp/gpu.json                              # CPU, tiny models

Weights are random (time does not depend on them), shaped as the real models: SD1.5's UNet (859.5M),
ControlNet, VAE and CLIP ViT-L text encoder at 512 px, 40 DDIM steps, CFG 7.5, fp16
(benchmarks/generation.py's ``sd15_sized_pipeline``), and the rfnet-r50 inspector with its
DPT-Hybrid-shaped depth model and U2-Net-p salience (benchmarks/rfnet.py's ``r50_inspector``).

Sections (docs/benchmarks.md, "The GPU check", has the targets):
  generation  a plain fp16 diffusers StableDiffusionControlNetInpaintPipeline call vs AdGenerator at its
              defaults vs AdGenerator with the speed options on (generation/speed.py; its own copy of
              the components), interleaved, medians: images/s and peak GPU memory at batch 16, 1, 8
  inspection  rfnet-r50 images/s with computed and with cached modality maps, batch 16 and 32
              (benchmarks/rfnet.py's ``InspectionCase``)
  run         a whole `reliable-ad run` (run_recurrent_job) of 32 products, K = 5, on the speed-options
              generator and that inspector: seconds per available image, generation vs inspection time;
              again with overlapped inspection if the budget allows
  rfft        one RFFT step (RFFTTrainer; ControlNet trainable, gradient checkpointing) at micro-batch
              1, 2, 4: seconds and peak memory
The sections share ``--budget-s``; a measurement that would not fit in what is left of its section's
budget is skipped and recorded as skipped, so the script always finishes and always writes its JSON.
``--smoke`` runs the same code on CPU with the tiny models (64 px, 2 steps, batch 1-2, 4 products, no
compile), so every CI run exercises it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_batches(out: dict, batches, budget: Budget, device: str, measure, extra=lambda b: 0.0) -> None:
    """``measure(batch) -> result dict`` for each batch size while the budget lasts: a measurement whose
    cost (estimated from the previous one, in proportion to the batch, plus ``extra(batch)``) does not fit,
    or that runs out of GPU memory, is recorded in ``out["skipped"]``; results go to ``out["results"]``."""
    last = None  # (batch, seconds) of the previous measurement
    for b in batches:
        estimate = (last[1] * b / last[0] if last else 0.0) + extra(b)
        if not budget.fits(estimate):
            out["skipped"].append({"batch": b, "why": f"budget: {budget.left:.0f} s left, about {estimate:.0f} s needed"})
            continue
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            result = measure(b)
        except torch.cuda.OutOfMemoryError as e:
            out["skipped"].append({"batch": b, "why": f"out of memory: {str(e)[:200]}"})
            torch.cuda.empty_cache()
            continue
        last = (b, time.perf_counter() - t)
        out["results"].append({**result, "seconds_measured": round(last[1], 2)})


class Budget:
    """Seconds left for one section; ``fits(estimate)`` says whether a measurement may start."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.seconds - self.elapsed

    def fits(self, estimate: float) -> bool:
        return self.left > max(estimate, 0.0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


PROMPT = "a product on a wooden table, snowy mountain, best quality"


def generation_section(args, budget: Budget) -> dict:
    """Vanilla fp16 pipeline vs AdGenerator at its defaults vs AdGenerator with the speed options on (its
    own copy of the same components, so the options do not touch the other two), interleaved."""
    import copy

    from reliable_ad.core.config import to_dict
    from reliable_ad.generation.config import ModelConfig, SamplingConfig, SpeedConfig
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.generation.models import load_pipeline

    t = time.perf_counter()
    # AdGenerator at its defaults (40 DDIM steps, CFG 7.5, clip skip 2, ControlNet scale 1) at the size;
    # the smoke run lowers the steps only so that it stays fast
    sampling = SamplingConfig(size=args.size, **({"num_inference_steps": args.steps} if args.smoke else {}))
    if args.smoke:
        pipe, info = load_pipeline(ModelConfig(model="tiny", device=args.device, dtype="fp32"))
        model = "tiny"
    else:
        pipe, info = _load("generation").sd15_sized_pipeline(torch.float16, args.device), {"native_size": args.size}
        model = "sd15-sized (random weights)"
    speed = SpeedConfig(channels_last=True, compile=args.compile)
    fast = AdGenerator(copy.deepcopy(pipe), sampling, info, speed)
    gen = AdGenerator(pipe, sampling, info)
    args.shared["fast"] = fast  # the run section generates with it (compiled once)
    s = gen.sampling
    out = {"model": model, "dtype": str(gen.pipe.unet.dtype), "size": gen.size, "steps": s.num_inference_steps,
           "guidance_scale": s.guidance_scale, "clip_skip": s.clip_skip, "scheduler": s.scheduler,
           "speed_options": to_dict(speed),
           "unet_params_m": round(sum(p.numel() for p in gen.pipe.unet.parameters()) / 1e6, 1),
           "controlnet_params_m": round(sum(p.numel() for p in gen.pipe.controlnet.parameters()) / 1e6, 1),
           "build_s": round(time.perf_counter() - t, 2), "results": [], "skipped": []}
    compiled = args.shared["compiled"] = {"sizes": set(), "seconds": 0.0}  # batch sizes compiled for, and how long

    def measure(b: int) -> dict:
        result = bench_generation(gen, fast, b, args.repeats)
        if args.compile:
            compiled["sizes"].add(b)
            compiled["seconds"] = max(compiled["seconds"], result["warmup_s_fast"])
        return result

    measure_batches(out, args.gen_batches, budget, args.device, measure, extra=lambda b: _compile_s(compiled, b))
    return out


def _compile_s(compiled: dict, batch: int) -> float:
    """Seconds a call at ``batch`` spends compiling: torch.compile compiles once per batch size until the
    second size, which it compiles with a dynamic batch dimension that serves every later size."""
    return compiled["seconds"] if len(compiled["sizes"]) == 1 and batch not in compiled["sizes"] else 0.0


def bench_generation(gen, fast, batch: int, repeats: int) -> dict:
    """images/s and peak memory of each contender at ``batch``, medians of interleaved repeats: "direct" (a
    plain pipeline call, no clip skip), "ours" and "ours_weighted_prompt" (AdGenerator, clip skip 2, plain
    and A1111-weighted prompts), "fast" (AdGenerator with the speed options). Warm-up (compiling) first."""
    from dataclasses import replace

    from PIL import Image

    from reliable_ad.generation.generator import GenerationJob

    prepared = _load("generation")._prepared(gen.size)
    plain = [GenerationJob(prepared, PROMPT, "lowres", 1000 + i) for i in range(batch)]
    weighted = [replace(j, prompt=PROMPT.replace("snowy mountain", "(snowy mountain:1.2)")) for j in plain]
    s = gen.sampling
    pictures = {k: [Image.fromarray(getattr(prepared, k))] * batch for k in ("image", "mask", "control")}
    calls = {
        "direct": lambda: gen.pipe(
            prompt=[j.prompt for j in plain], negative_prompt=[j.negative_prompt for j in plain],
            image=pictures["image"], mask_image=pictures["mask"], control_image=pictures["control"],
            height=gen.size, width=gen.size, num_inference_steps=s.num_inference_steps, eta=s.eta,
            guidance_scale=s.guidance_scale, controlnet_conditioning_scale=s.controlnet_conditioning_scale,
            generator=[torch.Generator().manual_seed(j.seed) for j in plain], output_type="np"),
        "ours": lambda: gen.generate(plain, batch_size=batch),
        "ours_weighted_prompt": lambda: gen.generate(weighted, batch_size=batch),
        "fast": lambda: fast.generate(plain, batch_size=batch),
    }
    device = str(gen.device)
    warm = {}
    for name in ("direct", "fast"):  # "ours" shares direct's pipeline; "fast" compiles here
        warm[name] = _timed(calls[name], device)[0]
    times = {name: [] for name in calls}
    peaks = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            seconds, peak = _timed(call, device)
            times[name].append(seconds)
            peaks[name].append(peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"batch": batch, "repeats": repeats, "warmup_s_fast": round(warm["fast"], 2),
           **{f"images_per_s_{k}": batch / v for k, v in med.items()},
           "overhead_ratio": med["ours"] / med["direct"], "speedup_fast_vs_direct": med["direct"] / med["fast"]}
    if device.startswith("cuda"):
        out.update({f"peak_mem_gib_{k}": max(v) for k, v in peaks.items()}, peak_mem_gib=max(map(max, peaks.values())))
    return out


def _timed(call, device: str) -> tuple[float, float | None]:
    """(seconds, peak GPU GiB) of one call, synchronised."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t = time.perf_counter()
    call()
    _sync(device)
    return time.perf_counter() - t, _peak_gib(device)


def inspection_section(args, budget: Budget) -> dict:
    rf_bench = _load("rfnet")
    t = time.perf_counter()
    if args.smoke:
        from reliable_ad.rfnet.inspector import Inspector

        ins = Inspector.from_pretrained("tiny", device=args.device, batch_size=args.ins_batches[0])
        model, gen_size = "tiny", args.size
    else:
        ins = rf_bench.r50_inspector(args.device, args.ins_batches[0])
        model, gen_size = "rfnet-r50 (random weights)", 512
    args.shared["inspector"] = ins  # the run section judges with it
    out = {"model": model, "image_size": ins.model.config.image_size, "generated_size": gen_size,
           "depth": ins.spec.depth, "salience": ins.spec.salience,
           "rfnet_params_m": round(sum(p.numel() for p in ins.model.parameters()) / 1e6, 1),
           "build_s": round(time.perf_counter() - t, 2), "results": [], "skipped": []}
    def measure(b: int) -> dict:
        ins.batch_size = b
        case = rf_bench.InspectionCase(ins, b, gen_size, args.device)  # one batch of b images
        seconds = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved
            for cached in (False, True):
                seconds[cached].append(case.run(cached)[0])
        return {"batch": b, "repeats": args.repeats,
                "images_per_s_computed_maps": b / statistics.median(seconds[False]),
                "images_per_s_cached_maps": b / statistics.median(seconds[True]),
                "peak_mem_gib": _peak_gib(args.device)}

    measure_batches(out, args.ins_batches, budget, args.device, measure)
    return out


class _BudgetSpent(Exception):
    """Raised by the run section's generator when the next batch would not fit in the budget."""


class _BudgetedGenerator:
    """An AdGenerator that refuses a batch that would not fit in what is left of ``budget`` (estimated from
    the average batch so far, inspection included, plus compiling for a new batch size): the run stops
    between batches."""

    def __init__(self, gen, budget: Budget, compiled: dict):
        self.gen, self.budget, self.compiled = gen, budget, compiled
        self.batches, self.start = 0, time.perf_counter()

    def __getattr__(self, name):
        return getattr(self.gen, name)

    def generate(self, jobs, batch_size=None):
        per_batch = (time.perf_counter() - self.start) / self.batches if self.batches else 0.0
        estimate = 1.5 * per_batch + _compile_s(self.compiled, len(jobs))
        if not self.budget.fits(estimate):
            raise _BudgetSpent(f"{self.budget.left:.0f} s left, about {estimate:.0f} s needed for a batch")
        self.batches += 1
        if self.compiled["seconds"]:
            self.compiled["sizes"].add(len(jobs))
        return self.gen.generate(jobs, batch_size)


def _rule_judge(inspector):
    """RFNet (random weights) inspects every image for real, time and all; acceptance is a fixed rule on the
    image's bytes (about 40 % pass), so that the run makes a realistic number of attempts (as
    benchmarks/recurrent.py does) instead of what a random RFNet happens to say."""
    from reliable_ad.rfnet.inspector import Verdict

    def judge(products, generated, captions):
        inspector.inspect(products, generated, captions)
        return [Verdict("Available", 0, {}, 1.0) if zlib.crc32(img.tobytes()) % 5 < 2 else
                Verdict("Space Mismatch", 1, {}, 0.0) for img in generated]
    return judge


def _product_files(folder: Path, n: int) -> list:
    """``n`` RGBA cut-outs (ellipses of different colours and shapes) as PNG files, as `run` takes them."""
    from PIL import Image

    from reliable_ad.generation.inputs import ProductInput

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:200]
    inputs = []
    for i in range(n):
        alpha = ((((xx - 100) / (40 + 2 * i)) ** 2 + ((yy - 110) / 80) ** 2) < 1).astype(np.uint8) * 255
        rgb = np.broadcast_to(rng.integers(0, 255, 3, dtype=np.uint8), (200, 200, 3))
        path = folder / f"product_{i:02d}.png"
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
        inputs.append(ProductInput(str(path), f"product {i}"))
    return inputs


def run_section(args, budget: Budget) -> dict:
    """A whole `reliable-ad run` (the Python API, run_recurrent_job) of ``args.run_products`` products with
    K = 5 on the speed-options generator and the inspection section's inspector: seconds per available
    image and where the time went (its summary's ``seconds.loop``); then, if the budget allows, the same
    run with overlapped inspection."""
    import tempfile

    from reliable_ad.generation.config import GenerateConfig, SamplingConfig, SpeedConfig
    from reliable_ad.recurrent.config import RecurrentConfig, RunConfig
    from reliable_ad.recurrent.run import finalize, run_recurrent_job

    if "fast" not in args.shared or "inspector" not in args.shared:
        raise RuntimeError("the run section needs the generation and inspection sections' models; see their errors")
    fast, judge = args.shared["fast"], _rule_judge(args.shared["inspector"])
    batch = args.run_batch
    fast.sampling = SamplingConfig(**{**vars(fast.sampling), "batch_size": batch})
    out = {"products": args.run_products, "max_attempts": 5, "batch": batch, "acceptance": "fixed rule, ~40 %",
           "results": [], "skipped": []}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _product_files(Path(tmp) / "products", args.run_products)
        for overlap in (False, True):
            last = out["results"][-1]["seconds"] if out["results"] else 0.0
            if not budget.fits(last):
                out["skipped"].append({"batch": batch, "overlap": overlap,
                                       "why": f"budget: {budget.left:.0f} s left, about {last:.0f} s needed"})
                continue
            cfg = RunConfig(generation=GenerateConfig(sampling=fast.sampling, speed=SpeedConfig(overlap_inspection=overlap)),
                            recurrent=RecurrentConfig(max_attempts=5))
            cfg.judge.rfnet = "tiny"  # recorded only: the judge is given
            folder, stopped = Path(tmp) / f"run-overlap-{overlap}", None
            t = time.perf_counter()
            try:
                summary = run_recurrent_job(inputs, cfg, folder,
                                            generator=_BudgetedGenerator(fast, budget, args.shared["compiled"]),
                                            judge=judge, progress=False)
            except _BudgetSpent as e:
                stopped = f"budget: {e}"
                summary = finalize(folder, 5)  # what was done
            seconds = time.perf_counter() - t
            loop = summary["seconds"].get("loop", {})
            gen_s, ins_s = summary["seconds"]["generation"], summary["seconds"]["inspection"]
            out["results"].append({
                "batch": batch, "overlap_inspection": overlap, "seconds": round(seconds, 2),
                "attempts": summary["attempts_total"], "available": summary["available"],
                "products_done": summary["products"], "stopped": stopped,
                "seconds_per_available_image": round(seconds / summary["available"], 3) if summary["available"] else None,
                "generation_s": gen_s, "inspection_s": ins_s,
                "inspection_share": round(ins_s / (gen_s + ins_s), 4) if gen_s + ins_s else None,
                "inspection_over_generation": round(ins_s / gen_s, 4) if gen_s else None, "loop_s": loop})
    return out


def rfft_section(args, budget: Budget) -> dict:
    """One RFFT optimizer step (ControlNet trainable, gradient checkpointing, fp16 autocast on CUDA) at
    micro-batch 1, 2, 4: seconds and peak memory. The step is RFFTTrainer's own (rfft/trainer.py), on
    benchmarks/rfft.py's models: SD1.5-shaped fp32 pipeline (frozen parts cast to half) and an
    RFNet-R50-sized judge; the models are built once and a trainer is made per micro-batch."""
    import gc
    import tempfile

    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.models import set_scheduler
    from reliable_ad.rfft.config import OptimConfig, RFFTConfig, RuntimeConfig, TrainableConfig, ValidationConfig
    from reliable_ad.rfft.trainer import RFFTTrainer
    from reliable_ad.training.accelerator import make_accelerator

    args.shared.clear()  # the generation and run sections' models go first
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    rf_bench = _load("rfft")
    t = time.perf_counter()
    sd15, steps = not args.smoke, args.steps
    runtime = RuntimeConfig(device=args.device, mixed_precision="fp16" if args.device.startswith("cuda") else "no",
                            tensorboard=False)
    pipe, info = rf_bench._pipeline(sd15, args.device)
    set_scheduler(pipe, "ddim")
    judge = rf_bench._judge(sd15, torch.device(args.device))
    items = rf_bench._items(args.size, max(args.rfft_batches))
    out = {"model": "sd15-sized (random weights)" if sd15 else "tiny", "size": args.size, "steps": steps,
           "target": "controlnet", "gradient_checkpointing": True, "mixed_precision": runtime.mixed_precision,
           "build_s": round(time.perf_counter() - t, 2), "results": [], "skipped": []}

    def measure(b: int) -> dict:
        cfg = RFFTConfig(model=ModelConfig(model="tiny", safety_checker=False),
                         sampling=SamplingConfig(size=args.size, num_inference_steps=steps, batch_size=b, clip_skip=1),
                         rf_interval=(max(0, steps - max(1, steps // 4)), steps),  # a graded step from the last quarter
                         trainable=TrainableConfig(target="controlnet", gradient_checkpointing=True),
                         optim=OptimConfig(batch_size=b, gradient_accumulation_steps=1, max_steps=10**6),
                         validation=ValidationConfig(every=0), runtime=runtime)
        gc.collect()
        with tempfile.TemporaryDirectory() as folder:
            trainer = RFFTTrainer(cfg, folder, pipe=pipe, info=info, judge=judge, train_items=items[:b],
                                  accelerator=make_accelerator(runtime))
            step = lambda: trainer.run_steps(1)  # noqa: E731
            warm = _timed(step, args.device)[0]  # allocates the optimizer state
            timed = [_timed(step, args.device) for _ in range(args.repeats)]  # each: (seconds, its own peak)
            n = sum(p.numel() for p in trainer.trainable.parameters())
        return {"batch": b, "repeats": args.repeats, "warmup_s": round(warm, 2),
                "step_s": round(statistics.median(t for t, _ in timed), 4), "trainable_params_m": round(n / 1e6, 1),
                "peak_mem_gib": None if timed[-1][1] is None else max(p for _, p in timed)}

    measure_batches(out, args.rfft_batches, budget, args.device, measure)
    return out


def environment(device: str) -> dict:
    import diffusers
    import transformers

    env = {"device": device, "torch": torch.__version__, "diffusers": diffusers.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "card": None}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(card=props.name, card_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return env


def _f(x, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _rows(report: dict) -> list[tuple[str, ...]]:
    rows = []
    for r in report["sections"].get("generation", {}).get("results", []):
        for key, case in (("direct", "diffusers pipeline (vanilla)"), ("ours", "AdGenerator"),
                          ("ours_weighted_prompt", "AdGenerator, weighted prompt"), ("fast", "AdGenerator + speed options")):
            note = f"{r['speedup_fast_vs_direct']:.2f}x vanilla" if key == "fast" else ""
            rows.append(("generation", str(r["batch"]), case, f"{_f(r[f'images_per_s_{key}'])} images/s",
                         _f(r.get(f"peak_mem_gib_{key}"), 2), note))
    for r in report["sections"].get("inspection", {}).get("results", []):
        for key, case in (("computed", "computed maps"), ("cached", "cached maps")):
            rows.append(("inspection", str(r["batch"]), case, f"{_f(r[f'images_per_s_{key}_maps'])} images/s",
                         _f(r.get("peak_mem_gib"), 2), ""))
    for r in report["sections"].get("run", {}).get("results", []):
        case = "run, overlapped inspection" if r["overlap_inspection"] else "run"
        note = (f"{r['available']}/{r['products_done']} available in {r['attempts']} attempts; inspection "
                f"{_f(r['inspection_share'], 3)} of the time" + (f"; stopped ({r['stopped']})" if r["stopped"] else ""))
        rows.append(("run", str(r["batch"]), case, f"{_f(r['seconds_per_available_image'])} s per available image",
                     "", note))
    for r in report["sections"].get("rfft", {}).get("results", []):
        rows.append(("rfft", str(r["batch"]), "ControlNet step, checkpointing", f"{_f(r['step_s'])} s per step",
                     _f(r.get("peak_mem_gib"), 2), f"{r['trainable_params_m']}M trainable"))
    for name, sec in report["sections"].items():
        for sk in sec.get("skipped", []):
            rows.append((name, str(sk["batch"]), "skipped", sk["why"], "", ""))
        if "error" in sec:
            rows.append((name, "", "error", sec["error"][:120].replace("|", "/"), "", ""))
    return rows


def table(report: dict) -> str:
    """The report as a Markdown table for docs/benchmarks.md, with the device and versions above it."""
    head = (f"{report['mode']} check on {report['card'] or report['device']} (torch {report['torch']}, diffusers "
            f"{report['diffusers']}), {report['settings']['size']} px, {report['settings']['steps']} steps, "
            f"{report['total_s']} s of a {report['settings']['budget_s']} s budget\n\n")
    rows = [("section", "batch", "case", "result", "peak GiB", "note"), ("---",) * 6] + _rows(report)
    return head + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"


SECTIONS = {  # name -> (function, share of --budget-s, its batch sizes); the rest (8 %) is start-up and writing
    "generation": (generation_section, 0.48, lambda a: a.gen_batches),
    "inspection": (inspection_section, 0.08, lambda a: a.ins_batches),
    "run": (run_section, 0.19, lambda a: [a.run_batch] * 2),  # sequential, then overlapped inspection
    "rfft": (rfft_section, 0.17, lambda a: a.rfft_batches),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, 64 px, 2 steps, batch 1-2")
    ap.add_argument("--out", default="docs/results/gpu.json", help="where the JSON goes; the Markdown table goes "
                    "next to it (same name, .md)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds for the whole check, shared by the sections (generation 48 %%, inspection 8 %%, "
                         "run 19 %%, rfft 17 %%); default 480 (smoke: 90)")
    for name in SECTIONS:
        ap.add_argument(f"--{name}-budget", type=float, default=None, help=f"seconds for the {name} section "
                        "(default: its share of --budget-s)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats; default 1")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="speed options without torch.compile (always off with --smoke: compiling on a CPU takes minutes)")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if not args.smoke and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        ap.error("the GPU check needs a CUDA GPU; use --smoke to exercise it on CPU")
    args.compile = args.compile and not args.smoke
    args.size, args.steps = (64, 2) if args.smoke else (512, 40)
    # the target batch first: if the budget runs short, the smaller batches are the ones skipped
    args.gen_batches = [1, 2] if args.smoke else [16, 1, 8]
    args.ins_batches = [1, 2] if args.smoke else [16, 32]
    args.rfft_batches = [1, 2] if args.smoke else [1, 2, 4]
    args.run_products, args.run_batch = (4, 2) if args.smoke else (32, 16)
    args.repeats = args.repeats or 1
    if args.smoke:  # toy models gain nothing from intra-op threads; on a busy CPU a second one spin-waits
        torch.set_num_threads(1)
    args.shared = {}  # models one section builds and a later one uses
    budget_s = args.budget_s or (90.0 if args.smoke else 480.0)
    budgets = {name: share * budget_s if getattr(args, f"{name}_budget") is None else getattr(args, f"{name}_budget")
               for name, (_, share, _) in SECTIONS.items()}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(HERE))

    start = time.perf_counter()
    report = {"check": "gpu", "mode": "smoke" if args.smoke else "gpu", **environment(args.device),
              "settings": {"size": args.size, "steps": args.steps, "guidance_scale": 7.5, "budget_s": budget_s,
                           "generation_batches": args.gen_batches, "inspection_batches": args.ins_batches,
                           "rfft_micro_batches": args.rfft_batches, "run_products": args.run_products,
                           "repeats": args.repeats, "compile": args.compile, "budgets_s": budgets},
              "sections": {}}
    print(f"{report['mode']} check on {report['card'] or report['device']}, budget {budget_s:.0f} s", flush=True)
    torch.manual_seed(0)
    for name, (fn, _, batches) in SECTIONS.items():
        # a section never gets more than what is left of the whole budget; with none left it builds nothing
        budget = Budget(max(0.0, min(budgets[name], budget_s - (time.perf_counter() - start))))
        try:
            sec = fn(args, budget) if budget.seconds > 0 else {
                "results": [], "skipped": [{"batch": b, "why": "budget: none left"} for b in batches(args)]}
        except Exception as e:  # a failed section is recorded; the others still run
            sec = {"error": f"{type(e).__name__}: {e}", "results": [], "skipped": []}
        sec.update(budget_s=round(budget.seconds, 2), elapsed_s=round(budget.elapsed, 2))
        report["sections"][name] = sec
        print(f"  {name}: {sec['elapsed_s']} s of {sec['budget_s']} s", flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - start, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = table(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"{report['mode']} check on {report['card'] or report['device']}: {report['total_s']} s, wrote {out} and "
          f"{out.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
