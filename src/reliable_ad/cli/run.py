"""`reliable-ad run`: the main job — generate, inspect with RFNet, regenerate until Available, report."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reliable_ad.cli.common import build_config
from reliable_ad.cli.generate import GENERATION_FLAGS, add_generation_args, report_problems

RUN_FLAGS = {
    **{k: f"generation.{v}" for k, v in GENERATION_FLAGS.items()},
    "rfnet": "judge.rfnet",
    "depth": "judge.depth",
    "salience": "judge.salience",
    "inspect_batch_size": "judge.batch_size",
    "max_attempts": "recurrent.max_attempts",
    "acceptance": "judge.acceptance",
    "threshold": "judge.threshold",
    "retry_policy": "recurrent.retry_policy",
    "alternate_presets": "recurrent.alternate_presets",
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: generate, inspect with RFNet, regenerate until Available, report",
        description=(
            "Recurrent Generation (the paper's Algorithm 1) for many products at once: each product is "
            "generated, judged by RFNet, and regenerated with fresh noise until RFNet says Available or K "
            "attempts are spent. Writes every attempt with its verdict (manifest.jsonl), the accepted image "
            "per product (accepted/), the best attempt of products with none available (flagged/), "
            "summary.json and a self-contained report.html. Rerunning resumes with the same seeds. Under "
            "`accelerate launch -m reliable_ad.cli.main run ...` the products are sharded across processes."
        ),
    )
    p.add_argument("products", nargs="+", help="product images, folders, or a products .csv/.jsonl (image, caption, preset)")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = p.add_argument_group("inspection and regeneration")
    r.add_argument("--rfnet", help="RFNet folder, hub id or preset; default `tiny` with --model tiny, required otherwise")
    r.add_argument("--depth", help="depth estimator (default: the one saved with the RFNet)")
    r.add_argument("--salience", help="salience estimator (default: the one saved with the RFNet)")
    r.add_argument("--inspect-batch-size", type=int, help="images per RFNet call (default 16)")
    r.add_argument("--max-attempts", "-k", type=int, help="attempts per product, K (default 5)")
    r.add_argument("--acceptance", choices=["argmax", "threshold"], help="argmax: top class is Available (paper, default); threshold: p(Available) >= --threshold")
    r.add_argument("--threshold", type=float, help="p(Available) needed with --acceptance threshold (default 0.5)")
    r.add_argument("--retry-policy", choices=["reseed", "defect_aware"], help="reseed: fresh noise (paper, default); defect_aware: the defect decides what changes")
    r.add_argument("--alternate-presets", nargs="+", help="defect_aware: presets to try when the background is indistinct")
    add_generation_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.recurrent.config import RunConfig, validate_run_config
    from reliable_ad.recurrent.run import run_recurrent_job

    cfg = build_config(RunConfig, args, RUN_FLAGS)
    validate_run_config(cfg)  # before anything is written: a bad value must not end up in config.json
    presets_file = cfg.generation.presets_file
    inputs, problems = read_product_inputs(args.products, check_preset=lambda name: get_preset(name, presets_file))
    report_problems(problems)
    missing = [i.path for i in inputs if i.caption is None]
    if missing:
        print(f"note: {len(missing)} product(s) have no caption; RFNet's caption branch gets an empty string", file=sys.stderr)
    summary = run_recurrent_job(inputs, cfg, args.out, progress=not args.no_progress, problems=problems)
    if not summary:  # a non-main process under accelerate
        return 0
    print_outcome(summary, args.out, reported={prob.source for prob in problems})
    return 1 if summary["failed_products"] or problems else 0


def print_outcome(summary: dict, out: str, *, reported: set = frozenset()) -> None:
    """The run's last lines: failures, then the counts, then where the images and the report are."""
    for where in summary["failed_products"]:
        if where not in reported:  # the input problems were printed before the run
            print(f"failed: {where}", file=sys.stderr)
    if summary.get("nsfw"):
        print(f"{summary['nsfw']} attempt(s) flagged by the safety checker: never accepted, regenerated", file=sys.stderr)
    k, out_dir = summary["max_attempts"], Path(out)
    print(
        f"{summary['available']}/{summary['products']} products available within {k} attempts "
        f"(first attempt: {100 * summary['available_rate_within_k']['1']:.0f}%), {summary['none_available']} none "
        f"available, {len(summary['failed_products'])} failed; {summary['attempts_total']} attempts",
        file=sys.stderr,
    )
    folders = [f"{out_dir / name}{os.sep}" for name in ("accepted", "flagged") if (out_dir / name).is_dir()]
    if folders:
        print(f"images: {' and '.join(folders)}", file=sys.stderr)
    print(f"report: {out_dir / 'report.html'}", file=sys.stderr)
