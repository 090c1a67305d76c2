"""RFDataset: the lazy dataset RFNet trains on (samples from `reliable_ad.data.readers`, tensors from
`reliable_ad.data.tensors`), and its collate function."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from reliable_ad.data.readers import Sample
from reliable_ad.data.tensors import ImageLoadError, _load_map, _load_rgb

__all__ = ["RFDataset", "collate_rf", "ImageLoadError"]


class RFDataset(torch.utils.data.Dataset):
    """Lazy RFNet dataset: holds paths, captions and labels only (a million samples fit in a few
    hundred MB); images are read in ``__getitem__``.

    An item is a dict: ``image`` (I_g) and ``product`` (I_o), (3, S, S) float in [0, 1];
    ``depth`` and ``salience``, (1, S, S) in [0, 1], or None when the sample has no cached map;
    ``product`` is None when the sample has no product image; ``caption`` str; ``label`` int;
    ``index`` int. An unreadable file raises :class:`ImageLoadError` naming the path; the trainer
    decides whether to skip the item.
    """

    def __init__(self, samples: Sequence[Sample], *, image_size: int = 384):
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size={image_size!r} must be a positive int, e.g. 384 as in the paper")
        self.image_size = image_size
        self.images = [s.image for s in samples]
        self.products = [s.product for s in samples]
        self.captions = [s.caption for s in samples]
        self.product_ids = [s.product_id for s in samples]
        self.labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
        depths = [s.depth for s in samples]
        saliences = [s.salience for s in samples]
        self.depths = depths if any(d is not None for d in depths) else None
        self.saliences = saliences if any(s is not None for s in saliences) else None

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> RFDataset:
        """A dataset of the given indices (e.g. one split of :func:`split_by_product`), still compact."""
        idx = [int(i) for i in indices]
        new = object.__new__(RFDataset)
        new.image_size = self.image_size
        for column in ("images", "products", "captions", "product_ids", "depths", "saliences"):
            values = getattr(self, column)
            setattr(new, column, None if values is None else [values[i] for i in idx])
        new.labels = self.labels[np.asarray(idx, dtype=np.int64)]
        return new

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        i %= len(self)
        size = self.image_size
        product = self.products[i]
        depth = self.depths[i] if self.depths is not None else None
        salience = self.saliences[i] if self.saliences is not None else None
        return {
            "image": _load_rgb(self.images[i], size),
            "product": _load_rgb(product, size, pad_square=True) if product is not None else None,
            "depth": _load_map(depth, size) if depth is not None else None,
            "salience": _load_map(salience, size) if salience is not None else None,
            "caption": self.captions[i],
            "label": int(self.labels[i]),
            "index": i,
        }


def collate_rf(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack RFDataset items. A tensor key that is None in every item is left out; one that is None
    in some items is zero-filled there and gets a bool ``<key>_mask`` (B,) saying which are real."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out: dict[str, Any] = {
        "label": torch.tensor([item["label"] for item in batch], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "caption": [item["caption"] for item in batch],
    }
    for key in ("image", "product", "depth", "salience"):
        values = [item.get(key) for item in batch]
        present = [v is not None for v in values]
        if not any(present):
            continue
        if all(present):
            out[key] = torch.stack(values)
        else:
            reference = next(v for v in values if v is not None)
            out[key] = torch.stack([v if v is not None else torch.zeros_like(reference) for v in values])
            out[f"{key}_mask"] = torch.tensor(present, dtype=torch.bool)
    return out
