"""Evaluation of RFNet and of the generation methods: classification, calibration and
available-rate metrics, and reports written next to a run's outputs."""

from reliable_ad.evaluation.metrics import (
    PerClass,
    accuracy,
    available_prf,
    average_precision,
    binary_prf,
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

__all__ = [
    "PerClass",
    "accuracy",
    "available_prf",
    "average_precision",
    "binary_prf",
    "confusion_matrix",
    "evaluate",
    "expected_calibration_error",
    "fit_temperature",
    "macro_f1",
    "per_class_scores",
    "precision_recall_curve",
    "rate_within_k",
    "save_report",
    "softmax",
]
