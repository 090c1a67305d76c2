"""One judge: a JudgeConfig (rfnet, depth, salience, acceptance, threshold) builds the reviewer that
`run` and `inspect` use, with the estimators its RFNet was trained with; RFFT's differentiable judge is
a view of the same object (same model, same estimators, same acceptance rule)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reliable_ad.core.labels import accepts
from reliable_ad.recurrent.loop import make_acceptor
from reliable_ad.rfnet.judge import Judge, JudgeConfig


def test_acceptance_rule_is_one_rule():
    class V:
        def __init__(self, i, p):
            self.label_index, self.p_available = i, p

    for acceptance, threshold in (("argmax", 0.5), ("threshold", 0.3), ("threshold", 0.9)):
        cfg = JudgeConfig(rfnet="tiny", acceptance=acceptance, threshold=threshold)
        loop = make_acceptor(acceptance, threshold)
        for i, p in ((0, 0.35), (2, 0.35), (0, 0.95), (1, 0.1)):
            assert cfg.accepts(i, p) == loop(V(i, p)) == accepts(i, p, acceptance, threshold)
    with pytest.raises(ValueError, match="acceptance='vote'"):
        JudgeConfig(acceptance="vote")
    with pytest.raises(ValueError, match="threshold=0"):
        JudgeConfig(acceptance="threshold", threshold=0)


def test_rfft_judge_is_a_view_of_the_run_judge():
    judge = Judge.from_config(JudgeConfig(rfnet="synthad", acceptance="threshold", threshold=0.3), device="cpu")
    assert judge.inspector.spec.depth == "synthad" and judge.inspector.spec.salience == "synthad"
    view = judge.differentiable()
    assert view.model is judge.inspector.model and view.depth is judge.inspector.estimators["depth"]
    assert view.salience is judge.inspector.estimators["salience"]
    rng = np.random.default_rng(0)
    products = [np.dstack([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), np.full((64, 64), 255, np.uint8)])
                for _ in range(4)]
    generated = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    captions = ["a lamp", "a vase", "a chair", "a mug"]
    verdicts = judge.inspect(products, generated, captions)
    g01 = torch.stack([torch.from_numpy(g).permute(2, 0, 1).float() / 255 for g in generated]).requires_grad_(True)
    p01 = torch.stack([torch.from_numpy(p[..., :3]).permute(2, 0, 1).float() / 255 for p in products])
    log_p = view(g01, p01, captions)
    log_p.sum().backward()
    assert g01.grad is not None and g01.grad.abs().sum() > 0  # the gradient reaches the image
    assert torch.allclose(log_p.exp().detach(), torch.tensor([v.p_available for v in verdicts]), atol=0.05)
    decided = view.decide(g01.detach(), p01, captions).tolist()
    assert decided == [judge.accepts(v) for v in verdicts]
