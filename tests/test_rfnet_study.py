"""Study 1 (experiments/studies/rfnet_study.py): the seed aggregation, the paired bootstrap over test
products and seeds (hand-made scores whose answer is known), the claims' verdicts, and one --quick run of
the study end to end with the tiny generator and RFNet (the abstaining oracle's labels, seeds per variant,
the result's tables and claims)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from experiments.studies import rfnet_study as rs
from experiments.studies.common import ExperimentContext
from experiments.studies.report import check_result

VERDICTS = {"reproduced", "not reproduced", "inconclusive"}


# ----------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------


def test_mean_sd_over_seeds():
    assert rs.mean_sd([0.5, 0.7, 0.9]) == pytest.approx((0.7, 0.2))
    assert rs.mean_sd([0.4, None, float("nan")]) == (0.4, None)  # undefined seeds are left out; one value: no sd
    assert rs.mean_sd([None]) == (None, None)


def test_aggregate_seeds_per_metric_and_class():
    def seed(ap, recall_a, recall_b):
        return {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": ap, "accuracy": 0.6,
                "class_recall": {"Available": recall_a, "Size Mismatch": recall_b}}

    agg = rs.aggregate_seeds([seed(0.6, 1.0, None), seed(0.8, 0.5, None), seed(None, 0.0, None)])
    assert agg["seeds"] == 3
    assert agg["ap"]["mean"] == pytest.approx(0.7) and agg["ap"]["sd"] == pytest.approx(math.sqrt(0.02))
    assert agg["precision"] == {"mean": 0.5, "sd": 0.0}
    assert agg["class_recall"]["Available"]["mean"] == pytest.approx(0.5)
    assert agg["class_recall"]["Size Mismatch"] == {"mean": None, "sd": None}  # no test image of the class


# ----------------------------------------------------------------------------------------------
# The paired bootstrap
# ----------------------------------------------------------------------------------------------


def _truth(products: int = 40, per_product: int = 2, seed: int = 0) -> dict[str, bool]:
    rng = np.random.default_rng(seed)
    return {f"images/p{i:03d}_{k}.png": bool(rng.random() < 0.4) for i in range(products) for k in range(per_product)}


def test_paired_bootstrap_known_answers():
    truth = _truth()
    rng = np.random.default_rng(1)
    perfect = {image: (t, 0.9 if t else 0.1) for image, t in truth.items()}
    noise = [{image: (t, float(rng.random())) for image, t in truth.items()} for _ in range(3)]
    boot = rs.paired_bootstrap({"good": [perfect, dict(perfect)], "noise": noise, "same": [dict(perfect)]},
                               {"good-noise": ("good", "noise"), "same-good": ("same", "good")}, seed=0, n=200)
    assert boot["images"] == 80 and boot["products"] == 40
    assert boot["models"]["good"] == {"ap": 1.0, "lo": 1.0, "hi": 1.0}
    d = boot["differences"]["good-noise"]
    assert d["lo"] > 0.2 and d["above"] == 1.0 and d["lo"] <= d["delta"] <= d["hi"]
    # identical models, paired on the same products: the difference is exactly 0 in every resample
    same = boot["differences"]["same-good"]
    assert same["delta"] == same["lo"] == same["hi"] == 0.0 and same["above"] == 0.0
    assert rs._verdict(same["lo"], same["hi"]) == "not reproduced"


def test_paired_bootstrap_pairs_products_not_images():
    """Two models that rank one half of the products perfectly and the other half at random: unpaired,
    their APs vary with the drawn products; paired, a model compared with a copy of itself differs by 0,
    and the difference of two models that differ only on some products has the sign of that gap."""
    truth = _truth(products=60)
    rng = np.random.default_rng(2)
    mixed = {i: (t, (0.9 if t else 0.1) if int(i[8:11]) % 2 else float(rng.random())) for i, t in truth.items()}
    better = {i: (t, 0.9 if t else 0.1) for i, t in truth.items()}
    boot = rs.paired_bootstrap({"mixed": [mixed], "copy": [dict(mixed)], "better": [better]},
                               {"copy-mixed": ("copy", "mixed"), "better-mixed": ("better", "mixed")}, seed=3, n=300)
    assert boot["models"]["mixed"]["hi"] - boot["models"]["mixed"]["lo"] > 0.02  # products vary the AP
    assert boot["differences"]["copy-mixed"]["lo"] == boot["differences"]["copy-mixed"]["hi"] == 0.0
    assert boot["differences"]["better-mixed"]["lo"] > 0


def test_paired_bootstrap_resamples_seeds():
    """A model whose seeds disagree (one perfect, one inverted) has a point AP that is their mean and an
    interval wide enough to hold seed draws of all-perfect and all-inverted; one image set only."""
    truth = _truth()
    perfect = {i: (t, 0.9 if t else 0.1) for i, t in truth.items()}
    inverted = {i: (t, 0.1 if t else 0.9) for i, t in truth.items()}
    boot = rs.paired_bootstrap({"split": [perfect, inverted], "good": [perfect]}, {"d": ("good", "split")},
                               seed=0, n=400)
    ap_inverted = rs.paired_bootstrap({"m": [inverted]}, {}, seed=0, n=1)["models"]["m"]["ap"]
    assert boot["models"]["split"]["ap"] == pytest.approx((1.0 + ap_inverted) / 2, abs=1e-6)
    assert boot["models"]["split"]["hi"] == pytest.approx(1.0) and boot["models"]["split"]["lo"] < ap_inverted + 0.05
    assert boot["differences"]["d"]["lo"] == pytest.approx(0.0)  # some resamples draw the perfect seed twice


def test_paired_bootstrap_only_counts_images_every_model_scored():
    truth = _truth(products=10)
    a = {i: (t, 0.9 if t else 0.1) for i, t in truth.items()}
    b = {i: v for i, v in a.items() if not i.startswith("images/p000")}
    boot = rs.paired_bootstrap({"a": [a], "b": [b]}, {"a-b": ("a", "b")}, seed=0, n=20)
    assert boot["images"] == 18 and boot["products"] == 9


def test_paired_bootstrap_without_a_positive_is_undefined():
    truth = {f"images/p{i}_0.png": False for i in range(5)}
    scores = {i: (t, 0.5) for i, t in truth.items()}
    boot = rs.paired_bootstrap({"a": [scores], "b": [dict(scores)]}, {"a-b": ("a", "b")}, seed=0, n=20)
    assert boot["models"]["a"] == {"ap": None, "lo": None, "hi": None}
    assert boot["differences"]["a-b"] == {"delta": None, "lo": None, "hi": None, "above": None}
    assert rs._verdict(None, None) == "inconclusive"


# ----------------------------------------------------------------------------------------------
# Verdicts and claims
# ----------------------------------------------------------------------------------------------


def test_interval_verdict():
    assert rs._verdict(0.01, 0.2) == "reproduced"
    assert rs._verdict(-0.2, -0.01) == "not reproduced"
    assert rs._verdict(-0.1, 0.0) == "not reproduced"  # at or below 0: no gain
    assert rs._verdict(0.0, 0.1) == "inconclusive"
    assert rs._verdict(-0.1, 0.1) == "inconclusive"
    assert rs._verdict(float("nan"), 0.1) == "inconclusive"


def test_all_verdict():
    assert rs.all_verdict(["reproduced"] * 5) == "reproduced"
    assert rs.all_verdict(["reproduced"] * 4 + ["inconclusive"]) == "inconclusive"
    assert rs.all_verdict(["reproduced", "inconclusive", "not reproduced"]) == "not reproduced"
    assert rs.all_verdict([]) == "inconclusive"


def _boot(gain, ablations):
    def d(lo, hi):
        return {"delta": (lo + hi) / 2, "lo": lo, "hi": hi, "above": None}

    return {"differences": {rs.GAIN: d(*gain), **{k: d(*ablations[k]) for k in rs.ABLATIONS}}}


def test_claims_follow_the_intervals():
    ap = {k: 0.5 for k in rs.VARIANTS}
    lower = {k: (-0.08, -0.01) for k in rs.ABLATIONS}
    gain, every = rs.claims(_boot((0.02, 0.1), lower), ap)
    assert gain["verdict"] == "reproduced" and gain["interval"] == [2.0, 10.0]
    assert every["verdict"] == "reproduced" and "87.58" in gain["paper"]
    one_unclear = {**lower, "no_depth": (-0.05, 0.01)}
    gain, every = rs.claims(_boot((-0.05, 0.03), one_unclear), ap)
    assert gain["verdict"] == "inconclusive"
    assert every["verdict"] == "inconclusive" and every["interval"] == [-5.0, 1.0]  # the least clear ablation
    assert "without I_d (depth)" in every["measured"].rsplit("least clear:", 1)[1]
    one_helps = {**one_unclear, "no_caption": (0.0, 0.04)}  # removing the caption does not lower AP
    gain, every = rs.claims(_boot((-0.1, 0.0), one_helps), ap)
    assert gain["verdict"] == every["verdict"] == "not reproduced"
    for claim in (gain, every):
        assert set(claim) == {"claim", "paper", "measured", "interval", "verdict"}


def test_split_seed_needs_both_kinds_in_test():
    records = [{"product_id": f"p{i}", "label": "Available" if i % 4 == 0 else "Size Mismatch"} for i in range(40)]
    seed = rs.choose_split_seed(records, (0.5, 0.2, 0.3), 0, minimum=2)
    counts = rs.split_counts(records, seed, (0.5, 0.2, 0.3))
    assert counts["test"]["Available"] > 0 and counts["test"]["Size Mismatch"] > 0
    assert sum(sum(c.values()) for c in counts.values()) == 40
    with pytest.raises(ValueError, match="use more products"):
        rs.choose_split_seed(records[:2], (0.5, 0.2, 0.3), 0, minimum=2)


# ----------------------------------------------------------------------------------------------
# End to end (--quick, tiny models)
# ----------------------------------------------------------------------------------------------


def test_quick_study_end_to_end(tmp_path, model_home):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = rs.run_study(ExperimentContext(model="tiny", rfnet="tiny", quick=True), tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert check_result(result) == []
    size = rs.SIZES[True]
    # the abstaining oracle: every generated image judged, only the decisive ones labelled
    judged = rs.judged_records(tmp_path / "data")
    decisive = [j for j in judged if j["decisive"]]
    assert len(judged) == size["products"] * size["per_product"] == result["settings"]["data"]["images"]
    labelled = (tmp_path / "data" / "labels.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in labelled) == sorted(j["image"] for j in decisive)
    abstention = result["tables"]["Oracle abstention"]["rows"][0]
    assert abstention[:3] == [len(judged), len(decisive), len(judged) - len(decisive)]
    data = result["tables"]["Labelled data (oracle labels)"]
    assert sum(row[1] for row in data["rows"]) == len(decisive) == result["settings"]["data"]["decisive"]
    # every variant, every seed trained and tested on the same test images
    ablation = result["tables"]["Modality ablation"]
    assert [row[0] for row in ablation["rows"]] == [v[0] for v in rs.VARIANTS.values()]
    tested = set()
    for name in rs.VARIANTS:
        runs = sorted((tmp_path / "variants" / name).glob("seed*/result.json"))
        assert len(runs) == size["seeds"]
        tested |= {json.loads(r.read_text())["test"]["n"] for r in runs}
        assert len({json.loads(r.read_text())["seed"] for r in runs}) == size["seeds"]
    assert tested == {data["rows"][2][1]}
    assert [c["verdict"] in VERDICTS for c in result["claims"]] == [True, True]
    assert result["summary"]
    # a fair start: every variant takes the packaged encoders of the modalities it keeps, nothing else
    from reliable_ad.rfnet.presets import load_rfnet

    packaged = load_rfnet("tiny")[0].state_dict()
    for name in ("rfnet", "generated_only"):
        init = load_rfnet(str(tmp_path / "variants" / name / "seed0" / "init"))[0].state_dict()
        for key, value in init.items():
            same = key in packaged and packaged[key].shape == value.shape and torch.equal(packaged[key], value)
            if rs.pretrained_tensor(key):
                assert same, (name, key)  # the kept modalities' encoders are copied
            else:  # fusion, FFM, head: the variant's own random start (only constant inits such as norms match)
                assert not same or value.unique().numel() == 1, (name, key)
        assert not torch.equal(init["head.weight"], packaged["head.weight"])
