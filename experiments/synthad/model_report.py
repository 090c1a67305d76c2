"""How good the SynthAd models are, on fresh rendered scenes (other seeds than any training data):
the "synthad" estimators against the renderer's true maps and a trivial baseline (the training set's
mean map), and the "synthad" RFNet against the injected labels and the OracleInspector's verdicts.
Written by `experiments.synthad.train_rfnet` as report.json, installed beside the weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def estimator_quality(estimators: dict[str, Any], images, true_depth, true_salience, prior_depth,
                      prior_salience) -> dict[str, float]:
    """Mean depth r and salience IoU of the estimators on ``images`` (uint8 (N, 3, S, S)), and of the
    priors ((1, S, S) mean maps of the training set, the same map for every image) as the baseline."""
    from reliable_ad.modalities.synthad_estimators import depth_correlation, predict_maps, salience_iou

    n = images.shape[0]
    depth = depth_correlation(predict_maps(estimators["depth"], images), true_depth)
    salience = salience_iou(predict_maps(estimators["salience"], images), true_salience)
    depth_prior = depth_correlation(np.repeat(np.asarray(prior_depth)[None], n, 0), true_depth)
    salience_prior = salience_iou(np.repeat(np.asarray(prior_salience)[None], n, 0), true_salience)
    return {"depth_correlation": float(depth.mean()), "depth_correlation_p10": float(np.quantile(depth, 0.1)),
            "depth_correlation_baseline": float(depth_prior.mean()),
            "salience_iou": float(salience.mean()), "salience_iou_p10": float(np.quantile(salience, 0.1)),
            "salience_iou_baseline": float(salience_prior.mean())}


def rfnet_probs(model_folder: str | Path, estimators: dict[str, Any] | None, products: list[np.ndarray],
                images: list[np.ndarray], captions: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(probabilities (N, C), class names) of the saved RFNet, with ``estimators`` (None: the ones its
    modalities.json names) making the maps, as `Inspector` does at inference."""
    from reliable_ad.rfnet.inspector import Inspector, load_for_inference

    model, processor, spec, fingerprint = load_for_inference(model_folder)
    inspector = Inspector(model, processor, spec, estimators=estimators, device="cpu", batch_size=64,
                          fingerprint=fingerprint)
    verdicts = inspector.inspect(products, images, captions)
    names = inspector.class_names
    return np.array([[v.probs[name] for name in names] for v in verdicts], np.float64), names


def oracle_agreement(probs: np.ndarray, labels: np.ndarray, products, images, captions) -> dict[str, float]:
    """RFNet (``probs``) against the OracleInspector on the same images; the oracle against the labels."""
    from reliable_ad.evaluation import average_precision
    from reliable_ad.core.labels import AVAILABLE_INDEX
    from reliable_ad.synthad.oracle import OracleInspector

    oracle = np.array([v.label_index for v in OracleInspector()(products, images, captions)])
    pred = probs.argmax(1)
    same_decision = (pred == AVAILABLE_INDEX) == (oracle == AVAILABLE_INDEX)
    return {"rfnet_oracle_agreement": float((pred == oracle).mean()),
            "rfnet_oracle_available_agreement": float(same_decision.mean()),
            "rfnet_available_ap_vs_oracle": average_precision(oracle == AVAILABLE_INDEX, probs[:, AVAILABLE_INDEX]),
            "oracle_accuracy": float((oracle == labels).mean())}


def write_report(out: Path, model_folder: Path, fresh: tuple, priors: tuple, estimators: dict[str, Any], *,
                 settings: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """Measure everything above and write ``out/report.json``; returns the report.

    ``fresh``: (samples, images uint8 (N, 3, S, S), true depth, true salience (N, 1, S, S)) of fresh
    scenes; ``priors``: the mean true depth and salience maps (1, S, S) of the estimators' training set.
    """
    from PIL import Image

    from reliable_ad.evaluation import evaluate
    from experiments.synthad import REPORT_FILE
    from reliable_ad.core.io import atomic_write_json

    samples, images, true_depth, true_salience = fresh
    maps = estimator_quality(estimators, images, true_depth, true_salience, *priors)
    products = [np.asarray(Image.open(s.product).convert("RGBA")) for s in samples]
    rgb = list(images.permute(0, 2, 3, 1).numpy())
    captions = [s.caption for s in samples]
    labels = np.array([s.label for s in samples])
    probs, names = rfnet_probs(model_folder, estimators, products, rgb, captions)
    metrics = evaluate(probs, labels, class_names=names)
    oracle = oracle_agreement(probs, labels, products, rgb, captions)
    summary = {"fresh_scenes": len(samples), "available_share": float((labels == 0).mean()), **maps,
               "rfnet_accuracy": metrics["accuracy"], "rfnet_macro_f1": metrics["macro_f1"],
               "rfnet_available_ap": metrics["available"]["average_precision"], **oracle}
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    report = {"summary": {**summary, "seconds": dict(seconds)}, "rfnet": metrics, "settings": settings}
    atomic_write_json(out / REPORT_FILE, report)
    logger.info("report: %s", summary)
    return report
