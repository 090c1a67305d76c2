"""The Recurrent Generation study's statistics under the oracle's abstention, its paired bootstrap, its
claims, and the claim verdicts the results page renders (experiments/studies/recurrent_study.py,
experiments/studies/report.py): pure functions on hand-made attempt records."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.studies import recurrent_study as rs
from experiments.studies.report import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, check_claims, check_result,
                                        claim_verdict, make_claim, render_report, verdict_table)


def attempt(oracle: str, *, decisive: bool = True, accepted: bool = False, p: float = 0.1) -> dict:
    """An attempt record: the oracle's label ("A" Available, "S" Size Mismatch) and whether it was decisive."""
    return {"accepted": accepted, "rfnet": {"label": "Available" if accepted else "Size Mismatch", "p_available": p},
            "oracle": {"label": "Available" if oracle == "A" else "Size Mismatch", "decisive": decisive},
            "variation": {}, "seconds": 1.0, "inspect_seconds": 0.0}


def test_claim_verdict_follows_the_interval():
    assert claim_verdict([0.01, 0.3]) == REPRODUCED
    assert claim_verdict([-0.3, -0.01]) == NOT_REPRODUCED
    assert claim_verdict([0.0, 0.0]) == NOT_REPRODUCED  # no product differed in any resample
    assert claim_verdict([-0.1, 0.2]) == claim_verdict([0.0, 0.2]) == INCONCLUSIVE
    assert claim_verdict([-0.2, 0.0]) == NOT_REPRODUCED  # touching 0 is not a rise
    assert claim_verdict([0.3, 0.7], 0.8, above=False) == REPRODUCED  # a claim that a ratio stays below 0.8
    assert claim_verdict([0.8, 1.1], 0.8, above=False) == NOT_REPRODUCED
    assert claim_verdict([0.7, 0.9], 0.8, above=False) == INCONCLUSIVE
    assert claim_verdict(None) == INCONCLUSIVE
    for bad in ([0.3, 0.1], [float("nan"), 1.0], [0.1]):
        with pytest.raises(ValueError, match="interval"):
            claim_verdict(bad)
    claim = make_claim("x raises y", "+5 points", "+3 points", (0.012345, 0.05))
    assert claim == {"claim": "x raises y", "paper": "+5 points", "measured": "+3 points", "interval": [0.0123, 0.05],
                     "verdict": REPRODUCED}
    assert check_claims([claim]) == []
    assert "verdict 'probably'" in check_claims([{**claim, "verdict": "probably"}])[0]
    assert "needs the keys" in check_claims([{"claim": "x"}])[0]
    assert "interval" in check_claims([{**claim, "interval": [1]}])[0]


def test_k_curve_counts_an_abstention_as_undecided_not_available():
    products = [
        [attempt("S"), attempt("A")],  # Available from k=2
        [attempt("A", decisive=False), attempt("S")],  # abstained at k=1: undecided, never Available
        [attempt("S", decisive=False), attempt("A", decisive=False)],  # only abstentions: undecided
        [attempt("A"), attempt("S", decisive=False)],  # Available at k=1; a later abstention does not matter
    ]
    c = rs.k_curves(products, 2)
    assert c["oracle"] == [0.25, 0.5]
    assert c["undecided"] == [0.5, 0.5]  # the 2nd and 3rd: no decisive Available, an abstention
    assert c["abstained_at_k"] == [0.5, 0.5]
    assert rs.available_within(products, 2).tolist() == [True, False, False, True]
    cost = rs.cost(products, 2)
    assert cost["decisive_attempts"] == 4 and cost["abstention_rate"] == 0.5
    assert cost["single_attempt_oracle_rate"] == 0.5  # 2 Available of the 4 decisive attempts
    assert cost["attempts_per_accepted_image"] is None  # RFNet accepted nothing
    with pytest.raises(ValueError, match="at least one"):
        rs.k_curves([], 2)


def test_paired_bootstrap_pairs_products():
    rng = np.random.default_rng(0)
    before = rng.random(200) < 0.3
    after = before | (rng.random(200) < 0.3)  # every product keeps its success and some gain one
    d = rs.paired_bootstrap(before, after, seed=1)
    assert d["difference"] == pytest.approx(after.mean() - before.mean()) and d["n"] == 200
    lo, hi = d["ci95"]
    assert 0 < lo < d["difference"] < hi
    # paired: the same outcomes in both give exactly [0, 0]; unpaired resampling would not
    assert rs.paired_bootstrap(before, before, seed=1)["ci95"] == [0.0, 0.0]
    assert rs.paired_bootstrap(before, after, seed=1) == d  # seeded
    with pytest.raises(ValueError, match="equally long"):
        rs.paired_bootstrap([1, 0], [1], seed=0)


def test_claims_are_decided_from_the_paired_differences():
    gain = [[attempt("S"), attempt("A")] for _ in range(30)]  # every product gains at k=2
    flat = [[attempt("A"), attempt("S")] for _ in range(30)]
    records = {"reseed": gain, "defect_aware": flat}
    diffs = rs.comparisons(records, 2, seed=0)
    curves = {p: rs.k_curves(r, 2) for p, r in records.items()}
    claims = rs.claims(curves, diffs, 2)
    assert [c["verdict"] for c in claims] == [REPRODUCED, NOT_REPRODUCED]  # 0% -> 100%; 100% vs 100%: no gain
    assert diffs["reseed: k=2 vs k=1"]["difference"] == 1.0 and diffs["defect_aware: k=2 vs k=1"]["difference"] == 0
    assert "0% -> 100%" in claims[0]["measured"] and check_claims(claims) == []
    only_reseed = rs.claims({"reseed": curves["reseed"]}, rs.comparisons({"reseed": gain}, 2, seed=0), 2)
    assert len(only_reseed) == 1


def _result(claims=None) -> dict:
    out = {"tables": {"t": {"columns": ["a"], "rows": [[1]], "note": ""}}, "figures": [], "seconds": 5.0,
           "settings": {}, "summary": "s"}
    return out if claims is None else {**out, "claims": claims}


def test_verdict_table_lists_every_claim_and_failed_studies():
    good = make_claim("K attempts help", "paper: yes", "+20 points", [0.1, 0.3])
    mixed = make_claim("A beats B", "paper: by 10", "-1 point", [-0.05, 0.03])
    studies = {"one": {"status": "ok", "result": _result([good, mixed])},
               "two": {"status": "ok", "result": _result()},  # no claims key yet: no rows
               "three": {"status": "failed", "error": "RuntimeError: out | of coffee"}}
    rows = verdict_table(studies).splitlines()[2:]
    assert rows == ["| one | K attempts help | paper: yes | +20 points | [+0.100, +0.300] | **reproduced** |",
                    "| one | A beats B | paper: by 10 | -1 point | [-0.050, +0.030] | **inconclusive** |",
                    "| three | – | – | – | – | **failed**: RuntimeError: out \\| of coffee |"]
    header = {"command": "c", "date": "d", "machine": "m", "model": "x", "rfnet": "y", "device": "cpu", "seed": 0,
              "steps": 2, "total_seconds": 10.0, "this_run_seconds": 6.0, "jobs": 2}
    page = render_report(header, {**studies, "two": {**studies["two"], "wall_seconds": 6.0}}, {})
    assert page.index("## Verdicts") < page.index("## Run") < page.index("## one")
    assert "with 2 studies at a time" in page and "| two | ok | 5 s | 6 s |" in page
    assert verdict_table({"two": studies["two"]}) == "No study reported claims."
    assert check_result(_result([good])) == [] and "claim 0" in check_result(_result([{"claim": "x"}]))[0]
