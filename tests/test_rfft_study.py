"""The SynthAd RFFT study (experiments/studies/rfft_study.py): its rules on hand-made numbers (learning-rate
choice, matched-reward stopping, attempts until Available, the bootstrap and the claims' verdicts), and its
quick path end to end on the tiny generator and the tiny RFNet (2 denoising steps, to stay fast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.studies import rfft_study as rs
from experiments.studies.common import ExperimentContext
from experiments.studies.report import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED


def test_moving_average_and_rise_against_the_original_on_the_same_batches():
    assert rs.moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    # the end of the run (last 2 steps) against the original's same 2 steps: (0.5 + 0.6) / 2 - (0.3 + 0.2) / 2
    assert rs.reward_rise([0.2, 0.4, 0.5, 0.6], [0.2, 0.25, 0.3, 0.2], 2) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="train at least 3 steps"):
        rs.reward_rise([0.2, 0.3], [0.2, 0.3], 3)


def test_learning_rate_rule_picks_the_largest_rise_and_flags_no_rise():
    assert rs.choose_learning_rate({1e-5: 0.01, 1e-4: 0.06, 3e-4: 0.04, 1e-3: -0.03}) == (1e-4, True)
    assert rs.choose_learning_rate({3e-4: 0.05, 1e-4: 0.05}) == (1e-4, True)  # ties: the smaller rate
    assert rs.choose_learning_rate({1e-4: -0.01, 1e-3: -0.03}) == (1e-4, False)
    assert rs.choose_learning_rate({1e-4: 0.0}) == (1e-4, False)
    with pytest.raises(ValueError):
        rs.choose_learning_rate({})


def test_matched_reward_stops_at_the_target_gain_over_the_same_batches():
    original = [0.20, 0.30, 0.10, 0.20, 0.25]
    target, window = 0.1, 2
    trained = [0.20, 0.45, 0.25, 0.35, 0.40]
    stops = [rs.reached_target(trained[:n], original, target, window) for n in range(1, 6)]
    # gains of the 2-step means: n=2 (0.325-0.25)=0.075, n=3 (0.35-0.2)=0.15, n=4 0.15, n=5 0.15
    assert stops == [False, False, True, True, True]
    assert not rs.reached_target([0.9], original, target, window)  # never before a full window
    assert not rs.reached_target(trained, original, math.inf, window)  # no target: train to the cap
    assert rs.reached_target(original[:3], original, 0.0, 1)  # zero gain meets a zero target


def test_attempts_until_available_counts_the_budget_for_never_available():
    groups = [[False, True, True], [True, False, False], [False, False, False], [False, False, True]]
    a = rs.attempts_until_available(groups)
    assert a["mean_attempts"] == pytest.approx((2 + 1 + 3 + 3) / 4)
    assert a["within_budget"] == 0.75 and a["budget"] == 3 and a["groups"] == 4
    assert rs.attempts_until_available([])["mean_attempts"] is None


def test_paired_bootstrap_resamples_products_together():
    a = np.array([[3, 4], [2, 4], [4, 4]], float)  # per product: [Available, decisive]
    b = np.array([[1, 4], [0, 4], [2, 4]], float)  # the same products, always 2 Available fewer
    gain = rs.paired_bootstrap([a, b], lambda x, y: x[:, 0].sum() / x[:, 1].sum() - y[:, 0].sum() / y[:, 1].sum(), 0)
    assert gain == pytest.approx([0.5, 0.5])  # paired: the difference is the same in every resample
    div = rs.paired_bootstrap([np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])], lambda x, y: x.mean() / y.mean(),
                              0)
    assert 1.0 <= div[0] < 2.0 < div[1] <= 3.0
    assert rs.paired_bootstrap([np.array([0.0]), np.array([0.0])], lambda x, y: x.mean() / y.mean(), 0) is None
    with pytest.raises(ValueError, match="same products"):
        rs.paired_bootstrap([np.zeros(2), np.zeros(3)], lambda x, y: 0.0, 0)


def _metrics(judge_rates: dict[str, float], diversity: dict[str, float]) -> dict[str, dict]:
    from experiments.synthad.gates import proportion

    return {name: {"oracle": proportion(5, 10), "judge": {"rate": judge_rates.get(name, 0.5)},
                   "diversity": diversity[name]} for name in diversity}


def test_claims_are_computed_from_the_numbers():
    objectives = [rs.Objective("ReFL", "none", 0.0), rs.Objective("CC 1", "consistent_condition", 1.0),
                  rs.Objective("CC 10", "consistent_condition", 10.0)]
    metrics = _metrics({"CC 1": 0.4, "CC 10": 0.6}, {"original": 0.2, "ReFL": 0.05, "CC 1": 0.1, "CC 10": 0.2})
    assert rs.best_cc(metrics, objectives) == "CC 10"  # chosen by the judge RFNet, not by the oracle
    flat = np.array([0.2, 0.2, 0.2, 0.2])
    data = {"original": {"oracle": np.array([[1, 4]] * 4, float), "diversity": flat},
            "CC 10": {"oracle": np.array([[3, 4]] * 4, float), "diversity": flat * 0.99},
            "ReFL": {"oracle": np.array([[4, 4]] * 4, float), "diversity": flat * 0.25}}
    claims = rs.make_claims(metrics, data, objectives, "CC 10", seed=0)
    assert [c["verdict"] for c in claims] == [REPRODUCED, REPRODUCED, REPRODUCED]
    assert claims[0]["interval"] == pytest.approx([0.5, 0.5]) and "CC 10" in claims[0]["measured"]
    assert set(claims[0]) == {"claim", "paper", "measured", "interval", "verdict"}
    # the other way round: CC lowers the rate and loses diversity, ReFL keeps it
    data["CC 10"] = {"oracle": np.array([[0, 4]] * 4, float), "diversity": flat * 0.5}
    data["ReFL"]["diversity"] = flat
    claims = rs.make_claims(metrics, data, objectives, "CC 10", seed=0)
    assert [c["verdict"] for c in claims] == [NOT_REPRODUCED] * 3


@pytest.fixture(scope="module")
def ctx(model_home):
    return ExperimentContext(model="tiny", rfnet="tiny", quick=True, steps=2)


def test_rfft_study_quick(ctx, tmp_path):
    result = rs.run_study(ctx, tmp_path)
    assert set(result) >= {"tables", "figures", "seconds", "settings", "claims"}
    for title, t in result["tables"].items():
        assert t["rows"] and isinstance(t["note"], str), title
        for row in t["rows"]:
            assert len(row) == len(t["columns"])
            assert all(math.isfinite(v) for v in row if isinstance(v, (int, float)))
    json.dumps(result)
    settings = result["settings"]
    assert settings["chosen_lr"] in settings["sweep_lrs"] and not settings["judge_independent"]

    # the sweep: every run sees the same first micro-batches, so their first rewards equal the original's
    logs = {p.parent.name: [json.loads(x)["p_available"] for x in p.read_text().splitlines()]
            for p in (tmp_path / "sweep").glob("*/train_log.jsonl")}
    assert set(logs) == {"original"} | {f"lr{lr:g}" for lr in settings["sweep_lrs"]}
    assert all(len(v) == settings["sweep_steps"] for v in logs.values())
    assert all(v[0] == pytest.approx(logs["original"][0], abs=1e-5) for v in logs.values())
    sweep = result["tables"]["RFFT learning-rate sweep (ReFL, training reward on its own batches)"]
    assert sum(r[-1] == "chosen" for r in sweep["rows"]) == 1
    assert [r[1] for r in sweep["rows"]] == ["-"] + [f"{lr:g}" for lr in settings["sweep_lrs"]]

    objectives = result["tables"]["RFFT objectives at matched training reward"]
    assert [r[0] for r in objectives["rows"]] == [o["name"] for o in settings["objectives"]]
    assert all(1 <= r[1] <= settings["sweep_steps"] for r in objectives["rows"])
    for objective in settings["objectives"]:
        folder = tmp_path / rs.Objective(**objective).slug
        assert json.loads((folder / "config.json").read_text())["loss"]["beta"] == objective["beta"]

    t = result["tables"]["RFFT objectives: held-out evaluation"]
    col = {name: i for i, name in enumerate(t["columns"])}
    assert "available (judge RFNet, not independent)" in col
    original, *tuned = t["rows"]
    assert [r[0] for r in t["rows"]] == ["original"] + [o["name"] for o in settings["objectives"]]
    assert original[col["distance to original"]] == 0.0 and original[col["diversity / original's"]] == 1.0
    assert all(row[col["distance to original"]] > 0 for row in tuned)  # the tuned generators are the trained ones
    for row in t["rows"]:
        assert row[col["available (judge RFNet, not independent)"]] == row[col["available (training RFNet)"]]
        assert 1 <= row[col["mean attempts to Available"]] <= settings["eval_seeds"]
        assert row[col["decisive images"]] + round(row[col["oracle abstention rate"]] * settings["eval_images"]) \
            == settings["eval_images"]
    assert {c["verdict"] for c in result["claims"]} <= {REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE}
    assert len(result["claims"]) == 3
    assert all((tmp_path / f).is_file() for f in result["figures"])

    # a rerun reads every finished part back
    again = rs.run_study(ctx, tmp_path)
    assert again["tables"] == result["tables"] and again["seconds"] == pytest.approx(result["seconds"])
    # a second RFNet as the judge (here a saved copy of the tiny one): only the judge's column is redone
    from reliable_ad.rfnet.inspector import Inspector
    from reliable_ad.rfnet.modality_spec import save_rfnet

    tiny = Inspector.from_pretrained("tiny")
    save_rfnet(tiny.model, tmp_path / "judge", tiny.spec, tiny.processor)
    judged = rs.run_study(ctx, tmp_path, judge_rfnet=str(tmp_path / "judge"))
    t2 = judged["tables"]["RFFT objectives: held-out evaluation"]
    assert judged["settings"]["judge_independent"] and "available (judge RFNet)" in t2["columns"]
    assert [r[col["available (training RFNet)"]] for r in t2["rows"]] == \
        [r[col["available (training RFNet)"]] for r in t["rows"]]
    assert judged["seconds"] == pytest.approx(result["seconds"])  # nothing was trained or generated again
    # a folder made with other settings is refused
    with pytest.raises(ValueError, match="other settings"):
        rs.run_study(ExperimentContext(model="tiny", rfnet="tiny", quick=True, steps=2, seed=1), tmp_path)
