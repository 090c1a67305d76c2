"""Agreement and preference statistics against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from reliable_ad.annotation.agreement import (
    cohen_kappa,
    fleiss_kappa,
    json_safe,
    majority,
    mean_ranks,
    pairwise_wins,
    parse_ranking,
    uncertainty,
    wilson_interval,
)

# Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories; kappa = 0.210
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_the_published_example():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_edge_cases_and_variable_raters():
    assert fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # one class only: chance agreement is 1
    assert fleiss_kappa([[1, 0]]) is None  # no item with two raters
    # items with different numbers of raters: per-item agreement over its own raters
    by_hand_p_items = [1.0, (1 + 1 - 2) / 2]  # [2,0] agrees fully; [1,1] not at all
    p_e = (3 / 4) ** 2 + (1 / 4) ** 2
    expected = (sum(by_hand_p_items) / 2 - p_e) / (1 - p_e)
    assert fleiss_kappa([[2, 0], [1, 1], [1, 0]]) == pytest.approx(expected)


def test_cohen_kappa_by_hand():
    # 50 items: 20 both yes, 15 both no, 5 yes/no, 10 no/yes -> p_o 0.7, p_e 0.5, kappa 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    assert cohen_kappa([], []) is None and cohen_kappa([1, 1], [1, 1]) is None
    with pytest.raises(ValueError, match="one length"):
        cohen_kappa([1], [1, 2])


def test_majority_breaks_ties_like_rfnets_reader():
    assert majority([3, 1, 3]) == (3, pytest.approx(2 / 3))
    assert majority([4, 2]) == (2, 0.5)  # tie: lowest class index
    assert majority([]) is None


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mean_ranks_and_pairwise_wins():
    rankings = [["a", "b", "c"], ["a", "c", "b"], ["b", "a", "c"], ["a", "b"]]
    ranks = mean_ranks(rankings)
    assert ranks["a"]["mean_rank"] == pytest.approx(5 / 4) and ranks["a"]["n"] == 4
    assert ranks["c"]["mean_rank"] == pytest.approx(8 / 3)
    assert ranks["a"]["ci_low"] < 5 / 4 < ranks["a"]["ci_high"]
    assert math.isnan(mean_ranks([["x"]])["x"]["ci_low"])  # one ranking: no interval
    wins = {(r["method"], r["versus"]): r for r in pairwise_wins(rankings)}
    assert (wins[("a", "b")]["wins"], wins[("a", "b")]["n"]) == (3, 4)
    assert (wins[("b", "a")]["wins"], wins[("c", "b")]["wins"], wins[("c", "b")]["n"]) == (1, 1, 3)
    for (a, b), row in wins.items():
        assert row["wins"] + wins[(b, a)]["wins"] == row["n"]
        assert row["ci_low"] <= row["win_rate"] <= row["ci_high"]


def test_uncertainty_from_verdicts():
    assert uncertainty({"probs": [0.2] * 5}) == pytest.approx(1.0)
    assert uncertainty({"probs": [1, 0, 0, 0, 0]}) == pytest.approx(0.0)
    assert uncertainty({"p_available": 0.5}) == pytest.approx(1.0)
    assert uncertainty({"p_available": 0.9}) < uncertainty({"p_available": 0.6})
    assert uncertainty({"label": "Available"}) is None and uncertainty(None) is None
    assert uncertainty({"probs": [float("nan"), 1.0]}) is None


def test_parse_ranking_typed_and_listed():
    assert parse_ranking("1423", 4) == [0, 3, 1, 2]
    assert parse_ranking([2, 1], 2) == [1, 0]
    assert parse_ranking("1, 10, 2, 3, 4, 5, 6, 7, 8, 9", 10)[:2] == [0, 9]
    for bad, n in (("112", 3), ("12", 3), ("1a3", 3), ("1234", 3), ([True, 2], 2), (None, 2)):
        with pytest.raises(ValueError):
            parse_ranking(bad, n)


def test_json_safe_replaces_nan():
    assert json_safe({"a": [1.0, float("nan")], "b": (float("nan"),)}) == {"a": [1.0, None], "b": [None]}
