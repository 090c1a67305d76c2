"""The judge RFFT learns from: RFNet's log p(Available) for a generated ad (SPEC §3, §5).

A judge is any callable `judge(generated01, product01, captions) -> (B,)` log p(Available), where
`generated01` (B, 3, H, W) in [0, 1] is the ad with the product pasted back and carries gradient,
and `product01` (B, 3, h, w) in [0, 1] is the product image I_o. Tests inject analytic judges;
`RFNetJudge` wraps a trained RFNet with the depth and salience estimators it was trained with.

Deliberate choice: depth and salience maps are computed from the decoded image *detached*. (1) The
salience estimators the paper's setting allows (U2-Net-p under OpenCV, OpenCV's fine-grained
salience) are not differentiable at all. (2) A gradient through DPT would let the generator
satisfy RFNet by fooling the auxiliary estimators (adversarial depth/salience maps) rather than by
changing the scene, the collapse mode the paper warns about. (3) It saves the memory of two more
backward passes. The gradient reaches the generator through I_g alone, the modality RFNet relies
on most (SPEC §3's ablation: without I_g AP drops most).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reliable_ad.rfft.losses import available_log_prob
from reliable_ad.core.labels import AVAILABLE_INDEX


class RFNetJudge:
    """log p(Available) from RFNet on (product, generated, depth, salience, caption); RFNet is frozen."""

    def __init__(self, model, processor, depth, salience, *, threshold: float | None = None,
                 available_index: int = AVAILABLE_INDEX):
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.depth = depth
        self.salience = salience
        self.threshold = threshold  # None: accept when Available is RFNet's argmax
        self.available_index = available_index

    @classmethod
    def from_pretrained(cls, rfnet: str, *, depth: str | None = None, salience: str | None = None, device=None,
                        threshold: float | None = None) -> RFNetJudge:
        """RFNet (folder, hub id or preset) with the depth and salience estimators it was trained with
        (its folder's modalities.json), loaded exactly as `run` and `inspect` load their Inspector;
        ``depth``/``salience`` override them (a registry name)."""
        from reliable_ad.rfnet.inspector import build_estimators, load_for_inference

        model, processor, spec, _ = load_for_inference(rfnet, depth=depth, salience=salience)
        estimators = build_estimators(spec, device=device)  # estimators come frozen
        return cls(model.to(device or "cpu"), processor, estimators["depth"], estimators["salience"],
                   threshold=threshold)

    @classmethod
    def from_names(cls, rfnet: str, depth: str | None, salience: str | None, *, device=None,
                   threshold: float | None = None) -> RFNetJudge:
        return cls.from_pretrained(rfnet, depth=depth, salience=salience, device=device, threshold=threshold)

    def log_probs(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """RFNet's log-probabilities (B, num_classes); gradient reaches `generated01` only."""
        device = next(self.model.parameters()).device
        with torch.no_grad():  # detached maps: see the module docstring
            plain = generated01.detach().float().clamp(0, 1)
            depth = self.depth(plain).to(device) if self.depth is not None else None  # None: unused by the model
            salience = self.salience(plain).to(device) if self.salience is not None else None
        captions = list(captions) if self.processor.tokenizer is not None else None
        batch = self.processor(captions, product=product01.float().to(device), generated=generated01.float().to(device),
                               depth=depth, salience=salience)
        return self.model.predict_log_proba(**batch)

    def __call__(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        return available_log_prob(self.log_probs(generated01, product01, captions), self.available_index)

    @torch.no_grad()
    def decide(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """(B,) bool: the images RFNet calls Available (argmax, or p >= threshold when one is set)."""
        log_probs = self.log_probs(generated01, product01, captions)
        if self.threshold is None:
            return log_probs.argmax(dim=1) == self.available_index
        return log_probs[:, self.available_index].exp() >= self.threshold


def judge_decide(judge, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """A judge's accept decision: its own `decide` when it has one, else p(Available) >= 0.5."""
    if hasattr(judge, "decide"):
        return judge.decide(generated01, product01, captions)
    with torch.no_grad():
        return judge(generated01, product01, captions).exp() >= 0.5
