"""Salience from a transformers semantic-segmentation model: the probability that a pixel is foreground.

An option beside U2-Net-p for users with a segmentation checkpoint they trust (SegFormer, DPT,
UperNet, ... anything `AutoModelForSemanticSegmentation` loads). Reduction of the class scores to
one foreground map, in order of precedence:
- one output channel: sigmoid of its logit;
- `background_labels` given (names or ids): 1 - the summed softmax probability of those classes;
- a class named "background" / "bg" / "__background__" in `id2label`: 1 - its probability;
- two classes: the probability of class 1.
Anything else (e.g. ADE20K's 150 classes, none of them background) must name its background labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reliable_ad.modalities.base import SalienceEstimator
from reliable_ad.modalities.hf import TransformersEstimator, reinit_unit_gain

_BACKGROUND_NAMES = {"background", "bg", "__background__", "_background_"}
TINY_SEGMENTATION_SIZE = 64  # the tiny SegFormer's input side, in pixels


class TransformersSalience(TransformersEstimator, SalienceEstimator):
    """A semantic-segmentation model reduced to a foreground-probability map (see the module doc)."""

    auto_class = "AutoModelForSemanticSegmentation"

    def __init__(self, model, image_processor, size: int = 384, background_labels: Sequence[str | int] | None = None):
        super().__init__(model, image_processor, size)
        self.background_ids = _background_ids(model.config, background_labels)

    @classmethod
    def from_pretrained(cls, name_or_path, size=384, device=None, background_labels=None, **model_kwargs):
        """Load by hub id or folder; `background_labels` as in the module doc, `model_kwargs` to transformers."""
        model, processor = cls._load(name_or_path, **model_kwargs)
        est = cls(model, processor, size=size, background_labels=background_labels)
        return est.to(device) if device is not None else est

    def _model_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=pixel_values).logits.float()
        if logits.shape[1] == 1:
            return torch.sigmoid(logits)
        probs = logits.softmax(dim=1)
        if self.background_ids is None:  # two classes without names: class 1 is the foreground
            return probs[:, 1:2]
        return 1.0 - probs[:, self.background_ids].sum(dim=1, keepdim=True)


def _background_ids(config, background_labels) -> list[int] | None:
    """Class ids counted as background; None means 'one channel' or 'two classes, class 1 = foreground'."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    num_labels = int(getattr(config, "num_labels", len(id2label)))
    if background_labels is not None:
        label2id = {v.lower(): k for k, v in id2label.items()}
        ids = []
        for label in background_labels:
            if isinstance(label, int) and 0 <= label < num_labels:
                ids.append(label)
            elif isinstance(label, str) and label.lower() in label2id:
                ids.append(label2id[label.lower()])
            else:
                raise ValueError(
                    f"background label {label!r} is not a class of this model; its classes: {_show(id2label)}"
                )
        return sorted(set(ids))
    if num_labels == 1:
        return None
    ids = [k for k, v in id2label.items() if v.lower() in _BACKGROUND_NAMES]
    if ids:
        return ids
    if num_labels == 2:
        return None
    raise ValueError(
        f"cannot tell background from foreground among {num_labels} classes ({_show(id2label)}); pass "
        "background_labels=[...] with the class names or ids that count as background"
    )


def _show(id2label: dict[int, str], limit: int = 12) -> str:
    items = [f"{k}: {v!r}" for k, v in sorted(id2label.items())[:limit]]
    return "{" + ", ".join(items) + (", ..." if len(id2label) > limit else "") + "}"


def build_tiny_salience(size: int = 384, seed: int = 0) -> TransformersSalience:
    """A random-weight two-class SegFormer (background / foreground), identical for a given seed. No download."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    try:  # transformers 5: the PIL backend needs no torchvision
        from transformers import SegformerImageProcessorPil as SegformerImageProcessor
    except ImportError:  # transformers 4
        from transformers import SegformerImageProcessor

    config = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        num_labels=2,
        id2label={0: "background", 1: "foreground"},
        label2id={"background": 0, "foreground": 1},
    )
    torch.manual_seed(seed)
    model = reinit_unit_gain(SegformerForSemanticSegmentation(config), seed)
    processor = SegformerImageProcessor(size={"height": TINY_SEGMENTATION_SIZE, "width": TINY_SEGMENTATION_SIZE})
    return TransformersSalience(model, processor, size=size)
