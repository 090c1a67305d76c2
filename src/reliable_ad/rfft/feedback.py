"""The judge RFFT learns from: RFNet's log p(Available) for a generated ad (docs/method.md §3, §5).

A judge is any callable `judge(generated01, product01, captions) -> (B,)` log p(Available). Tests
inject analytic judges; with a trained RFNet it is :class:`reliable_ad.rfnet.judge.RFNetJudge`, the
differentiable view of the same judge `run` and `inspect` use (the same model, estimators and
acceptance rule; see that class for why depth and salience maps are detached).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from reliable_ad.core.labels import accepts
from reliable_ad.rfnet.judge import RFNetJudge

__all__ = ["RFNetJudge", "judge_decide", "last_decisions"]


def judge_decide(judge, generated01: torch.Tensor, product01: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """A judge's accept decision: its own `decide` (the judge's acceptance rule) when it has one; an
    analytic judge that only gives log p(Available) accepts by the threshold rule at 0.5."""
    if hasattr(judge, "decide"):
        return judge.decide(generated01, product01, captions)
    with torch.no_grad():
        p = judge(generated01, product01, captions).exp()
    return torch.tensor([accepts(-1, float(x), "threshold", 0.5) for x in p], device=p.device)


def last_decisions(judge, p_available: torch.Tensor) -> torch.Tensor:
    """(B,) bool: what the judge's own acceptance rule said of the images of its last call (RFNetJudge
    keeps it, computed from the full class probabilities); an analytic judge accepts by the threshold
    rule at 0.5, as in :func:`judge_decide`."""
    decided = getattr(judge, "last_decisions", None)
    if decided is not None and len(decided) == len(p_available):
        return decided
    return torch.tensor([accepts(-1, float(x), "threshold", 0.5) for x in p_available.detach()])
