"""The prepared GPU check: one script, one CUDA GPU, no network, about 8 minutes, one JSON.

    timeout 480 python benchmarks/gpu.py --out docs/results/gpu.json   # on a lent GPU
    python benchmarks/gpu.py --smoke --out /tmp/gpu.json                # CPU, tiny models, < 60 s

Weights are random (time does not depend on them), shaped as the real models: SD1.5's UNet (859.5M),
ControlNet, VAE and CLIP ViT-L text encoder at 512 px, 40 DDIM steps, CFG 7.5, fp16
(benchmarks/generation.py's ``sd15_sized_pipeline``), and the rfnet-r50 inspector with its
DPT-Hybrid-shaped depth model and U2-Net-p salience (benchmarks/rfnet.py's ``r50_inspector``).

Sections:
  generation  a plain diffusers StableDiffusionControlNetInpaintPipeline call vs AdGenerator at its
              defaults (same components and seeds), images/s at batch 1, 8, 16 and peak GPU memory
              (benchmarks/generation.py's ``bench``, interleaved, medians)
  inspection  rfnet-r50 images/s with computed and with cached modality maps, batch 16 and 32
              (benchmarks/rfnet.py's ``InspectionCase``)
Each section has a time budget; a measurement that would not fit in what is left is skipped and
recorded as skipped, so the script always finishes and always writes its JSON. ``--smoke`` runs the
same code path on CPU with the tiny generator and tiny inspector (64 px, 2 steps, batch 1-2), so every
CI run exercises it (tests/test_gpu_check.py).
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
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _load(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_batches(out: dict, batches, budget: Budget, device: str, measure) -> None:
    """``measure(batch) -> result dict`` for each batch size while the budget lasts: a measurement whose
    cost (estimated from the previous one, in proportion to the batch) does not fit, or that runs out of
    GPU memory, is recorded in ``out["skipped"]``; results go to ``out["results"]``."""
    last = None  # (batch, seconds) of the previous measurement
    for b in batches:
        estimate = last[1] * b / last[0] if last else 0.0
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


def generation_section(args, budget: Budget) -> dict:
    gen_bench = _load("generation")
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator

    t = time.perf_counter()
    # AdGenerator at its defaults (40 DDIM steps, CFG 7.5, clip skip 2, ControlNet scale 1) at the size;
    # the smoke run lowers the steps only so that it stays fast
    sampling = SamplingConfig(size=args.size, **({"num_inference_steps": args.steps} if args.smoke else {}))
    if args.smoke:
        gen = AdGenerator.from_config(ModelConfig(model="tiny", device=args.device, dtype="fp32"), sampling)
        model = "tiny"
    else:
        gen = AdGenerator(gen_bench.sd15_sized_pipeline(torch.float16, args.device), sampling,
                          {"native_size": args.size})
        model = "sd15-sized (random weights)"
    s = gen.sampling
    out = {"model": model, "dtype": str(gen.pipe.unet.dtype), "size": gen.size, "steps": s.num_inference_steps,
           "guidance_scale": s.guidance_scale, "clip_skip": s.clip_skip, "scheduler": s.scheduler,
           "unet_params_m": round(sum(p.numel() for p in gen.pipe.unet.parameters()) / 1e6, 1),
           "controlnet_params_m": round(sum(p.numel() for p in gen.pipe.controlnet.parameters()) / 1e6, 1),
           "build_s": round(time.perf_counter() - t, 2), "results": [], "skipped": []}
    def measure(b: int) -> dict:
        return gen_bench.bench(gen, b, args.repeats)

    measure_batches(out, args.gen_batches, budget, args.device, measure)
    return out


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


def table(report: dict) -> str:
    rows = [("section", "batch", "case", "images/s", "peak GiB")]
    gen = report["sections"].get("generation", {})
    for r in gen.get("results", []):
        mem = "" if r.get("peak_mem_gib") is None else f"{r['peak_mem_gib']:.2f}"
        rows.append(("generation", str(r["batch"]), "diffusers pipeline", f"{r['images_per_s_direct']:.3f}", mem))
        rows.append(("generation", str(r["batch"]), "AdGenerator", f"{r['images_per_s_ours']:.3f}", mem))
    ins = report["sections"].get("inspection", {})
    for r in ins.get("results", []):
        mem = "" if r.get("peak_mem_gib") is None else f"{r['peak_mem_gib']:.2f}"
        rows.append(("inspection", str(r["batch"]), "computed maps", f"{r['images_per_s_computed_maps']:.3f}", mem))
        rows.append(("inspection", str(r["batch"]), "cached maps", f"{r['images_per_s_cached_maps']:.3f}", mem))
    for name, sec in report["sections"].items():
        for s in sec.get("skipped", []):
            rows.append((name, str(s["batch"]), "skipped", s["why"], ""))
        if "error" in sec:
            rows.append((name, "", "error", sec["error"][:80], ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, 64 px, 2 steps, batch 1-2")
    ap.add_argument("--out", default="docs/results/gpu.json", help="where the JSON goes")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--generation-budget", type=float, default=None, help="seconds; default 270 (smoke: 40)")
    ap.add_argument("--inspection-budget", type=float, default=None, help="seconds; default 150 (smoke: 15)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats; default 2 (smoke: 1)")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if not args.smoke and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        ap.error("the GPU check needs a CUDA GPU; use --smoke to exercise it on CPU")
    args.size, args.steps = (64, 2) if args.smoke else (512, 40)
    args.gen_batches = [1, 2] if args.smoke else [1, 8, 16]
    args.ins_batches = [1, 2] if args.smoke else [16, 32]
    args.repeats = args.repeats or (1 if args.smoke else 2)
    budgets = {"generation": args.generation_budget or (40.0 if args.smoke else 270.0),
               "inspection": args.inspection_budget or (15.0 if args.smoke else 150.0)}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(HERE))

    start = time.perf_counter()
    report = {"check": "gpu", "mode": "smoke" if args.smoke else "gpu", **environment(args.device),
              "settings": {"size": args.size, "steps": args.steps, "guidance_scale": 7.5,
                           "generation_batches": args.gen_batches, "inspection_batches": args.ins_batches,
                           "repeats": args.repeats, "budgets_s": budgets},
              "sections": {}}
    torch.manual_seed(0)
    for name, fn in (("generation", generation_section), ("inspection", inspection_section)):
        budget = Budget(budgets[name])
        try:
            sec = fn(args, budget)
        except Exception as e:  # a failed section is recorded; the other still runs
            sec = {"error": f"{type(e).__name__}: {e}", "results": [], "skipped": []}
        sec.update(budget_s=budgets[name], elapsed_s=round(budget.elapsed, 2))
        report["sections"][name] = sec
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    report["total_s"] = round(time.perf_counter() - start, 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"{report['mode']} check on {report['card'] or report['device']}: {report['total_s']} s, wrote {out}")
    return report


if __name__ == "__main__":
    main()
