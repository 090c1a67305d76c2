"""The judge: one RFNet with the depth and salience estimators it was trained with, and one acceptance
rule (docs/method.md §3, §4). `run` and `inspect` judge images with it; RFFT learns from its
differentiable view, which shares the same model, estimators and rule.

    judge = Judge.from_config(JudgeConfig(rfnet="synthad"))
    verdicts = judge.inspect(products, generated, captions)      # uint8 images -> Verdicts
    ok = [judge.accepts(v) for v in verdicts]
    view = judge.differentiable()                                # RFFT: log p(Available), with gradient
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reliable_ad.core.labels import AVAILABLE_INDEX, accepts, check_acceptance
from reliable_ad.rfnet.config import JudgeConfig
from reliable_ad.rfnet.inspector import Inspector, Verdict, build_estimators, load_for_inference


class Judge:
    """An :class:`Inspector` (RFNet, processor, estimators on one device) and the acceptance rule."""

    def __init__(self, inspector: Inspector, config: JudgeConfig):
        self.inspector, self.config = inspector, config

    @classmethod
    def from_config(cls, config: JudgeConfig, *, device: str | None = None) -> Judge:
        if config.rfnet is None:
            raise ValueError("judge.rfnet is not set: give a trained RFNet (--rfnet FOLDER|HUB_ID|preset)")
        model, processor, spec, fingerprint = load_for_inference(config.rfnet, depth=config.depth,
                                                                 salience=config.salience)
        inspector = Inspector(model, processor, spec, device=device, batch_size=config.batch_size,
                              fingerprint=fingerprint)
        return cls(inspector, config)

    @property
    def fingerprint(self) -> str:
        return self.inspector.fingerprint

    def inspect(self, products, generated, captions, **maps) -> list[Verdict]:
        return self.inspector.inspect(products, generated, captions, **maps)

    __call__ = inspect

    def accepts(self, verdict) -> bool:
        return self.config.accepts(int(verdict.label_index), float(verdict.p_available))

    def differentiable(self) -> RFNetJudge:
        """The view RFFT learns from: the same model, processor, estimators and acceptance rule."""
        ins = self.inspector
        return RFNetJudge(ins.model, ins.processor, ins.estimators.get("depth"), ins.estimators.get("salience"),
                          acceptance=self.config.acceptance, threshold=self.config.threshold)


class RFNetJudge:
    """log p(Available) from RFNet on (product, generated, depth, salience, caption); RFNet is frozen.

    A callable `judge(generated01, product01, captions) -> (B,)` log p(Available), where `generated01`
    (B, 3, H, W) in [0, 1] is the ad with the product pasted back and carries gradient, and
    `product01` (B, 3, h, w) in [0, 1] is the product image I_o.

    Deliberate choice: depth and salience maps are computed from the decoded image *detached*. (1) The
    salience estimators the paper's setting allows (U2-Net-p under OpenCV, OpenCV's fine-grained
    salience) are not differentiable at all. (2) A gradient through DPT would let the generator satisfy
    RFNet by fooling the auxiliary estimators (adversarial depth/salience maps) rather than by changing
    the scene, the collapse mode the paper warns about. (3) It saves the memory of two more backward
    passes. The gradient reaches the generator through I_g alone, the modality RFNet relies on most
    (the paper's ablation: without I_g the AP drops most; docs/method.md §3).
    """

    def __init__(self, model, processor, depth, salience, *, acceptance: str = "argmax", threshold: float = 0.5,
                 available_index: int = AVAILABLE_INDEX):
        check_acceptance(acceptance, threshold)
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.depth = depth
        self.salience = salience
        self.acceptance, self.threshold = acceptance, threshold
        self.available_index = available_index
        self.last_decisions: torch.Tensor | None = None  # the acceptance rule on the last call's images

    @classmethod
    def from_pretrained(cls, rfnet: str, *, depth: str | None = None, salience: str | None = None, device=None,
                        acceptance: str = "argmax", threshold: float = 0.5) -> RFNetJudge:
        """RFNet (folder, hub id or preset) with the estimators it was trained with (its modalities.json),
        loaded as `run` and `inspect` load theirs; ``depth``/``salience`` override them."""
        model, processor, spec, _ = load_for_inference(rfnet, depth=depth, salience=salience)
        estimators = build_estimators(spec, device=device)  # estimators come frozen
        return cls(model.to(device or "cpu"), processor, estimators["depth"], estimators["salience"],
                   acceptance=acceptance, threshold=threshold)

    def log_probs(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """RFNet's log-probabilities (B, num_classes); gradient reaches `generated01` only."""
        device = next(self.model.parameters()).device
        with torch.no_grad():  # detached maps: see the class docstring
            plain = generated01.detach().float().clamp(0, 1)
            depth = self.depth(plain).to(device) if self.depth is not None else None  # None: unused by the model
            salience = self.salience(plain).to(device) if self.salience is not None else None
        captions = list(captions) if self.processor.tokenizer is not None else None
        batch = self.processor(captions, product=product01.float().to(device), generated=generated01.float().to(device),
                               depth=depth, salience=salience)
        return self.model.predict_log_proba(**batch)

    def __call__(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        log_probs = self.log_probs(generated01, product01, captions)
        if log_probs.ndim != 2 or not 0 <= self.available_index < log_probs.shape[1]:
            raise ValueError(f"log_probs has shape {tuple(log_probs.shape)}; expected (B, num_classes) with "
                             f"column {self.available_index} = Available")
        self.last_decisions = self._rule(log_probs.detach().exp())
        return log_probs[:, self.available_index]

    def _rule(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.tensor([accepts(int(p.argmax()), float(p[self.available_index]), self.acceptance,
                                     self.threshold) for p in probs], device=probs.device)

    @torch.no_grad()
    def decide(self, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """(B,) bool: the images this judge accepts, by the same rule as :meth:`JudgeConfig.accepts`."""
        return self._rule(self.log_probs(generated01, product01, captions).exp())
