"""RFNet evaluation under accelerate: every sample predicted exactly once however many processes run,
metrics with the model's temperature, and `reliable-ad rfnet eval` (a saved model on labelled data).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reliable_ad.core.labels import AVAILABLE_INDEX
from reliable_ad.core.io import atomic_write_json, atomic_write_text
from reliable_ad.training.accelerator import make_accelerator
from reliable_ad.training.config import RuntimeConfig
from reliable_ad.rfnet.io import TRAINING_FILE, resolve_folder

logger = logging.getLogger(__name__)



def make_loader(dataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """A sequential loader of ``dataset`` (an RFDataset) that tolerates unreadable files."""
    from reliable_ad.rfnet.trainer_data import RobustDataset, collate_robust

    return torch.utils.data.DataLoader(
        RobustDataset(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=collate_robust, generator=torch.Generator().manual_seed(0),  # leaves the global RNG alone
    )


def predict(accelerator, model, loader, inputs_of, n_expected: int, *, progress: bool = False) -> dict[str, Any]:
    """Logits of every sample of a prepared ``loader``, gathered from all processes, in dataset order.

    Returns ``logits`` (N, C) float32, ``labels``, ``indices`` (N,), ``valid`` (N,) bool (False: the
    files were unreadable) and ``errors``. Raises RuntimeError unless each of the ``n_expected``
    samples came back exactly once: accelerate pads the last batches with repeats, which
    ``gather_for_metrics`` must drop.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    parts: list[list[torch.Tensor]] = []
    errors: list[str] = []
    for batch in tqdm(loader, desc="rfnet eval", unit="batch", disable=not (progress and accelerator.is_main_process)):
        with torch.no_grad():
            logits = model(**inputs_of(batch)).float()
        device = logits.device
        gathered = accelerator.gather_for_metrics(
            (logits, batch["label"].to(device), batch["index"].to(device), batch["valid"].to(device, torch.long))
        )
        parts.append([t.cpu() for t in gathered])
        errors += batch["errors"]
    model.train(was_training)
    errors = list(dict.fromkeys(gather_object(errors)))
    if parts:
        logits, labels, indices, valid = (torch.cat(column).numpy() for column in zip(*parts))
    else:
        logits, labels, indices, valid = np.zeros((0, 1), np.float32), *(np.zeros(0, np.int64) for _ in range(3))
    if len(indices) != n_expected or not np.array_equal(np.sort(indices), np.arange(n_expected)):
        raise RuntimeError(
            f"evaluation returned {len(indices)} predictions ({len(np.unique(indices))} distinct) for {n_expected} "
            f"samples on {accelerator.num_processes} process(es); each sample must be evaluated exactly once"
        )
    order = np.argsort(indices, kind="stable")
    return {"logits": logits[order], "labels": labels[order].astype(np.int64), "indices": indices[order],
            "valid": valid[order].astype(bool), "errors": errors}


def evaluate_split(pred: dict[str, Any], dataset, class_names, temperature: float, folder: Path,
                   *, write: bool = True) -> dict[str, Any]:
    """Metrics of one split's predictions at ``temperature``; writes metrics.json (+ PNGs) and
    predictions.jsonl into ``folder`` when ``write`` (the main process)."""
    from reliable_ad.evaluation import evaluate, expected_calibration_error, save_report, softmax

    keep = pred["valid"]
    logits, labels = pred["logits"][keep], pred["labels"][keep]
    if not keep.any():
        metrics: dict[str, Any] = {"n": 0, "class_names": list(class_names)}
    else:
        probs = softmax(logits, temperature)
        metrics = evaluate(probs, labels, class_names=class_names, available_index=AVAILABLE_INDEX)
        metrics["ece_uncalibrated"] = expected_calibration_error(softmax(logits, 1.0), labels)
    metrics.update(temperature=float(temperature), n_unreadable=int((~keep).sum()), unreadable=pred["errors"][:100])
    if write:
        save_report(metrics, folder)
        all_probs = softmax(pred["logits"], temperature) if len(pred["logits"]) else pred["logits"]
        lines = []
        for i, p, ok in zip(pred["indices"], all_probs, pred["valid"]):
            label = int(dataset.labels[i])
            lines.append(json.dumps({
                "image": dataset.images[i], "label": class_names[label], "valid": bool(ok),
                "predicted": class_names[int(np.argmax(p))] if ok else None,
                "probs": {n: round(float(v), 6) for n, v in zip(class_names, p)} if ok else None,
            }, ensure_ascii=False))
        atomic_write_text(folder / "predictions.jsonl", "".join(line + "\n" for line in lines))
    return metrics


