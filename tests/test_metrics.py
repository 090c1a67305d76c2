"""Evaluation metrics against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reliable_ad.evaluation import (
    accuracy,
    available_prf,
    average_precision,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    per_class_scores,
    precision_recall_curve,
    rate_within_k,
    save_report,
    softmax,
)

# 3-class example: rows true, columns predicted
#   true 0 -> preds 0,1,0    -> [2, 1, 0]
#   true 1 -> preds 1,1      -> [0, 2, 0]
#   true 2 -> preds 2,0,0,2  -> [2, 0, 2]
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PREDS = [0, 1, 0, 1, 1, 2, 0, 0, 2]


def test_confusion_and_per_class_scores_match_hand_values() -> None:
    assert confusion_matrix(LABELS, PREDS).tolist() == [[2, 1, 0], [0, 2, 0], [2, 0, 2]]
    scores = per_class_scores(LABELS, PREDS)
    np.testing.assert_allclose(scores.precision, [2 / 4, 2 / 3, 2 / 2])
    np.testing.assert_allclose(scores.recall, [2 / 3, 2 / 2, 2 / 4])
    np.testing.assert_allclose(scores.f1, [4 / 7, 0.8, 2 / 3])
    assert scores.support.tolist() == [3, 2, 4]
    assert macro_f1(LABELS, PREDS) == pytest.approx((4 / 7 + 0.8 + 2 / 3) / 3)
    assert accuracy(LABELS, PREDS) == pytest.approx(6 / 9)
    assert available_prf(LABELS, PREDS) == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7})
    assert confusion_matrix(torch.tensor(LABELS), torch.tensor(PREDS)).sum() == 9


def test_absent_classes_do_not_crash() -> None:
    labels, preds = [0, 0, 1, 1], [0, 0, 0, 0]  # class 1 never predicted, classes 2..4 absent
    scores = per_class_scores(labels, preds, 5)
    assert scores.precision.tolist() == [0.5, 0.0, 0.0, 0.0, 0.0]
    assert scores.recall.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert scores.f1[1] == 0.0 and scores.support.tolist() == [2, 2, 0, 0, 0]
    assert macro_f1(labels, preds, 5) == pytest.approx((2 / 3 + 0.0) / 2)  # only classes 0 and 1 count
    nan_scores = per_class_scores(labels, preds, 5, zero_division=float("nan"))
    assert math.isnan(nan_scores.precision[1]) and math.isnan(nan_scores.recall[3]) and math.isnan(nan_scores.f1[3])
    assert available_prf([1, 2], [1, 2]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix([0, 5], [0, 1], 3)


def test_average_precision_matches_hand_ranking() -> None:
    # ranking 1 0 1 0: P@R=1/2 is 1, P@R=1 is 2/3
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # ties form one step: thresholds 0.9 (P 1, R 1/3), 0.8 (P 2/3, R 2/3), 0.1 (P 3/4, R 1)
    assert average_precision([1, 0, 1, 1], [0.9, 0.8, 0.8, 0.1]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    precision, recall, thresholds = precision_recall_curve([1, 0, 1, 1], [0.9, 0.8, 0.8, 0.1])
    np.testing.assert_allclose(precision, [1, 2 / 3, 3 / 4])
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.1])
    assert average_precision([1, 1], [0.2, 0.1]) == 1.0
    assert math.isnan(average_precision([0, 0], [0.2, 0.1]))


def test_ece_on_four_samples() -> None:
    # confidences 0.9 and 0.91 share the bin (13/15, 14/15]: accuracy 1/2, confidence 0.905
    # 0.62 (correct) and 0.55 (wrong) sit alone in their bins
    probs = np.array([[0.9, 0.05, 0.05], [0.91, 0.05, 0.04], [0.2, 0.62, 0.18], [0.3, 0.15, 0.55]])
    labels = [0, 1, 1, 0]
    expected = 2 / 4 * abs(0.5 - 0.905) + 1 / 4 * abs(1 - 0.62) + 1 / 4 * abs(0 - 0.55)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(abs(2 / 4 - (0.9 + 0.91 + 0.62 + 0.55) / 4))
    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error(probs * 5, labels)


def test_fit_temperature_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, size=(6000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    for temperature in (0.5, 2.5):
        fitted = fit_temperature(torch.tensor(true_logits * temperature), labels)
        assert fitted == pytest.approx(temperature, rel=0.1)


def test_rate_within_k() -> None:
    attempts = [1, 3, None, 2, 1, float("nan"), 5, -1]
    np.testing.assert_allclose(rate_within_k(attempts, 3), [2 / 8, 3 / 8, 4 / 8])
    np.testing.assert_allclose(rate_within_k(np.array([1.0, np.inf]), 1), [0.5])
    assert np.isnan(rate_within_k([], 2)).all()
    with pytest.raises(ValueError, match="1-based"):
        rate_within_k([0, 1], 2)
    with pytest.raises(ValueError, match="k_max"):
        rate_within_k([1], 0)


def test_evaluate_and_save_report(tmp_path: Path, monkeypatch) -> None:
    probs = np.eye(3)[PREDS] * 0.7 + 0.1
    probs[:, 0] += np.linspace(0, 0.01, len(PREDS))  # distinct Available scores
    probs /= probs.sum(axis=1, keepdims=True)
    report = evaluate(probs, LABELS, class_names=["Available", "Space Mismatch", "Size Mismatch"])
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [2, 0, 2]]
    assert report["available"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["Size Mismatch"]["recall"] == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx((4 / 7 + 0.8 + 2 / 3) / 3)
    assert report["available"]["average_precision"] == pytest.approx(
        average_precision(np.array(LABELS) == 0, probs[:, 0]))
    report["available"]["average_precision"] = float("nan")  # nan must become null
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.warns(UserWarning, match="pip install matplotlib"):
        written = save_report(report, tmp_path / "report")
    assert written == [tmp_path / "report" / "metrics.json"]
    saved = json.loads(written[0].read_text())
    assert saved["available"]["average_precision"] is None and saved["n"] == 9
