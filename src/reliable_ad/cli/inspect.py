"""`reliable-ad inspect RUN_DIR`: RFNet's verdict for every image of a generation run (resumable)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="add RFNet verdicts to a generation run's manifest",
        description=(
            "Judge every generated image of RUN_DIR with RFNet and add its verdict (class and probabilities) "
            "to manifest.jsonl. Verdicts are journalled in verdicts.jsonl as they are made; rerunning resumes, "
            "skipping images that already have a verdict from the same model. Cached maps in "
            "RUN_DIR/modalities (see `reliable-ad modalities`) are used when they come from the model's estimators."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `reliable-ad generate`")
    p.add_argument("--rfnet", default="tiny",
                   help="RFNet: preset (tiny = random weights, offline), trained folder or hub id")
    p.add_argument("--depth", help="depth estimator (default: the model's modalities.json)")
    p.add_argument("--salience", help="salience estimator (default: the model's modalities.json)")
    p.add_argument("--batch-size", type=int, default=16, help="images per RFNet forward")
    p.add_argument("--acceptance", choices=("argmax", "threshold"), default="argmax",
                   help="argmax: top class is Available (paper); threshold: p(Available) >= --threshold")
    p.add_argument("--threshold", type=float, default=0.5, help="p(Available) needed with --acceptance threshold")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reliable_ad.rfnet.inspect_run import MANIFEST, inspect_run
    from reliable_ad.rfnet.judge import Judge, JudgeConfig

    config = JudgeConfig(rfnet=args.rfnet, depth=args.depth, salience=args.salience, acceptance=args.acceptance,
                         threshold=args.threshold, batch_size=args.batch_size)
    if not (Path(args.run_dir) / MANIFEST).is_file():  # before loading any model
        raise FileNotFoundError(f"{args.run_dir!r} has no {MANIFEST}; pass a folder written by `reliable-ad generate`")
    judge = Judge.from_config(config, device=args.device)
    inspector = judge.inspector
    s = inspect_run(args.run_dir, inspector, progress=not args.no_progress, accept=config.accepts)
    t = s.timings
    print(f"{s.inspected} image(s) inspected, {s.skipped} already done, {len(s.failed)} failed, in {s.seconds:.1f} s "
          f"(modalities {t.get('modalities', 0):.1f} s, classifier {t.get('classifier', 0):.1f} s) "
          f"with {s.model}", file=sys.stderr)
    total = sum(s.counts.values())
    print(f"  accepted ({config.acceptance}{'' if config.acceptance == 'argmax' else f' >= {config.threshold}'}): "
          f"{s.accepted} of {total}", file=sys.stderr)
    for name in inspector.class_names:
        n = s.counts.get(name, 0)
        print(f"  {name:20s} {n:6d}  {100 * n / total if total else 0:5.1f}%", file=sys.stderr)
    for image, error in s.failed.items():
        print(f"  failed: {image}: {error}", file=sys.stderr)
    return 1 if s.failed else 0
