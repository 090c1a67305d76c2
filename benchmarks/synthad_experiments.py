"""Reproduce the paper's claims at laptop scale on SynthAd, in one command, and write the report.

    python benchmarks/synthad_experiments.py                 # full: docs/results/synthad.md (target ~60 min, 2 cores)
    python benchmarks/synthad_experiments.py --quick         # smoke run (minutes): runs/synthad_experiments_quick/
    python benchmarks/synthad_experiments.py --only rfnet --model tiny --rfnet tiny --quick
    python benchmarks/synthad_experiments.py --jobs 1        # one study after another, in this process

Studies, in order (experiments.studies.<name>_study: the repository's experiments/, not the package):
rfnet (RFNet vs generated-image-only baselines, modality ablation), recurrent (available rate within
k attempts), rfft (original vs ReFL vs KL vs RFFT with CC). With --jobs N (default 2) up to N studies
run at once, each in its own process with --threads torch threads; the report is written when all
have ended. Each study's result is cached as OUT/<name>.json: a rerun skips finished studies (and the
studies resume their own finished parts), so an interrupted run loses little. The report opens with a
verdict table of the studies' claims and gives each study's run time and wall clock.
Exit code: 0 all ran (or are not available in this install), 1 a study failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # SynthAd needs nothing from the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]  # default paths are the repository's, wherever it is run from
if str(ROOT) not in sys.path:  # the studies live in the repository's experiments/, outside the package
    sys.path.insert(0, str(ROOT))

from experiments.studies import STUDIES  # noqa: E402
from experiments.studies.common import ExperimentContext  # noqa: E402
from experiments.studies.report import (STATUS_FAILED, STATUS_MISSING, STATUS_OK, check_result,  # noqa: E402
                                        render_report)
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text  # noqa: E402

logger = logging.getLogger("synthad_experiments")
CONTEXT_FILE = "context.json"
STUDIES_PACKAGE = "experiments.studies"  # its STUDIES names the studies; module = f"{package}.{name}_study"
JOBS_DIR = "jobs"  # OUT/jobs/<name>.json: the entry a worker process hands back to the driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: checks the pipeline in minutes")
    p.add_argument("--out", type=Path, help="results folder (default runs/synthad_experiments, "
                                            "runs/synthad_experiments_quick with --quick)")
    p.add_argument("--report", type=Path, help="markdown report (default docs/results/synthad.md; with --quick "
                                               "OUT/synthad.md, so a quick run never overwrites the real report)")
    p.add_argument("--model", default="synthad",
                   help="generator preset, or a folder with base/ and controlnet/ (default synthad)")
    p.add_argument("--rfnet", default="synthad", help="RFNet preset or saved folder (default synthad)")
    p.add_argument("--judge-rfnet", help="a second RFNet (another training seed) the RFFT study is also judged by, "
                   "so reward hacking of --rfnet shows (default: --rfnet itself, reported as not independent)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 10 quick, 25 full)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared 2-core machine a second thread spin-waits "
                        "and runs several times slower; use 2+ on an idle machine)")
    p.add_argument("--jobs", type=int, default=2,
                   help="studies run at once, each in its own process with --threads torch threads (default 2, "
                        "for 2 cores; 1 runs them one after another in this process)")
    p.add_argument("--only", help=f"comma-separated studies (default {','.join(STUDIES)})")
    p.add_argument("--studies", default=STUDIES_PACKAGE,
                   help=f"package of the study modules: its STUDIES lists the names, each <name>_study module has "
                        f"run_study(ctx, out_dir) (default {STUDIES_PACKAGE})")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the one study of a --jobs process
    args = p.parse_args(argv)
    try:
        known = STUDIES if args.studies == STUDIES_PACKAGE else tuple(importlib.import_module(args.studies).STUDIES)
    except (ImportError, AttributeError) as e:
        p.error(f"--studies {args.studies!r}: {e}; pass an importable package with a STUDIES tuple")
    args.only = [s.strip() for s in (args.only or ",".join(known)).split(",") if s.strip()]
    unknown = [s for s in args.only if s not in known]
    if unknown or not args.only:
        p.error(f"--only {','.join(args.only)!r}: choose from {','.join(known)}")
    if args.threads < 1:
        p.error(f"--threads {args.threads}: give 1 or more")
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give 1 or more (1 runs the studies one after another)")
    if args.worker and len(args.only) != 1:
        p.error("--worker runs exactly one study: pass --only NAME")
    args.out = args.out or ROOT / ("runs/synthad_experiments_quick" if args.quick else "runs/synthad_experiments")
    args.report = args.report or (args.out / "synthad.md" if args.quick else ROOT / "docs/results/synthad.md")
    return args


def _say(message: str) -> None:
    print(f"[synthad {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _check_context(out: Path, ctx: ExperimentContext) -> None:
    """A results folder belongs to one context: mixing cached results of two would mislead."""
    path = out / CONTEXT_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != ctx.to_dict():
            changed = sorted(k for k in set(old) | set(ctx.to_dict()) if old.get(k) != ctx.to_dict().get(k))
            raise ValueError(f"{out} holds results made with other settings ({', '.join(changed)} differ); "
                             "rerun with the same settings to resume, or pass another --out")
    atomic_write_json(path, ctx.to_dict())


def read_back(name: str, out: Path) -> dict | None:
    """The entry of a study finished by an earlier run (OUT/<name>.json, well-formed), else None."""
    path = out / f"{name}.json"
    if path.is_file():
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("status") == STATUS_OK and not check_result(entry.get("result")):
            _say(f"{name}: finished in an earlier run ({entry['result']['seconds']:.0f} s); read back")
            return {**entry, "cached": True}
    return None


def run_one(name: str, ctx: ExperimentContext, out: Path, package: str = STUDIES_PACKAGE) -> dict:
    """One study's entry: read back when OUT/<name>.json exists, else run it (errors recorded, not raised)."""
    cached = read_back(name, out)
    if cached is not None:
        return cached
    module_name = f"{package}.{name}_study"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        _say(f"{name}: not available ({module_name} is not in this install)")
        return {"status": STATUS_MISSING, "error": f"`{module_name}` is not in this install; the study was not run."}
    _say(f"{name}: running")
    t0 = time.perf_counter()
    try:
        result = module.run_study(ctx, out / name)
        problems = check_result(result)
        if problems:
            raise ValueError(f"{name}: malformed result: {'; '.join(problems[:5])}")
    except Exception as e:  # noqa: BLE001 - one failed study must not lose the others
        atomic_write_text(out / f"{name}.error.txt", traceback.format_exc())
        _say(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(e).__name__}: {e} "
             f"(traceback in {out / f'{name}.error.txt'})")
        return {"status": STATUS_FAILED, "error": f"{type(e).__name__}: {e}"}
    entry = {"status": STATUS_OK, "result": json.loads(json.dumps(result))}  # as it will read back
    atomic_write_json(out / f"{name}.json", entry)
    _say(f"{name}: done in {result['seconds']:.0f} s")
    return entry


