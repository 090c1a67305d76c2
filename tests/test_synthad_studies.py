"""The SynthAd Recurrent Generation study (RFFT: test_rfft_study.py): its statistics on hand-made records, and its
quick path end to end on the tiny generator and the tiny RFNet (2 denoising steps, to stay fast)."""

from __future__ import annotations

import json
import math

import pytest

from experiments.studies import recurrent_study, report
from experiments.studies.common import ExperimentContext


def _attempt(accepted: bool, p: float, oracle_ok: bool, variation=None) -> dict:
    return {"accepted": accepted, "rfnet": {"label": "Available" if accepted else "Space Mismatch", "p_available": p},
            "oracle": {"label": "Available" if oracle_ok else "Size Mismatch"}, "variation": variation or {},
            "seconds": 1.0, "inspect_seconds": 0.5}


def test_k_curves_and_cost_follow_the_shipping_rule():
    products = [
        # accepted at attempt 3, which the oracle rejects; the oracle liked attempt 2
        [_attempt(False, 0.1, False), _attempt(False, 0.2, True), _attempt(True, 0.9, False),
         _attempt(False, 0.3, True)],
        # never accepted: the best-scoring attempt (2nd, p=0.4) is shipped, and it is Available
        [_attempt(False, 0.3, False), _attempt(False, 0.4, True), _attempt(False, 0.2, False),
         _attempt(False, 0.1, False, {"image_scale": 0.3})],
    ]
    c = recurrent_study.k_curves(products, 4)
    assert c["rfnet"] == [0.0, 0.0, 0.5, 0.5]
    assert c["oracle"] == [0.0, 1.0, 1.0, 1.0]
    # k=1: product 0 ships attempt 1 (bad), product 1 ships attempt 1 (bad); k=2: both ship their 2nd (good);
    # k=3: product 0 ships the accepted 3rd (bad)
    assert c["shipped"] == [0.0, 1.0, 0.5, 0.5]
    cost = recurrent_study.cost(products, 4)
    assert cost["mean_attempts_per_product"] == 3.5 and cost["seconds_per_product"] == pytest.approx(1.5 * 3.5)
    # 7 attempts spent; 1 product accepted (RFNet), 1 shipped image Available (product 1's best-scoring 2nd)
    assert cost["attempts_per_accepted_image"] == 7.0 and cost["attempts_per_available_image"] == 7.0
    assert cost["seconds_per_available_image"] == pytest.approx(1.5 * 7)
    assert cost["rfnet_precision"] == 0.0 and cost["rfnet_recall"] == 0.0
    assert cost["single_attempt_oracle_rate"] == 3 / 8 and cost["changed_inputs"] == 1 / 8
    assert cost["abstention_rate"] == 0.0 and cost["decisive_attempts"] == 8


@pytest.fixture(scope="module")
def ctx(model_home):
    return ExperimentContext(model="tiny", rfnet="tiny", quick=True, steps=2)


class SizeMismatchInspector:
    """Says Size Mismatch to everything, so defect-aware retries change the image scale."""

    def inspect(self, products, generated, captions):
        from reliable_ad.rfnet.inspector import Verdict
        from reliable_ad.core.labels import CLASS_NAMES

        return [Verdict.from_probs([0.1, 0.1, 0.6, 0.1, 0.1], CLASS_NAMES) for _ in generated]


def test_policies_share_identical_attempts_and_defect_aware_rescales(ctx, monkeypatch):
    from experiments.studies.common import Stopwatch, make_products, prompt_preset

    monkeypatch.setattr(recurrent_study, "load_inspector", lambda ctx: SizeMismatchInspector())
    settings = recurrent_study.RecurrentStudySettings(products=1, max_attempts=3)
    items = make_products(1, seed=123)
    shots: dict = {}
    with recurrent_study.torch_threads():
        reseed = recurrent_study.run_policy(ctx, items, "reseed", settings, shots, Stopwatch())[0]
        aware = recurrent_study.run_policy(ctx, items, "defect_aware", settings, shots, Stopwatch())[0]
    scale = prompt_preset().image_scale
    assert [a["variation"] for a in reseed] == [{}, {}, {}] and {a["image_scale"] for a in reseed} == {scale}
    assert aware[0]["seed"] == reseed[0]["seed"] and aware[0]["prompt"] == reseed[0]["prompt"]
    assert [a["image_scale"] for a in aware] == [scale, round(scale * 0.85, 4), round(scale * 1.12, 4)]
    assert len(shots) == 5  # the first attempt is the same under both policies: made once
    assert all(a["seconds"] > 0 and a["rfnet"]["label"] == "Size Mismatch" for a in reseed + aware)
    assert not any(a["accepted"] for a in reseed + aware)


def _check_tables(result: dict) -> None:
    assert set(result) >= {"tables", "figures", "seconds", "settings"} and result["tables"]
    for title, t in result["tables"].items():
        assert t["rows"] and isinstance(t["note"], str), title
        for row in t["rows"]:
            assert len(row) == len(t["columns"])
            assert all(math.isfinite(v) for v in row if isinstance(v, (int, float)))
    assert math.isfinite(result["seconds"]) and result["seconds"] > 0
    json.dumps(result)  # JSON-able


def test_recurrent_study_quick(ctx, tmp_path):
    result = recurrent_study.run_study(ctx, tmp_path)
    _check_tables(result)
    settings = result["settings"]
    k_max, n = settings["max_attempts"], settings["products"]
    curve = result["tables"]["Recurrent Generation: available within k attempts"]
    assert [r[0] for r in curve["rows"]] == ["reseed (paper)"] * k_max + ["defect-aware"] * k_max
    for policy in range(2):
        rows = curve["rows"][policy * k_max:(policy + 1) * k_max]
        assert [r[1] for r in rows] == list(range(1, k_max + 1))
        for col in (2, 3, 5, 6, 7):
            values = [r[col] for r in rows]
            assert all(0.0 <= v <= 1.0 for v in values)
            if col < 4:  # "within k" can only grow; the shipped image may change for the worse
                assert values == sorted(values)
        for r in rows:  # the Wilson interval holds the rate
            lo, hi = map(float, r[4].split("-"))
            assert lo <= r[3] <= hi
    cost = result["tables"]["Recurrent Generation: cost and RFNet agreement with the oracle"]
    for row in cost["rows"]:
        assert 1.0 <= row[1] <= k_max and row[2] > 0
    assert [c["verdict"] for c in result["claims"]] == [report.claim_verdict(c["interval"]) for c in result["claims"]]
    assert len(result["claims"]) == 2 and report.check_claims(result["claims"]) == []
    for policy in ("reseed", "defect_aware"):
        lines = (tmp_path / f"attempts_{policy}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == n * k_max  # every product used all K attempts
        assert {r["attempt"] for r in records} == set(range(k_max))
    assert all((tmp_path / f).is_file() for f in result["figures"])
    # a rerun into the same folder reads the finished policies back
    again = recurrent_study.run_study(ctx, tmp_path)
    assert again["tables"] == result["tables"] and again["seconds"] == pytest.approx(result["seconds"])
