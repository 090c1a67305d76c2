"""Study 1 (docs/method.md §3): does RFNet's multimodal input beat a generated-image-only classifier, and what
does each modality add? Measured on SynthAd at laptop scale, the abstaining oracle playing the annotators.

1. Generate images with ``ctx.model`` for fresh SynthAd products (several prompts and seeds each) as an
   RF1M folder (what `data.readers.read_rf1m` reads), judged by the abstaining oracle
   (`reliable_ad.synthad.decisive`, as `reliable-ad synthad generated` does): the images it abstains on
   stay in records.jsonl but out of labels.txt, so out of train, val and test; the report gives how many.
2. Compute the depth and salience maps once, with the estimators of ``ctx.rfnet`` (its
   modalities.json), into the folder's modality cache: every variant reads the same maps.
3. Fine-tune, with one budget (data, by-product split, epochs, lr), ``SEEDS`` training seeds of each
   variant: RFNet with every modality, the generated-image-only baseline and the five leave-one-out
   ablations. Deviation from the paper, which starts from ImageNet ResNet-50s: every variant has
   ``ctx.rfnet``'s architecture, takes ``ctx.rfnet``'s encoders of the modalities it keeps (image
   encoders, caption encoder: ``PRETRAINED_PREFIXES``) and learns everything that combines them (FFM,
   fusion layers, modality embeddings, head) from the same random start. ``ctx.rfnet`` ("synthad") learnt
   from SynthAd scenes: our stand-in for pretraining, since a few hundred labelled images cannot train
   encoders from scratch. Copying only the encoders keeps the comparison fair: an earlier version also
   copied the fusion, so the full variant inherited a classifier already trained on all five inputs
   while the image-only one had to learn a new one (a head start, not a modality effect).
   The binary-label and random-init variants of earlier versions are dropped: the >= 1,000 test images
   and 3 seeds per variant use the study's ~25 min budget (one core).
4. Score each seed on the held-out products (P, R, F1, AP of the Available decision, per-class recall),
   report mean +- sd over seeds, and decide the paper's claims by a paired bootstrap over test products
   (and seeds): RFNet minus image-only AP, each ablation minus full RFNet, with 95% intervals. The
   packaged ``ctx.rfnet`` (no fine-tuning) and an always-Available baseline are there for reference.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.studies import common
from experiments.studies.common import ExperimentContext
from experiments.studies.report import claim_verdict
from reliable_ad.core.io import atomic_write_json, read_jsonl
from reliable_ad.core.labels import CLASS_NAMES

logger = logging.getLogger(__name__)

AVAILABLE = CLASS_NAMES[0]
# Sizes: products x images per product (the split is by product), training seeds per variant and the
# fine-tuning budget. Full, measured on one core (2026-12-08, a shared 2-core machine): 1,920 images at
# ~0.35 CPU s each (generation at 25 steps + the abstaining oracle; 18% abstained), then 21 trainings of
# 10-40 s (3 epochs over ~320 decisive train images, then 1,150 test images): ~19 CPU min in all. The
# test share is large so that >= 1,000 decisive test images remain.
SIZES: dict[bool, dict[str, Any]] = {
    True: dict(products=10, per_product=2, seeds=2, epochs=1, batch_size=8, lr=5e-4, fractions=(0.5, 0.2, 0.3)),
    False: dict(products=640, per_product=3, seeds=3, epochs=3, batch_size=16, lr=5e-4,
                fractions=(0.22, 0.06, 0.72)),
}
ALL_ON = dict(product=True, generated=True, depth=True, salience=True, caption=True)
# name -> (label, RFNetConfig overrides of ctx.rfnet's config, paper's AP (notes))
VARIANTS: dict[str, tuple[str, dict[str, Any], float]] = {
    "rfnet": ("RFNet (all modalities)", {}, 87.58),
    "generated_only": ("generated image only (baseline)", {"modalities": dict(
        product=False, generated=True, depth=False, salience=False, caption=False)}, 77.29),
    "no_product": ("without I_o (product)", {"modalities": {**ALL_ON, "product": False}}, 81.17),
    "no_generated": ("without I_g (generated)", {"modalities": {**ALL_ON, "generated": False}}, 82.06),
    "no_depth": ("without I_d (depth)", {"modalities": {**ALL_ON, "depth": False}}, 85.31),
    "no_salience": ("without I_s (salience)", {"modalities": {**ALL_ON, "salience": False}}, 83.91),
    "no_caption": ("without caption", {"modalities": {**ALL_ON, "caption": False}}, 84.53),
}
ABLATIONS = tuple(k for k in VARIANTS if k.startswith("no_"))
PAPER_PRF = {  # docs/method.md §3: P, R, F1, AP on Available
    "rfnet": (86.45, 85.23, 85.83, 87.58),
    "generated_only": (74.87, 73.66, 74.26, 77.29),
}
DATA_DIR = "data"
MIN_SPLIT_PRODUCTS = {True: 1, False: 10}  # each of train/val/test needs this many products
MIN_TEST_IMAGES = {True: 1, False: 1000}  # decisive test images a run should have (below: a warning)
GAIN = "rfnet_minus_generated_only"  # the first claim's difference (the others: variant minus full RFNet)
METRICS = ("precision", "recall", "f1", "ap")  # of the Available decision; precision at the operating point


# ----------------------------------------------------------------------------------------------
# 1. The labelled set: generated, judged by the abstaining oracle
# ----------------------------------------------------------------------------------------------


def build_labelled_set(ctx: ExperimentContext, root: Path, products: int, per_product: int,
                       chunk: int = 32) -> dict[str, Any]:
    """Generate ``products`` x ``per_product`` images into ``root`` (RF1M layout) and label them with
    the oracle, as `reliable-ad synthad generated` does (its `generate_labelled_set`) with ``ctx``'s
    generator. Resumable: images already recorded in records.jsonl are not made again; labels.txt
    is written last, so a folder with one is complete."""
    from reliable_ad.cli.synthad import generate_labelled_set

    return generate_labelled_set(root, products, per_product, seed=ctx.seed,
                                 generator=lambda: common.load_generator(ctx), chunk=chunk)


def judged_records(root: Path) -> list[dict[str, Any]]:
    """Every generated image's record in ``root`` (image, product_id, label, decisive, ...): the abstaining
    oracle judged each as it was made (`synthad.generated.write_labelled_set`), and labels.txt, which the
    variants train and are tested on, holds the decisive ones only."""
    return read_jsonl(root / "records.jsonl")


def choose_split_seed(records: Sequence[dict[str, Any]], fractions, seed: int, minimum: int) -> int:
    """The first split seed from ``seed`` on whose by-product split of ``records`` (product_id, label)
    gives every split at least ``minimum`` products and a test split with both Available and other
    images (a hash split of few products can leave a split empty or one-sided; with hundreds the first
    seed passes); failing that, the first that meets the product minimum."""
    from reliable_ad.data.splits import split_by_product

    ids = [r["product_id"] for r in records]
    fallback = None
    for s in range(seed, seed + 1000):
        parts = split_by_product(ids, fractions, s)
        if not all(len({ids[i] for i in v}) >= minimum for v in parts.values()):
            continue
        fallback = s if fallback is None else fallback
        if len({records[i]["label"] == AVAILABLE for i in parts["test"]}) == 2:
            return s
    if fallback is None:
        raise ValueError(f"no split seed in [{seed}, {seed + 1000}) gives each split {minimum} of {len(set(ids))} "
                         "products; use more products")
    return fallback


def split_counts(records: Sequence[dict[str, Any]], split_seed: int, fractions) -> dict[str, dict[str, int]]:
    """Per split (train/val/test): images per class of ``records`` (the decisive ones)."""
    from reliable_ad.data.splits import split_by_product

    parts = split_by_product([r["product_id"] for r in records], fractions, split_seed)
    return {split: {name: sum(records[i]["label"] == name for i in idx) for name in CLASS_NAMES}
            for split, idx in parts.items()}


# ----------------------------------------------------------------------------------------------
# 2.-3. Maps and fine-tuning
# ----------------------------------------------------------------------------------------------


def estimator_spec(ctx: ExperimentContext):
    """The depth/salience estimators (and map size) ``ctx.rfnet`` was trained with."""
    from reliable_ad.rfnet.modality_spec import TINY_ESTIMATORS, ModalitySpec

    spec = common.load_inspector(ctx).spec  # None where the packaged model has a modality off
    return ModalitySpec(spec.depth or TINY_ESTIMATORS[0], spec.salience or TINY_ESTIMATORS[1], spec.size)


def training_seed(ctx: ExperimentContext, k: int) -> int:
    """The k-th training seed (model init where new, data order, dropout): from ``ctx.seed`` only."""
    return common.sub_seed(ctx.seed, "rfnet-study/train", k) % 2**31


# What a variant takes from ctx.rfnet: the per-modality encoders. The rest (FFM, fusion, modality
# embeddings, [CLS], head) starts from the variant's own random initialisation (init_variant).
PRETRAINED_PREFIXES = ("image_encoders.", "text_encoder.")


def pretrained_tensor(name: str) -> bool:
    """Whether a state-dict entry is copied from ctx.rfnet (an encoder's), not learnt from scratch."""
    return name.startswith(PRETRAINED_PREFIXES)


def init_variant(ctx: ExperimentContext, folder: Path, name: str, spec, seed: int) -> dict[str, Any]:
    """Save the variant's starting model in ``folder``: ``ctx.rfnet``'s config with the variant's
    overrides, random weights (``seed``), then ``ctx.rfnet``'s encoder weights (``pretrained_tensor``)
    copied wherever the variant has a parameter of the same name and shape. Returns what was copied."""
    import torch

    from reliable_ad.core.config import merge_dicts
    from reliable_ad.rfnet.config import RFNetConfig
    from reliable_ad.rfnet.modality_spec import save_rfnet
    from reliable_ad.rfnet.presets import build_rfnet

    info_path = folder / "init.json"
    if info_path.is_file() and (folder / "config.json").is_file():
        return json.loads(info_path.read_text(encoding="utf-8"))
    inspector = common.load_inspector(ctx)
    base = inspector.model.config.to_dict()
    base["image_encoder"]["pretrained"] = None  # the architecture is in `arch`; weights come from ctx.rfnet
    config = RFNetConfig.from_dict(merge_dicts(base, {**VARIANTS[name][1], "temperature": 1.0, "seed": seed}))
    model = build_rfnet(config, load_pretrained=False)
    target = model.state_dict()
    copied = {k: v for k, v in inspector.model.state_dict().items()
              if pretrained_tensor(k) and k in target and target[k].shape == v.shape}
    model.load_state_dict({**target, **{k: v.detach().to("cpu", torch.float32) for k, v in copied.items()}})
    save_rfnet(model.cpu(), folder, spec, processor=inspector.processor)
    info = {"from": ctx.rfnet, "tensors_copied": len(copied), "tensors": len(target),
            "parameters_copied": int(sum(v.numel() for v in copied.values())),
            "parameters": int(sum(v.numel() for v in target.values()))}
    atomic_write_json(info_path, info)
    return info


def data_source(root: Path):
    from reliable_ad.rfnet.train_config import DataSource

    return DataSource(str(root / DATA_DIR), kind="rf1m")  # labels.txt: the decisive images


def train_config(ctx: ExperimentContext, root: Path, init: Path, spec, split_seed: int, seed: int):
    from reliable_ad.rfnet.train_config import (DataConfig, ModelSection, OptimConfig, RuntimeConfig,
                                                TrainConfig)

    size = SIZES[ctx.quick]
    epochs = size["epochs"]
    return TrainConfig(
        data=DataConfig(sources=[data_source(root)], split_fractions=size["fractions"], split_seed=split_seed),
        model=ModelSection(source=str(init), depth=spec.depth, salience=spec.salience, map_size=spec.size),
        # the paper's schedule shape: learning rate / 10 for the second half
        optim=OptimConfig(epochs=epochs, learning_rate=size["lr"], lr_milestones=[max(1, epochs // 2 + epochs % 2)],
                          batch_size=size["batch_size"]),
        runtime=RuntimeConfig(seed=seed, device="cpu" if ctx.device == "cpu" else "auto", checkpoint_every=10**6,
                              keep_checkpoints=1, log_every=10**6, tensorboard=False),
        num_workers=0, eval_every_epoch=False)


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The test metrics the tables use, JSON-safe (undefined = None): P, R, F1, AP of the Available
    decision (P is Available precision at the operating point, argmax = Available), accuracy, recall
    per class (None where the class has no test image); the PR curve only when defined."""
    avail, curve = metrics.get("available", {}), metrics.get("available_pr_curve") or {}
    points = [*curve.get("precision", []), *curve.get("recall", [])]
    defined = bool(points) and all(v is not None and math.isfinite(v) for v in points)
    out = {"n": metrics.get("n", 0), "precision": avail.get("precision"), "recall": avail.get("recall"),
           "f1": avail.get("f1"), "ap": avail.get("average_precision"), "accuracy": metrics.get("accuracy")}
    per_class = metrics.get("per_class") or {}
    recall = {name: common.clean_number(c["recall"], 6) if c.get("support") else None
              for name, c in per_class.items()}
    return {**{k: common.clean_number(v, 6) for k, v in out.items()}, "class_recall": recall,
            "pr_curve": curve if defined else None}


def train_variant(ctx: ExperimentContext, root: Path, name: str, spec, split_seed: int, k: int) -> dict[str, Any]:
    """Fine-tune seed ``k`` of one variant into ``root/variants/<name>/seed<k>`` (or read its result when
    it finished before)."""
    import time

    from reliable_ad.rfnet.train import train

    folder = root / "variants" / name / f"seed{k}"
    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    t0 = time.perf_counter()
    seed = training_seed(ctx, k)
    init = init_variant(ctx, folder / "init", name, spec, seed)
    final = train(train_config(ctx, root, folder / "init", spec, split_seed, seed), folder / "run", progress=False)
    result = {"seed": seed, "test": summarize_metrics(final.get("test", {})), "init": init,
              "seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(done, result)
    return result


def evaluate_packaged(ctx: ExperimentContext, root: Path, split_seed: int) -> dict[str, Any]:
    """``ctx.rfnet`` itself on the same test images (its maps come from the same cache)."""
    from reliable_ad.rfnet.eval_loop import evaluate_model

    done = root / "packaged" / "result.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    metrics = evaluate_model(ctx.rfnet, [data_source(root)], root / "packaged", split="test",
                             split_fractions=SIZES[ctx.quick]["fractions"], split_seed=split_seed, batch_size=32,
                             num_workers=0, device="cpu" if ctx.device == "cpu" else "auto", progress=False)
    result = {"test": summarize_metrics(metrics)}
    atomic_write_json(done, result)
    return result


# ----------------------------------------------------------------------------------------------
# 4. Seeds, the paired bootstrap and the claims' verdicts (pure)
# ----------------------------------------------------------------------------------------------

BOOTSTRAP = 1000  # resamples of the test products (and of each model's seeds)
LEVEL = 0.95  # the intervals' coverage


def mean_sd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample sd (ddof 1) of the defined values; sd None with fewer than 2, both None with none."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def aggregate_seeds(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of each metric (``summarize_metrics`` outputs, one per seed): {metric:
    {"mean", "sd"}}, with "class_recall": {class: {"mean", "sd"}} and "seeds": how many."""
    out: dict[str, Any] = {"seeds": len(summaries)}
    for m in (*METRICS, "accuracy"):
        out[m] = dict(zip(("mean", "sd"), mean_sd(s.get(m) for s in summaries)))
    names = list(dict.fromkeys(c for s in summaries for c in s.get("class_recall") or {}))
    out["class_recall"] = {c: dict(zip(("mean", "sd"), mean_sd((s.get("class_recall") or {}).get(c)
                                                                 for s in summaries))) for c in names}
    return out


def product_of(image: str) -> str:
    """The product id of an RF1M image path (``images/<product>_<k>.png``)."""
    return Path(image).stem.rsplit("_", 1)[0]


def read_predictions(path: Path) -> dict[str, tuple[bool, float]]:
    """image -> (is Available by the oracle, p(Available)) from an eval predictions.jsonl."""
    out = {}
    for r in read_jsonl(path):
        if r.get("valid") and r.get("probs"):
            out[r["image"]] = (r["label"] == AVAILABLE, float(r["probs"][AVAILABLE]))
    return out


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    v = values[np.isfinite(values)]
    if not v.size:
        return None, None
    tail = 100 * (1 - LEVEL) / 2
    return float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))


def paired_bootstrap(predictions: dict[str, Sequence[dict[str, tuple[bool, float]]]],
                     differences: dict[str, tuple[str, str]], seed: int, n: int = BOOTSTRAP) -> dict[str, Any]:
    """Seed-mean AP per model and the differences ``differences[key] = (a, b)``: AP(a) - AP(b), each with
    a 95% interval from a two-level bootstrap. ``predictions[model]``: one image -> (truth, score) dict per
    training seed. Each resample draws the test products with replacement, the same for every model
    (paired), and, per model, its seeds with replacement; a model's AP in a resample is the mean over its
    drawn seeds of their AP on the drawn products. Only images every model and seed scored count.
    Returns {"models": {m: {"ap", "lo", "hi"}}, "differences": {key: {"delta", "lo", "hi", "above"}},
    "images", "products"} ("above": the share of resamples with the difference > 0)."""
    from reliable_ad.evaluation import average_precision

    runs = [p for seeds in predictions.values() for p in seeds]
    images = sorted(set.intersection(*(set(p) for p in runs))) if runs else []
    groups: dict[str, list[int]] = {}
    for j, image in enumerate(images):
        groups.setdefault(product_of(image), []).append(j)
    members = [np.array(v) for _, v in sorted(groups.items())]
    arrays = {m: [(np.array([p[i][0] for i in images], bool), np.array([p[i][1] for i in images], float))
                  for p in seeds] for m, seeds in predictions.items()}

    def seed_aps(idx) -> dict[str, np.ndarray]:
        return {m: np.array([average_precision(t[idx], s[idx]) if t[idx].any() else np.nan for t, s in runs_])
                for m, runs_ in arrays.items()}

    full = seed_aps(np.arange(len(images))) if images else {m: np.full(len(s), np.nan) for m, s in arrays.items()}
    point = {m: (float(np.mean(v)) if v.size and np.isfinite(v).all() else np.nan) for m, v in full.items()}
    rng = np.random.default_rng([seed, 0xB007])
    draws = {m: [] for m in predictions}
    for _ in range(n if members else 0):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        aps = seed_aps(idx)
        for m, v in aps.items():
            draws[m].append(np.mean(v[rng.integers(0, len(v), len(v))]) if len(v) else np.nan)
    draws = {m: np.array(v, float) for m, v in draws.items()}
    models = {m: dict(zip(("lo", "hi"), _interval(draws[m])), ap=common.clean_number(point[m], 6))
              for m in predictions}
    diffs = {}
    for key, (a, b) in differences.items():
        d = draws[a] - draws[b] if len(draws[a]) else np.array([])
        lo, hi = _interval(d)
        ok = d[np.isfinite(d)]
        diffs[key] = {"delta": common.clean_number(point[a] - point[b], 6), "lo": lo, "hi": hi,
                      "above": float((ok > 0).mean()) if ok.size else None}
    return {"models": models, "differences": diffs, "images": len(images), "products": len(members)}


def _verdict(lo: float | None, hi: float | None) -> str:
    """`report.claim_verdict` of "this difference is > 0" on an interval whose ends may be undefined (None
    or nan: inconclusive)."""
    defined = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
    return claim_verdict([lo, hi] if defined else None)


def all_verdict(verdicts: Sequence[str]) -> str:
    """A claim that holds for every part ("every modality contributes"): reproduced when every part is,
    not reproduced when any part is not, else inconclusive (also with no part)."""
    if verdicts and all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "not reproduced" if "not reproduced" in verdicts else "inconclusive"


def _pp(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def _interval_text(d: dict[str, Any]) -> str:
    return f"{_pp(d['delta'])} points (95% interval {_pp(d['lo'])} to {_pp(d['hi'])})"


def _points(d: dict[str, Any]) -> list[float] | None:
    """A difference's 95% interval in AP points (the claims' "interval")."""
    return None if d["lo"] is None else [round(100 * d["lo"], 2), round(100 * d["hi"], 2)]


def claims(boot: dict[str, Any], ap: dict[str, float | None]) -> list[dict[str, Any]]:
    """The paper's two claims of this study with our figures and their verdicts (`report.claim_verdict`,
    `all_verdict`): multimodal RFNet beats the image-only baseline on AP; every leave-one-out lowers AP
    (its "interval", in AP points: that of the ablation whose upper end is highest)."""
    diffs = boot["differences"]
    gain = diffs[GAIN]

    def ap_text(key: str) -> str:
        return "–" if ap[key] is None else f"{100 * ap[key]:.1f}"

    first = {"claim": "multimodal RFNet beats the generated-image-only classifier (AP of Available)",
             "paper": "AP 87.58 vs 77.29 (+10.29 points; docs/method.md §3)",
             "measured": f"AP {ap_text('rfnet')} vs {ap_text('generated_only')}: {_interval_text(gain)}",
             "interval": _points(gain),
             "verdict": _verdict(gain["lo"], gain["hi"])}
    # each ablation: its AP minus full RFNet's; the modality contributes when that is < 0
    parts = {k: _verdict(None if diffs[k]["hi"] is None else -diffs[k]["hi"],
                                 None if diffs[k]["lo"] is None else -diffs[k]["lo"]) for k in ABLATIONS}
    weakest = max(ABLATIONS, key=lambda k: -math.inf if diffs[k]["hi"] is None else diffs[k]["hi"])
    paper = ", ".join(f"{VARIANTS[k][0].removeprefix('without ')} {VARIANTS[k][2] - 87.58:+.2f}" for k in ABLATIONS)
    measured = "; ".join(f"{VARIANTS[k][0].removeprefix('without ')} {_interval_text(diffs[k])}" for k in ABLATIONS)
    second = {"claim": "every modality contributes: each leave-one-out ablation lowers AP",
              "paper": f"AP change without: {paper} (all below 0)",
              "measured": f"AP change without: {measured}; least clear: {VARIANTS[weakest][0]}",
              "interval": _points(diffs[weakest]),
              "verdict": all_verdict([parts[k] for k in ABLATIONS])}
    return [first, second]


# ----------------------------------------------------------------------------------------------
# 5. Tables, figures, reading
# ----------------------------------------------------------------------------------------------


def _pct(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else 100.0 * value


def _tables(agg: dict[str, dict], packaged: dict, counts: dict, boot: dict, abstention: dict,
            seconds: dict[str, float], ctx: ExperimentContext) -> dict[str, dict]:
    test = counts["test"]
    n_test, n_avail = sum(test.values()), test[AVAILABLE]
    rate = n_avail / n_test if n_test else None
    chance_f1 = 2 * rate / (1 + rate) if rate else None
    seeds = agg["rfnet"]["seeds"]

    main_rows = []
    for key in ("rfnet", "generated_only"):
        a = agg[key]
        main_rows.append([VARIANTS[key][0], *(_pct(a[m]["mean"]) for m in METRICS),
                          *(_pct(a[m]["sd"]) for m in METRICS), *PAPER_PRF[key]])
    p = packaged["test"]
    main_rows.append([f"packaged RFNet {ctx.rfnet!r} (not fine-tuned)", *(_pct(p[m]) for m in METRICS),
                      None, None, None, None, None, None, None, None])
    main_rows.append(["always 'Available' (chance)", _pct(rate), 100.0 if n_avail else None, _pct(chance_f1),
                      _pct(rate), None, None, None, None, None, None, None, None])
    main = common.table(
        ["model", "P", "R", "F1", "AP", "sd P", "sd R", "sd F1", "sd AP", "paper P", "paper R", "paper F1",
         "paper AP"], main_rows,
        f"Available decision on {n_test} test images of held-out products ({n_avail} Available by the oracle; "
        f"images it abstains on left out), in %: mean and sd over {seeds} training seeds. P is the Available "
        "precision at the operating point (argmax = Available). Paper numbers (notes) are RF1M with ImageNet "
        "ResNet-50s at 384 px; ours are the packaged SynthAd RFNet's small architecture at 64 px, fine-tuned "
        "from its encoders on a few hundred oracle-labelled generated images: compare the gaps, not the levels. "
        "Empty = undefined.")

    diffs = boot["differences"]
    ablation_rows = []
    for key, (label, _, paper_ap) in VARIANTS.items():
        a, d = agg[key], diffs.get(key)
        delta = (0.0, None, None) if d is None else (_pct(d["delta"]), _pct(d["lo"]), _pct(d["hi"]))
        ablation_rows.append([label, _pct(a["ap"]["mean"]), _pct(a["ap"]["sd"]), _pct(a["f1"]["mean"]),
                              *delta, paper_ap, paper_ap - 87.58,
                              seconds.get(key)])
    ablation = common.table(
        ["variant", "AP", "sd AP", "F1", "ΔAP vs all", "ΔAP 95% low", "ΔAP 95% high", "paper AP", "paper ΔAP",
         "train s per seed"], ablation_rows,
        f"Every variant fine-tuned {seeds} times (training seeds) with the same data, split, epochs and learning "
        "rate, from the packaged RFNet's encoders of the modalities it keeps (fusion and head learnt from the same "
        "random start); AP and F1 are means over seeds, in %. "
        f"ΔAP interval: paired bootstrap ({BOOTSTRAP} resamples of the test products, shared by all variants, "
        "and of each variant's seeds). A modality contributes clearly when its whole interval is below 0.")

    recall_rows = [[VARIANTS[k][0], *(_pct(agg[k]["class_recall"].get(c, {}).get("mean")) for c in CLASS_NAMES)]
                   for k in VARIANTS]
    recall_rows.append(["test images", *(test[c] for c in CLASS_NAMES)])
    recall = common.table(["variant", *CLASS_NAMES], recall_rows,
                          f"Recall per class on the test images, in %, mean over {seeds} seeds (last row: how many "
                          "test images each class has). Empty = no test image of that class.")

    data_rows = [[split, sum(c.values()), *c.values()] for split, c in counts.items()]
    data = common.table(["split", "images", *CLASS_NAMES], data_rows,
                        "Oracle labels of the decisive generated images, split by product.")
    ab = abstention
    abst = common.table(
        ["generated images", "decisive", "abstained", "abstention rate", "95% low", "95% high"],
        [[ab["n"], ab["n"] - ab["k"], ab["k"], ab["rate"], *ab["ci95"]]],
        "The oracle abstains on an image when one of its re-readings (reliable_ad.synthad.decisive) "
        "decides Available-vs-not differently; those images are in no split. Wilson 95% interval.")
    return {"RFNet vs generated-image-only (Available)": main, "Modality ablation": ablation,
            "Recall per class": recall, "Labelled data (oracle labels)": data, "Oracle abstention": abst}


def _figures(agg: dict[str, dict], results: dict[str, list], packaged: dict, chance: float | None,
             out_dir: Path, ctx: ExperimentContext) -> list[str]:
    figures = []
    fig = common.new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    keys = list(VARIANTS)
    ours = np.array([_pct(agg[k]["ap"]["mean"]) or 0.0 for k in keys])
    sd = np.array([_pct(agg[k]["ap"]["sd"]) or 0.0 for k in keys])
    x = np.arange(len(keys))
    ax.bar(x - 0.2, ours, 0.4, yerr=sd, capsize=2, label=f"SynthAd (ours), mean ± sd over {agg['rfnet']['seeds']} seeds")
    ax.bar(x + 0.2, [VARIANTS[k][2] for k in keys], 0.4, label="paper (notes)")
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance (Available share)")
    ax.set_xticks(x, [k.replace("_", " ") for k in keys], rotation=30, ha="right")
    ax.set_ylabel("AP, Available (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=3, fontsize=8, frameon=False)
    figures.append(common.save_figure(fig, out_dir, "ablation_ap"))

    fig = common.new_figure(4.5, 4.0)
    ax = fig.add_subplot()
    drawn = False
    for label, result in ((f"{VARIANTS['rfnet'][0]}, first seed", results["rfnet"][0]),
                          (f"{VARIANTS['generated_only'][0]}, first seed", results["generated_only"][0]),
                          (f"packaged {ctx.rfnet}", packaged)):
        curve = result["test"].get("pr_curve")
        if curve:
            ax.step(curve["recall"], curve["precision"], where="post", label=label)
            drawn = True
    ax.set_xlabel("recall (Available)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if drawn:
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.set_title("no Available image in the test set")
    figures.append(common.save_figure(fig, out_dir, "pr_curves"))
    return figures


def reading(agg: dict[str, dict], packaged: dict, counts: dict, boot: dict, found: list[dict],
            abstention: dict) -> str:
    """What the numbers show, in words computed from them (the verdicts are the claims')."""
    test = counts["test"]
    n_test, n_avail = sum(test.values()), test[AVAILABLE]
    absent = (f"The oracle abstained on {abstention['k']} of {abstention['n']} generated images "
              f"({100 * (abstention['rate'] or 0):.0f}%), left out of every split.")
    if not n_avail or n_avail == n_test:
        return (f"The test set has {n_avail} Available images of {n_test}: the Available decision has nothing "
                f"to rank, so AP and the claims are undefined. Nothing can be concluded. {absent}")
    parts = [f"Claim '{c['claim']}': {c['verdict']} ({c['measured']}; paper {c['paper']})." for c in found]
    ablations = {k: boot["differences"][k] for k in ABLATIONS if boot["differences"][k]["delta"] is not None}
    if ablations:
        below = [VARIANTS[k][0] for k, d in ablations.items() if d["hi"] is not None and d["hi"] < 0]
        worst = min(ablations, key=lambda k: ablations[k]["delta"])
        parts.append(f"{len(below)} of {len(ablations)} leave-one-out ablations lower AP clearly "
                     f"({', '.join(below) or 'none'}); the largest change is {VARIANTS[worst][0]} "
                     f"({_pp(ablations[worst]['delta'])} points; paper: without I_o, -6.4).")
    p = packaged["test"]["ap"]
    if p is not None:
        parts.append(f"The packaged RFNet itself, not fine-tuned, scores AP {100 * p:.1f} on the same test images.")
    sd = agg["rfnet"]["ap"]["sd"]
    parts.append(f"Test set: {n_test} decisive images of {boot['products']} products, {n_avail} Available (chance "
                 f"AP {100 * n_avail / n_test:.1f}); {agg['rfnet']['seeds']} training seeds per variant (RFNet's AP "
                 f"sd over seeds {'–' if sd is None else f'{100 * sd:.1f}'} points). {absent}")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _abstention(judged: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from experiments.synthad.gates import proportion

    return proportion(sum(not j["decisive"] for j in judged), len(judged))


def run_study(ctx: ExperimentContext, out_dir: Path) -> dict[str, Any]:
    """The whole study (module docstring) into ``out_dir``; resumable (finished parts are read back)."""
    from reliable_ad.modalities.cache import build_cache

    out_dir = Path(out_dir)
    sw = common.Stopwatch()
    size = SIZES[ctx.quick]
    root = out_dir / DATA_DIR
    with sw("generate and judge"):
        data = build_labelled_set(ctx, root, size["products"], size["per_product"])
    judged = judged_records(root)
    decisive = [j for j in judged if j["decisive"]]
    split_seed = choose_split_seed(decisive, size["fractions"], ctx.seed, MIN_SPLIT_PRODUCTS[ctx.quick])
    spec = estimator_spec(ctx)
    with sw("depth and salience maps"):
        cache = build_cache(root, depth=spec.depth, salience=spec.salience, size=spec.size, device=ctx.device,
                            progress=False)
        if not cache.ok:
            logger.warning("rfnet study: %d images have no maps (computed during training instead): %s",
                           len(cache.failed), list(cache.failed.items())[:3])
    results: dict[str, list[dict]] = {}
    for name in VARIANTS:
        with sw(f"train {name}"):
            logger.info("rfnet study: training %s (%d seeds)", name, size["seeds"])
            results[name] = [train_variant(ctx, out_dir, name, spec, split_seed, k) for k in range(size["seeds"])]
    with sw("packaged model"):
        packaged = evaluate_packaged(ctx, out_dir, split_seed)
    counts = split_counts(decisive, split_seed, size["fractions"])
    if sum(counts["test"].values()) < MIN_TEST_IMAGES[ctx.quick]:
        logger.warning("rfnet study: only %d decisive test images (want >= %d; the oracle abstained on %d of %d): "
                       "raise SIZES' products or test fraction", sum(counts["test"].values()),
                       MIN_TEST_IMAGES[ctx.quick], len(judged) - len(decisive), len(judged))
    with sw("bootstrap"):
        predictions = {name: [read_predictions(out_dir / "variants" / name / f"seed{k}" / "run" / "eval" / "test" /
                                               "predictions.jsonl") for k in range(size["seeds"])]
                       for name in VARIANTS}
        differences = {GAIN: ("rfnet", "generated_only"), **{k: (k, "rfnet") for k in VARIANTS if k != "rfnet"}}
        boot = paired_bootstrap(predictions, differences, ctx.seed)
    agg = {name: aggregate_seeds([r["test"] for r in runs]) for name, runs in results.items()}
    abstention = _abstention(judged)
    train_s = {name: float(np.mean([r["seconds"] for r in runs])) for name, runs in results.items()}
    tables = _tables(agg, packaged, counts, boot, abstention, train_s, ctx)
    n_test = sum(counts["test"].values())
    chance = counts["test"][AVAILABLE] / n_test if n_test else None
    figures = _figures(agg, results, packaged, chance, out_dir, ctx)
    found = claims(boot, {k: boot["models"][k]["ap"] for k in VARIANTS})
    # a resumed study adds this run's time to the earlier runs' (parts read back cost ~0 s here)
    earlier = json.loads((out_dir / "timings.json").read_text(encoding="utf-8")) \
        if (out_dir / "timings.json").is_file() else {}
    sections = {k: earlier.get(k, 0.0) + sw.seconds.get(k, 0.0) for k in {**earlier, **sw.seconds}}
    atomic_write_json(out_dir / "timings.json", sections)
    settings = {**ctx.to_dict(), **{k: (list(v) if isinstance(v, tuple) else v) for k, v in size.items()},
                "split_seed": split_seed, "training_seeds": [training_seed(ctx, k) for k in range(size["seeds"])],
                "estimators": spec.to_dict(), "architecture": f"as {ctx.rfnet}",
                "data": {**data, "decisive": len(decisive), "abstained": abstention["k"]},
                "variants": list(VARIANTS), "dropped_variants": ["binary label", "random init"],
                "bootstrap": {"resamples": BOOTSTRAP, "level": LEVEL, "test_images": boot["images"],
                              "test_products": boot["products"]},
                "sections_s": {k: round(v, 1) for k, v in sections.items()}, "resumed": bool(earlier)}
    result = common.study_result(tables, figures, sum(sections.values()), settings,
                                 summary=reading(agg, packaged, counts, boot, found, abstention))
    result["claims"] = found
    return result