def worker_command(args: argparse.Namespace, name: str) -> list[str]:
    """The command line of the process that runs study ``name`` for a --jobs run: this script in
    --worker mode with the run's settings."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--only", name, "--out", str(args.out),
           "--report", str(args.report), "--model", args.model, "--rfnet", args.rfnet, "--seed", str(args.seed),
           "--device", args.device, "--threads", str(args.threads), "--studies", args.studies]
    return cmd + (["--quick"] if args.quick else []) + ([] if args.steps is None else ["--steps", str(args.steps)]) \
        + ([] if args.judge_rfnet is None else ["--judge-rfnet", args.judge_rfnet])


def _collect(name: str, out: Path, returncode: int) -> dict:
    path = out / JOBS_DIR / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"status": STATUS_FAILED, "error": f"its worker process ended with exit code {returncode} before handing "
                                              "back a result (its output is above; --jobs 1 runs it in this process)"}


def run_parallel(names: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """Run the studies ``names``, up to ``args.jobs`` at a time, each in its own process (worker_command,
    which limits torch and OpenMP to --threads); entries by name, each with its wall-clock seconds."""
    pending, running, entries = list(names), {}, {}
    (args.out / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                (args.out / JOBS_DIR / f"{name}.json").unlink(missing_ok=True)
                running[name] = (subprocess.Popen(worker_command(args, name)), time.perf_counter())
                _say(f"{name}: started in process {running[name][0].pid}")
            time.sleep(0.2)
            for name, (proc, t0) in list(running.items()):
                if proc.poll() is not None:
                    entries[name] = {**_collect(name, args.out, proc.returncode),
                                     "wall_seconds": time.perf_counter() - t0}
                    del running[name]
    finally:  # interrupted: stop the workers (their studies resume from their own files next time)
        for proc, _ in running.values():
            proc.terminate()
            proc.wait(timeout=30)
    return entries


def run_studies(args: argparse.Namespace, ctx: ExperimentContext) -> dict[str, dict]:
    """Every study's entry, in --only order: read back, or run (in parallel with --jobs > 1)."""
    entries = {name: read_back(name, args.out) for name in args.only}
    todo = [name for name, entry in entries.items() if entry is None]
    if args.jobs > 1 and len(todo) > 1:
        entries.update(run_parallel(todo, args))
        return entries
    for name in todo:  # one after another, in this process
        t0 = time.perf_counter()
        entries[name] = {**run_one(name, ctx, args.out, args.studies), "wall_seconds": time.perf_counter() - t0}
    return entries


