"""Evaluation metrics for RFNet (paper Sec. 3: per-class scores and the Available decision's P, R,
F1 and AP), calibration (ECE, temperature scaling) and Recurrent Generation (available rate within
k attempts, paper Sec. 4).

Pure numpy on arrays, lists or torch tensors; only :func:`save_report` touches files. Degenerate
cases never crash: a class never predicted has precision ``zero_division`` (0 by default), a class
absent from the labels has recall ``zero_division``, and AP without positives is nan.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from reliable_ad.core.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)

ECE_BINS = 15
PR_CURVE_POINTS = 512  # points kept in a report's PR curve; AP itself uses every threshold


def _numpy(x: Any, dtype: Any = None) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _labels_preds(labels: Any, preds: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    labels, preds = _numpy(labels).astype(np.int64).ravel(), _numpy(preds).astype(np.int64).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"labels ({labels.size}) and predictions ({preds.size}) differ in length")
    if labels.size and min(labels.min(), preds.min()) < 0:
        raise ValueError("labels and predictions must be class indices >= 0")
    largest = int(max(labels.max(), preds.max())) if labels.size else -1
    num_classes = largest + 1 if num_classes is None else num_classes
    if largest >= num_classes:
        raise ValueError(f"class index {largest} does not fit num_classes={num_classes}")
    return labels, preds, num_classes


def confusion_matrix(labels: Any, preds: Any, num_classes: int | None = None) -> np.ndarray:
    """(C, C) int64 counts; rows are true classes, columns predicted classes."""
    labels, preds, c = _labels_preds(labels, preds, num_classes)
    return np.bincount(labels * c + preds, minlength=c * c).reshape(c, c).astype(np.int64)


class PerClass(NamedTuple):
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true samples per class


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(labels: Any, preds: Any, num_classes: int | None = None, *, zero_division: float = 0.0) -> PerClass:
    """Per-class precision, recall, F1 and support. A 0/0 ratio is ``zero_division`` (0 or nan);
    F1 is 0 where precision + recall is 0."""
    cm = confusion_matrix(labels, preds, num_classes).astype(np.float64)
    tp = np.diag(cm)
    precision = _ratio(tp, cm.sum(axis=0), zero_division)
    recall = _ratio(tp, cm.sum(axis=1), zero_division)
    f1 = _ratio(2 * precision * recall, precision + recall, 0.0)
    if math.isnan(zero_division):
        f1[np.isnan(precision) | np.isnan(recall)] = np.nan
    return PerClass(precision, recall, f1, cm.sum(axis=1).astype(np.int64))


def macro_f1(labels: Any, preds: Any, num_classes: int | None = None) -> float:
    """Mean F1 over classes that occur in ``labels`` or ``preds`` (sklearn's default label set),
    so a class absent from both does not pull the mean down. nan for empty input."""
    labels, preds, c = _labels_preds(labels, preds, num_classes)
    seen = np.union1d(labels, preds)
    return float(per_class_scores(labels, preds, c).f1[seen].mean()) if seen.size else float("nan")


def accuracy(labels: Any, preds: Any) -> float:
    labels, preds, _ = _labels_preds(labels, preds, None)
    return float((labels == preds).mean()) if labels.size else float("nan")


def binary_prf(is_true: Any, is_pred: Any, *, zero_division: float = 0.0) -> dict[str, float]:
    """Precision, recall and F1 of a yes/no decision (e.g. "is Available")."""
    is_true, is_pred = _numpy(is_true, bool).ravel(), _numpy(is_pred, bool).ravel()
    tp = float((is_true & is_pred).sum())
    precision = tp / is_pred.sum() if is_pred.sum() else float(zero_division)
    recall = tp / is_true.sum() if is_true.sum() else float(zero_division)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def available_prf(labels: Any, preds: Any, *, available_index: int = 0) -> dict[str, float]:
    """The Available decision of the paper: positive = class Available; predicted positive =
    argmax is Available."""
    labels, preds, _ = _labels_preds(labels, preds, None)
    return binary_prf(labels == available_index, preds == available_index)


def precision_recall_curve(is_positive: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each distinct score threshold, highest threshold first (tied scores
    form one step, as in sklearn). Returns (precision, recall, thresholds)."""
    is_positive, scores = _numpy(is_positive, bool).ravel(), _numpy(scores, np.float64).ravel()
    if is_positive.shape != scores.shape:
        raise ValueError(f"is_positive ({is_positive.size}) and scores ({scores.size}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1] if scores.size else np.array([], int)
    tps = np.cumsum(is_positive)[last_of_tie].astype(np.float64)
    fps = last_of_tie + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps.size and tps[-1] > 0 else np.full(tps.shape, np.nan)
    return precision, recall, scores[last_of_tie]


def average_precision(is_positive: Any, scores: Any) -> float:
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n over thresholds (sklearn's average_precision_score,
    no interpolation). nan when there is no positive."""
    precision, recall, _ = precision_recall_curve(is_positive, scores)
    if not recall.size or np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _check_probs(probs: Any) -> np.ndarray:
    probs = _numpy(probs, np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C) class probabilities, got shape {probs.shape}")
    if probs.size and (probs.min() < 0 or probs.max() > 1 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)):
        raise ValueError("probs rows must be probabilities summing to 1; these look like logits: apply softmax first")
    return probs


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    z = _numpy(logits, np.float64) / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> float:
    """ECE = sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|, confidence = max probability,
    ``n_bins`` equal-width bins (lo, hi] over [0, 1]. nan for empty input."""
    probs = _check_probs(probs)
    labels = _numpy(labels).astype(np.int64).ravel()
    if labels.size != probs.shape[0]:
        raise ValueError(f"labels ({labels.size}) and probs ({probs.shape[0]}) differ in length")
    if not labels.size:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.digitize(confidence, np.linspace(0.0, 1.0, n_bins + 1)[1:-1], right=True)
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, confidence, n_bins))
    return float(gap.sum() / labels.size)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z_max = z.max(axis=1)
    log_norm = z_max + np.log(np.exp(z - z_max[:, None]).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: Any, labels: Any, *, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on held-out (validation) logits.

    NLL is convex in 1/T, hence unimodal in log T: a golden-section search over log T is exact
    to float precision. Perfectly separable logits drive T to the lower bound.
    """
    logits = _numpy(logits, np.float64)
    labels = _numpy(labels).astype(np.int64).ravel()
    if logits.ndim != 2 or logits.shape[0] != labels.size or not labels.size:
        raise ValueError(f"need (N, C) logits and N labels, N > 0; got {logits.shape} and {labels.size}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}")
    if not 0 < bounds[0] < bounds[1]:
        raise ValueError(f"bounds={bounds!r} must satisfy 0 < low < high")
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _nll(logits, labels, math.exp(a)), _nll(logits, labels, math.exp(b))
    for _ in range(80):  # shrinks the bracket by 0.618**80 ~ 1e-17
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def rate_within_k(attempt_of_first_available: Any, k_max: int) -> np.ndarray:
    """Available rate within k = 1..k_max attempts (Recurrent Generation), shape (k_max,).

    One entry per product: the 1-based attempt that first gave an Available image, or None, nan,
    inf or a negative number when none did. 0 is rejected (attempts count from 1).
    """
    if not isinstance(k_max, int) or isinstance(k_max, bool) or k_max < 1:
        raise ValueError(f"k_max={k_max!r} must be an int >= 1")
    attempts = np.array([np.nan if a is None else a for a in _numpy(attempt_of_first_available, object).ravel()],
                        dtype=np.float64)
    if (attempts == 0).any():
        raise ValueError("attempt numbers are 1-based (1 = the first try); got 0. Add 1 to 0-based attempt indices")
    if not attempts.size:
        return np.full(k_max, np.nan)
    found = np.where(np.isfinite(attempts) & (attempts > 0), attempts, np.inf)
    return np.array([(found <= k).mean() for k in range(1, k_max + 1)])


def _thin(values: np.ndarray, n: int) -> list[float]:
    if values.size <= n:
        return values.tolist()
    return values[np.unique(np.linspace(0, values.size - 1, n).round().astype(int))].tolist()


def evaluate(
    probs: Any, labels: Any, *, class_names: Sequence[str] | None = None, available_index: int = 0
) -> dict[str, Any]:
    """Every classification metric of one evaluation, as a JSON-ready dict (see :func:`save_report`).

    ``probs``: (N, C) class probabilities (softmax already applied); prediction = argmax.
    """
    probs = _check_probs(probs)
    labels = _numpy(labels).astype(np.int64).ravel()
    c = probs.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class_names for {c} probability columns")
    preds = probs.argmax(axis=1)
    scores = per_class_scores(labels, preds, c)
    is_available = labels == available_index
    precision, recall, _ = precision_recall_curve(is_available, probs[:, available_index])
    return {
        "n": int(labels.size),
        "class_names": names,
        "accuracy": accuracy(labels, preds),
        "macro_f1": macro_f1(labels, preds, c),
        "per_class": {
            name: {"precision": float(scores.precision[i]), "recall": float(scores.recall[i]),
                   "f1": float(scores.f1[i]), "support": int(scores.support[i])}
            for i, name in enumerate(names)
        },
        "confusion_matrix": confusion_matrix(labels, preds, c).tolist(),
        "available": {**available_prf(labels, preds, available_index=available_index),
                      "average_precision": average_precision(is_available, probs[:, available_index])},
        "available_pr_curve": {"precision": _thin(precision, PR_CURVE_POINTS), "recall": _thin(recall, PR_CURVE_POINTS)},
        "ece": expected_calibration_error(probs, labels),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None  # strict JSON has no nan
    if isinstance(value, np.integer):
        return int(value)
    return value


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def save_report(metrics: dict[str, Any], folder: str | os.PathLike) -> list[Path]:
    """Write ``metrics.json`` (nan as null) and, when matplotlib is importable, ``confusion_matrix.png``
    and ``available_pr_curve.png``; every file atomically. Returns the paths written."""
    folder = Path(folder)
    written = [atomic_write_json(folder / "metrics.json", _json_safe(metrics))]
    try:
        from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch
    except ImportError:
        message = "matplotlib is not installed; skipping the report's PNG plots (pip install matplotlib)"
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
        return written
    if "confusion_matrix" in metrics:
        cm = np.asarray(metrics["confusion_matrix"])
        names = metrics.get("class_names") or [str(i) for i in range(len(cm))]
        fig = Figure(figsize=(1.2 * len(cm) + 2, 1.2 * len(cm) + 1.5))
        ax = fig.add_subplot()
        ax.imshow(cm, cmap="Blues")
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > cm.max() / 2 else "black")
        ax.set_xticks(range(len(cm)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(cm)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        written.append(atomic_write_bytes(folder / "confusion_matrix.png", _png(fig)))
    curve = metrics.get("available_pr_curve")
    if curve and curve.get("recall"):
        fig = Figure(figsize=(5, 4))
        ax = fig.add_subplot()
        ax.step(curve["recall"], curve["precision"], where="post")
        ap = metrics.get("available", {}).get("average_precision")
        ax.set_title(f"Available: AP = {ap:.4f}" if isinstance(ap, float) and math.isfinite(ap) else "Available")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        written.append(atomic_write_bytes(folder / "available_pr_curve.png", _png(fig)))
    return written
