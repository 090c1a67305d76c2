"""Intervals for an RFNet's figures on held-out images (docs/synthad.md, "Estimators and RFNet").

    reliable-ad rfnet eval --model synthad --data runs/rfnet-v3/heldout --out runs/rfnet-v3/eval-shipped
    python -m experiments.synthad.heldout_report runs/rfnet-v3/eval-shipped [--resamples 2000]

Reads the `predictions.jsonl` that `reliable-ad rfnet eval` writes and adds what its metrics.json
lacks: the Available AP with a 95% bootstrap interval over products (the images of one product are
resampled together: they share a product, a caption and a prompt style), and Available precision,
Available recall and Size Mismatch recall at RFNet's operating point (its top class) with Wilson 95%
intervals. A product is an image's file name up to its last "_" (`<product>_<k>.png`, as
`reliable-ad synthad generated` names them).

With ``--choose-on VAL_EVAL --precision P`` it also reports a second operating point, accept when
p(Available) >= T, with T chosen on *other* images (VAL_EVAL: an eval folder of a validation set, e.g.
another seed of `synthad generated`) as the lowest threshold whose Available precision there is >= P;
its precision and recall are then measured on the held-out images (`reliable-ad run --acceptance
threshold --threshold T` accepts so).

    python -m experiments.synthad.heldout_report runs/rfnet-v5/eval-heldout --choose-on runs/rfnet-v5/eval-val --precision 0.85
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments.synthad.gates import proportion
from reliable_ad.core.io import read_jsonl
from reliable_ad.evaluation.metrics import average_precision, precision_recall_curve

AVAILABLE, SIZE = "Available", "Size Mismatch"


def _predictions(eval_dir: str | Path) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """eval's rows, whether each is Available and its p(Available)."""
    rows = read_jsonl(Path(eval_dir) / "predictions.jsonl")
    if not rows:
        raise ValueError(f"{eval_dir}/predictions.jsonl has no rows; run `reliable-ad rfnet eval ... --out {eval_dir}`")
    return (rows, np.array([r["label"] == AVAILABLE for r in rows]),
            np.array([r["probs"][AVAILABLE] for r in rows], dtype=float))


def threshold_for_precision(truth: np.ndarray, score: np.ndarray, precision: float) -> float | None:
    """The lowest threshold T on ``score`` whose acceptances (score >= T) are at least ``precision``
    Available; None when no threshold reaches it."""
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision={precision}: give a target in (0, 1], e.g. 0.85")
    curve_precision, _, thresholds = precision_recall_curve(truth, score)  # one point per distinct score
    ok = thresholds[curve_precision >= precision]
    return float(ok.min()) if ok.size else None  # the lowest qualifying threshold keeps the most recall


def threshold_point(eval_dir: str | Path, choose_on: str | Path, precision: float) -> dict:
    """Available precision and recall on ``eval_dir`` at the threshold chosen on ``choose_on``."""
    _, val_truth, val_score = _predictions(choose_on)
    threshold = threshold_for_precision(val_truth, val_score, precision)
    _, truth, score = _predictions(eval_dir)
    out = {"chosen_on": str(choose_on), "target_precision": precision, "threshold": threshold}
    if threshold is not None:
        accepted = score >= threshold
        out |= {"available_precision": proportion(int((accepted & truth).sum()), int(accepted.sum())),
                "available_recall": proportion(int((accepted & truth).sum()), int(truth.sum()))}
    return out


def heldout_report(eval_dir: str | Path, *, resamples: int = 2000, seed: int = 0) -> dict:
    rows, truth, score = _predictions(eval_dir)
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
    p.add_argument("--choose-on", metavar="VAL_EVAL",
                   help="an eval folder of other images on which to choose a p(Available) threshold (with --precision)")
    p.add_argument("--precision", type=float, default=0.85,
                   help="the Available precision the --choose-on threshold must reach there (default 0.85)")
    args = p.parse_args(argv)
    if args.resamples < 1:
        p.error(f"--resamples {args.resamples}: give at least 1")
    if not 0.0 < args.precision <= 1.0:
        p.error(f"--precision {args.precision}: give a target in (0, 1], e.g. 0.85")
    for folder in filter(None, (args.eval_dir, args.choose_on)):
        if not (Path(folder) / "predictions.jsonl").is_file():
            p.error(f"{folder}: no predictions.jsonl; run `reliable-ad rfnet eval ... --out {folder}` first")
    report = heldout_report(args.eval_dir, resamples=args.resamples)
    if args.choose_on:
        report["threshold_operating_point"] = threshold_point(args.eval_dir, args.choose_on, args.precision)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