def copy_figures(name: str, entry: dict, out: Path, report: Path) -> list[str]:
    """Copy a study's PNGs beside the report (<report stem>/<study>_<file>); links relative to the report."""
    links = []
    folder = report.parent / report.stem
    for rel in entry.get("result", {}).get("figures", []) if entry["status"] == STATUS_OK else []:
        src = out / name / rel
        if not src.is_file():
            logger.warning("%s: figure %s is missing", name, src)
            continue
        dest = folder / f"{name}_{Path(rel).name}"
        atomic_write_bytes(dest, src.read_bytes())
        links.append(f"{report.stem}/{dest.name}")
    return links


def machine() -> str:
    import torch

    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"(torch threads: {torch.get_num_threads()}), Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("accelerate", "httpx", "urllib3", "reliable_ad.rfnet.eval_loop", "reliable_ad.data.readers",
                  "reliable_ad.rfnet.trainer_data", "reliable_ad.rfnet.train"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        ctx = ExperimentContext(model=args.model, rfnet=args.rfnet, quick=args.quick, seed=args.seed,
                                device=args.device, steps=args.steps, judge_rfnet=args.judge_rfnet)
        args.out.mkdir(parents=True, exist_ok=True)
        _check_context(args.out, ctx)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.worker:  # one study of a --jobs run: hand its entry back through a file, no report
        # torch (imported by the study, if at all) takes its thread count from these
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        if "torch" in sys.modules:  # already imported: too late for the variables
            sys.modules["torch"].set_num_threads(args.threads)
        entry = run_one(args.only[0], ctx, args.out, args.studies)
        atomic_write_json(args.out / JOBS_DIR / f"{args.only[0]}.json", entry)
        return 1 if entry["status"] == STATUS_FAILED else 0
    import torch

    torch.set_num_threads(args.threads)
    command = "python benchmarks/synthad_experiments.py" + "".join(" " + shlex.quote(a) for a in
                                                                   (sys.argv[1:] if argv is None else argv))
    _say(f"studies {', '.join(args.only)} into {args.out}, {args.jobs} at a time; report {args.report}")
    t0 = time.perf_counter()
    studies = run_studies(args, ctx)
    links = {name: copy_figures(name, entry, args.out, args.report) for name, entry in studies.items()}
    header = {"command": command, "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
              "machine": machine(), "quick": ctx.quick, "model": ctx.model, "rfnet": ctx.rfnet, "device": ctx.device,
              "seed": ctx.seed, "steps": ctx.num_inference_steps,
              "jobs": max(1, min(args.jobs, sum(not e.get("cached") for e in studies.values()))),
              "total_seconds": sum(e["result"]["seconds"] for e in studies.values() if e["status"] == STATUS_OK),
              "this_run_seconds": time.perf_counter() - t0}
    atomic_write_text(args.report, render_report(header, studies, links))
    states = {k: {"status": v["status"], "error": v.get("error"), "cached": bool(v.get("cached")),
                  "wall_seconds": v.get("wall_seconds")}
              for k, v in studies.items()}
    atomic_write_json(args.out / "summary.json", {"header": header, "studies": states})
    _say(f"report written to {args.report} ({time.perf_counter() - t0:.0f} s this run)")
    return 1 if any(e["status"] == STATUS_FAILED for e in studies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
