"""Intervals for an RFNet's figures on held-out images (docs/synthad.md, "Estimators and RFNet").

    reliable-ad rfnet eval --model synthad --data runs/rfnet-v3/heldout --out runs/rfnet-v3/eval-shipped
    python -m experiments.synthad.heldout_report runs/rfnet-v3/eval-shipped [--resamples 2000]

Reads the `predictions.jsonl` that `reliable-ad rfnet eval` writes and adds what its metrics.json
lacks: the Available AP with a 95% bootstrap interval over products (the images of one product are
resampled together: they share a product, a caption and a prompt style), and Available precision,
Available recall and Size Mismatch recall at RFNet's operating point (its top class) with Wilson 95%
intervals. A product is an image's file name up to its last "_" (`<product>_<k>.png`, as
`reliable-ad synthad generated` names them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.synthad.gates import proportion
from reliable_ad.core.io import read_jsonl
from reliable_ad.evaluation.metrics import average_precision

AVAILABLE, SIZE = "Available", "Size Mismatch"


def heldout_report(eval_dir: str | Path, *, resamples: int = 2000, seed: int = 0) -> dict:
    rows = read_jsonl(Path(eval_dir) / "predictions.jsonl")
    if not rows:
        raise ValueError(f"{eval_dir}/predictions.jsonl has no rows; run `reliable-ad rfnet eval ... --out {eval_dir}`")
    truth = np.array([r["label"] == AVAILABLE for r in rows])
    score = np.array([r["probs"][AVAILABLE] for r in rows])
    accepted = np.array([r["predicted"] == AVAILABLE for r in rows])
    products = np.array([Path(r["image"]).stem.rsplit("_", 1)[0] for r in rows])
    members = [np.flatnonzero(products == p) for p in np.unique(products)]
    rng = np.random.default_rng(seed)
    aps = []
    for _ in range(resamples):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if truth[idx].any():
            aps.append(average_precision(truth[idx], score[idx]))
    size = np.array([r["label"] == SIZE for r in rows])
    return {"images": len(rows), "products": len(members),
            "available_ap": float(average_precision(truth, score)) if truth.any() else None,
            "available_ap_ci95": [round(float(v), 4) for v in np.percentile(aps, [2.5, 97.5])] if aps else None,
            "available_precision": proportion(int((accepted & truth).sum()), int(accepted.sum())),
            "available_recall": proportion(int((accepted & truth).sum()), int(truth.sum())),
            "size_mismatch_recall": proportion(sum(r["predicted"] == SIZE for r, s in zip(rows, size) if s),
                                               int(size.sum()))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.synthad.heldout_report", description=__doc__.split("\n\n")[0])
    p.add_argument("eval_dir", help="an `reliable-ad rfnet eval --out` folder (its predictions.jsonl)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of products (default 2000)")
    args = p.parse_args(argv)
    if args.resamples < 1:
        p.error(f"--resamples {args.resamples}: give at least 1")
    if not (Path(args.eval_dir) / "predictions.jsonl").is_file():
        p.error(f"{args.eval_dir}: no predictions.jsonl; run `reliable-ad rfnet eval ... --out {args.eval_dir}` first")
    print(json.dumps(heldout_report(args.eval_dir, resamples=args.resamples), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