def evaluate_model(model: str, sources: list[Any], out: str | Path, *, split: str = "all",
                   unsuitable: str | None = None, split_fractions: tuple[float, float, float] | None = None,
                   split_seed: int | None = None,
                   batch_size: int = 32, num_workers: int = 2, depth: str | None = None, salience: str | None = None,
                   device: str = "auto", mixed_precision: str = "auto", use_cache: bool = True,
                   progress: bool = True) -> dict[str, Any]:
    """`reliable-ad rfnet eval`: a saved RFNet (folder, hub id or preset) on labelled data.

    ``split``: ``all`` evaluates every sample; ``train``/``val``/``test`` evaluate that split of the
    by-product split. ``unsuitable``, ``split_fractions`` and ``split_seed`` default to those the
    model was trained with (its training.json), so ``split="test"`` is training's held-out test set;
    without training.json: "drop", (0.8, 0.1, 0.1), 0.
    """
    from reliable_ad.rfnet.inspector import build_estimators, load_for_inference
    from reliable_ad.data.splits import SPLIT_NAMES
    from reliable_ad.rfnet.trainer_data import ModelInputs, build_datasets, estimators_needed

    if split not in ("all", *SPLIT_NAMES):
        raise ValueError(f"split={split!r} must be 'all' or one of {SPLIT_NAMES}")
    accelerator = make_accelerator(RuntimeConfig(device=device, mixed_precision=mixed_precision))
    rfnet, processor, spec, fingerprint = load_for_inference(model, depth=depth, salience=salience)
    trained = _training_info(model)
    unsuitable = unsuitable or trained.get("unsuitable", "drop")
    split_fractions = tuple(split_fractions or trained.get("split_fractions", (0.8, 0.1, 0.1)))
    split_seed = trained.get("split_seed", 0) if split_seed is None else split_seed
    splits = build_datasets(
        sources, unsuitable=unsuitable, num_classes=rfnet.config.num_classes, image_size=rfnet.config.image_size,
        spec=spec, split=None if split == "all" else "by_product", fractions=split_fractions, split_seed=split_seed,
        use_cache=use_cache, needs_product=rfnet.config.modalities.product,
    )
    dataset = splits.datasets[split]
    if len(dataset) == 0:
        raise ValueError(f"the {split!r} split has no samples ({splits.info['splits']})")
    estimators = build_estimators(estimators_needed(spec, splits.info, rfnet.config.modalities), accelerator.device)
    inputs_of = ModelInputs(rfnet.config, processor, estimators, accelerator.device)
    prepared, loader = accelerator.prepare(rfnet, make_loader(dataset, batch_size, num_workers))
    pred = predict(accelerator, prepared, loader, inputs_of, len(dataset), progress=progress)
    out = Path(out)
    metrics = evaluate_split(pred, dataset, rfnet.class_names, rfnet.config.temperature, out,
                             write=accelerator.is_main_process)
    if accelerator.is_main_process:
        atomic_write_json(out / "eval_config.json", {
            "model": str(model), "fingerprint": fingerprint, "split": split, "unsuitable": unsuitable,
            "split_fractions": list(split_fractions), "split_seed": split_seed, "modalities": spec.to_dict(),
            "sources": [getattr(s, "path", str(s)) for s in sources], "data": splits.info,
        })
    accelerator.wait_for_everyone()
    return metrics


def _training_info(model: str | Path) -> dict[str, Any]:
    from reliable_ad.rfnet.presets import _config_source

    if _config_source(model) is not None:  # a preset or config file: never trained
        return {}
    path = resolve_folder(model) / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); pass --split-seed and the split explicitly") from e
    return data if isinstance(data, dict) else {}
