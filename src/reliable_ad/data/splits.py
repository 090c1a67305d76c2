"""Train/val/test splits by product, and class counts and weights for RFNet's cross-entropy.

Splits group by product: the attempts of one product never sit on both sides of an evaluation,
which would otherwise reward a model for recognising products instead of judging images.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")
WEIGHT_SCHEMES = ("inverse", "sqrt_inverse", "none")


def product_position(product_id: str, seed: int = 0) -> float:
    """A product's fixed point in [0, 1), from a hash of its id and the seed (same on every machine)."""
    digest = hashlib.blake2b(f"{seed}\x00{product_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_by_product(
    samples: Sequence[Any], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[int]]:
    """Indices of ``samples`` for ``train``, ``val`` and ``test``; no product is in two splits.

    ``samples`` holds :class:`~reliable_ad.data.readers.Sample` objects or product id strings
    (e.g. ``RFDataset.product_ids``). A product's split depends only on its id and ``seed``, so
    adding samples never moves an existing product. The fractions hold for products in expectation,
    not exactly: with few products, or one product owning many samples, the shares drift.
    """
    fractions = tuple(fractions)
    if (
        len(fractions) != len(SPLIT_NAMES)
        or not all(isinstance(f, (int, float)) and math.isfinite(f) and f >= 0 for f in fractions)
        or abs(sum(fractions) - 1.0) > 1e-6
    ):
        raise ValueError(
            f"fractions={fractions!r} must be three non-negative numbers (train, val, test) that sum to 1, "
            "e.g. (0.8, 0.1, 0.1)"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed={seed!r} must be an int")
    train_end, val_end = fractions[0], fractions[0] + fractions[1]
    split_of: dict[str, int] = {}
    out: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}
    lists = [out[name] for name in SPLIT_NAMES]
    for i, sample in enumerate(samples):
        pid = sample if isinstance(sample, str) else getattr(sample, "product_id", None)
        if not isinstance(pid, str):
            raise TypeError(f"samples[{i}] is {type(sample).__name__}; expected a Sample or a product id string")
        k = split_of.get(pid)
        if k is None:
            u = product_position(pid, seed)
            k = split_of[pid] = 0 if u < train_end else (1 if u < val_end else 2)
        lists[k].append(i)
    return out


def _labels_array(labels: Any) -> np.ndarray:
    if isinstance(getattr(labels, "labels", None), np.ndarray):  # an RFDataset
        labels = labels.labels
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray):
        return labels.astype(np.int64, copy=False).ravel()
    return np.fromiter((getattr(x, "label", x) for x in labels), dtype=np.int64)


def class_counts(labels: Iterable[Any], num_classes: int | None = None) -> np.ndarray:
    """Samples per class, as an int64 array of length ``num_classes``.

    ``labels``: ints, Samples, an ``RFDataset`` or an array. ``num_classes`` defaults to
    ``max(5, largest label + 1)``, so an absent class still gets its (zero) count.
    """
    arr = _labels_array(labels)
    if arr.size and arr.min() < 0:
        raise ValueError(
            f"labels must be >= 0, got {int(arr.min())}; unlabelled samples (label -1) have no class, leave them out"
        )
    largest = int(arr.max()) if arr.size else -1
    if num_classes is None:
        num_classes = max(5, largest + 1)
    if largest >= num_classes:
        raise ValueError(f"label {largest} does not fit num_classes={num_classes}; raise num_classes")
    return np.bincount(arr, minlength=num_classes).astype(np.int64)


def class_weights(counts: Sequence[int] | np.ndarray, scheme: str = "inverse") -> np.ndarray:
    """Per-class loss weights from class counts (float64, for ``CrossEntropyLoss(weight=...)``).

    ``inverse``: w_c proportional to 1 / n_c (sklearn's "balanced"); ``sqrt_inverse``: 1 / sqrt(n_c),
    a milder correction; ``none``: all ones. Weights are scaled so that the mean weight per
    sample is 1, which keeps the loss (and a tuned learning rate) on the unweighted scale. An
    absent class gets weight 0: it has no samples to weight.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError(f"counts={counts.tolist()!r} must be a non-empty 1-D list of non-negative counts")
    if scheme == "none":
        return np.ones_like(counts)
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not one of {WEIGHT_SCHEMES}")
    if counts.sum() == 0:
        raise ValueError("counts are all zero; there is nothing to weight")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = 1.0 / (counts[present] if scheme == "inverse" else np.sqrt(counts[present]))
    return weights * (counts.sum() / (weights * counts).sum())
