"""RFFT on SynthAd (docs/method.md §5): the same generator fine-tuned under each objective (ReFL = feedback only,
a KL-style penalty, the Consistent Condition at several β), with the ctx RFNet as the reward, the same
products, seeds and budget, then judged on held-out products x prompts x seeds against the original
model: available rate (RFNet and oracle), wall-colour adherence, background diversity across seeds, and
distance to the original's images. Does ReFL collapse, and does CC prevent it?

Training is the real `RFFTTrainer` (ControlNet only, graded step in the last quarter of the DDIM loop);
only the scale differs from the paper: tens of optimizer steps of one small micro-batch, at a learning
rate raised so that so short a run moves the model at all.
"""

from __future__ import annotations

import gc
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.studies.common import (
    WALL_COLOR_NAMES,
    ExperimentContext,
    generate,
    image_seed,
    judge_oracle,
    judge_rfnet,
    load_generator,
    load_inspector,
    make_products,
    prepare,
    prompt_preset,
    study_result,
    sub_seed,
    synthad_prompt,
    table,
    wall_color_of_background,
)
from experiments.studies.recurrent_study import torch_threads
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text

AVAILABLE = "Available"


@dataclass(frozen=True)
class Objective:
    name: str  # label in tables and plots
    regularizer: str  # rfft.config.REGULARIZERS: none (ReFL), kl, consistent_condition
    beta: float  # weight of the regulariser

    @property
    def slug(self) -> str:
        return f"{self.regularizer}-beta{self.beta:g}"


OBJECTIVES: tuple[Objective, ...] = (
    Objective("ReFL (no regulariser)", "none", 0.0),
    Objective("KL, β=1", "kl", 1.0),
    Objective("RFFT CC, β=0.1", "consistent_condition", 0.1),
    Objective("RFFT CC, β=1", "consistent_condition", 1.0),
    Objective("RFFT CC, β=10", "consistent_condition", 10.0),
)


@dataclass(frozen=True)
class RFFTStudySettings:
    train_products: int  # products the objectives train on (fresh, disjoint from the evaluation's)
    steps: int  # optimizer steps per objective (one micro-batch each)
    batch_size: int  # images per micro-batch
    learning_rate: float  # AdamW; the paper's 1e-5 goes with long runs at an effective batch of 128
    eval_products: int  # held-out products
    eval_prompts: int  # prompts per held-out product (wall colours rotate over all seven)
    eval_seeds: int  # seeds per product and prompt (>= 2: diversity is measured across them)
    objectives: tuple[Objective, ...] = OBJECTIVES

    def __post_init__(self) -> None:
        for name in ("train_products", "steps", "batch_size", "eval_products", "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"RFFTStudySettings.{name}={getattr(self, name)} must be >= 1")
        if self.eval_seeds < 2:
            raise ValueError(f"RFFTStudySettings.eval_seeds={self.eval_seeds} must be >= 2 (diversity needs pairs)")
        if not self.learning_rate > 0 or not self.objectives:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0 and objectives non-empty")

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> RFFTStudySettings:
        if ctx.quick:
            # two steps: at the first the regularisers are zero (student == teacher), so all objectives agree
            return cls(train_products=4, steps=2, batch_size=2, learning_rate=1e-3, eval_products=2, eval_prompts=1,
                       eval_seeds=2)
        # full: an optimizer step of 4 images costs ~2 s of CPU on one thread at 64 px and 25 denoising steps
        # (the no-grad rollout to the graded step and RFNet dominate), a held-out image ~0.5 s: ~12 min of CPU.
        # At lr 1e-3 and 40 steps ReFL's backgrounds visibly lose their variety (a development run: diversity
        # x0.53 of the original's, wall-colour accuracy 25% -> 8%).
        return cls(train_products=32, steps=40, batch_size=4, learning_rate=1e-3, eval_products=8, eval_prompts=3,
                   eval_seeds=3)


# ----------------------------------------------------------------------------------------------
# The evaluation set and its metrics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """Held-out images to make: item, prompt (RenderedPrompt) and seed per image; `groups` lists the
    indices of the images that share a product and a prompt (diversity is measured within a group)."""

    items: list
    prompts: list
    seeds: list[int]
    groups: list[list[int]]


def make_eval_set(ctx: ExperimentContext, settings: RFFTStudySettings) -> EvalSet:
    """Held-out products x prompts x seeds, the same for every model; prompts rotate the wall colour."""
    products = make_products(settings.eval_products, sub_seed(ctx.seed, "rfft-eval"), prefix="e")
    items, prompts, seeds, groups = [], [], [], []
    for i, item in enumerate(products):
        for j in range(settings.eval_prompts):
            wall = WALL_COLOR_NAMES[(i * settings.eval_prompts + j) % len(WALL_COLOR_NAMES)]
            prompt = synthad_prompt(sub_seed(ctx.seed, "rfft-eval-prompt", item.key, j), item.caption, wall_color=wall)
            groups.append(list(range(len(items), len(items) + settings.eval_seeds)))
            for s in range(settings.eval_seeds):
                items.append(item)
                prompts.append(prompt)
                seeds.append(image_seed(ctx, f"{item.key}/{j}", s, salt="rfft-eval/"))
    return EvalSet(items, prompts, seeds, groups)


def _tensors(images: Sequence[np.ndarray], alphas: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) images and (B, 1, S, S) product alphas, both in [0, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    a = torch.from_numpy(np.stack(alphas))[:, None].float().div_(255.0)
    return x, a


def evaluate(ctx: ExperimentContext, eval_set: EvalSet, images: list[np.ndarray],
             reference: list[np.ndarray] | None = None) -> dict[str, float]:
    """Available rates (RFNet argmax, oracle label), wall-colour accuracy, mean background diversity over
    the (product, prompt) groups, and the background distance to `reference` (the original's images)."""
    from reliable_ad.rfft.validation import background_distance, background_diversity

    items = eval_set.items
    verdicts = judge_rfnet(ctx, items, images)
    truths = judge_oracle(items, images)
    alphas = [prepare(item, img.shape[0]).alpha for item, img in zip(items, images)]
    walls = [wall_color_of_background(img, a) for img, a in zip(images, alphas)]
    x, a = _tensors(images, alphas)
    out = {
        "available_rfnet": float(np.mean([v.label == AVAILABLE for v in verdicts])),
        "p_available_rfnet": float(np.mean([v.p_available for v in verdicts])),
        "available_oracle": float(np.mean([t.label == AVAILABLE for t in truths])),
        "wall_accuracy": float(np.mean([w == p.slot_values["wall_color"] for w, p in zip(walls, eval_set.prompts)])),
        "diversity": float(np.mean([background_diversity(x[g], a[g]) for g in eval_set.groups])),
        "distance": 0.0,
    }
    if reference is not None:
        out["distance"] = background_distance(x, _tensors(reference, alphas)[0], a)
    return out


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def write_train_products(ctx: ExperimentContext, n: int, folder: Path) -> Path:
    """`n` fresh SynthAd products as PNG cut-outs with caption sidecars (what `rfft train` reads)."""
    from reliable_ad.synthad.products import write_product_png

    folder.mkdir(parents=True, exist_ok=True)
    for item in make_products(n, sub_seed(ctx.seed, "rfft-train"), prefix="t"):
        write_product_png(item.product, folder / f"{item.key}.png")
        atomic_write_text(folder / f"{item.key}.txt", item.caption)
    return folder


def rfft_config(ctx: ExperimentContext, settings: RFFTStudySettings, objective: Objective, products: Path):
    """The RFFT run of one objective; everything but the loss is the same for all objectives."""
    from dataclasses import replace

    from reliable_ad.generation.config import ModelConfig
    from reliable_ad.rfft.config import (DataConfig, LossConfig, OptimConfig, RFFTConfig, RuntimeConfig,
                                         ValidationConfig)

    sampling = replace(load_generator(ctx).sampling)  # training samples exactly as evaluation does
    steps = sampling.num_inference_steps
    return RFFTConfig(
        model=ModelConfig(model=ctx.model, safety_checker=False),
        sampling=sampling,
        rf_interval=(min(steps - 1, round(0.75 * steps)), steps),  # the paper's 30-40 of 40: the last quarter
        data=DataConfig(products=[str(products)], validation_fraction=0.0, preset=prompt_preset().name),
        loss=LossConfig(regularizer=objective.regularizer, beta=objective.beta),
        optim=OptimConfig(learning_rate=settings.learning_rate, batch_size=settings.batch_size,
                          gradient_accumulation_steps=1, max_steps=settings.steps),
        validation=ValidationConfig(every=0),
        runtime=RuntimeConfig(seed=ctx.seed, device="cpu" if ctx.device == "cpu" else "auto", checkpoint_every=0,
                              tensorboard=False),
    )


def rfnet_reward(ctx: ExperimentContext):
    """The RFFT judge: the ctx RFNet with the estimators it was trained with (those of the Inspector)."""
    from reliable_ad.rfft.feedback import RFNetJudge

    inspector = load_inspector(ctx)
    return RFNetJudge(inspector.model, inspector.processor, inspector.estimators["depth"],
                      inspector.estimators["salience"])


def train_objective(ctx: ExperimentContext, settings: RFFTStudySettings, objective: Objective, products: Path,
                    run_dir: Path, judge):
    """Fine-tune a fresh copy of the generator under `objective`; returns (its AdGenerator, step records)."""
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.rfft.trainer import RFFTTrainer

    cfg = rfft_config(ctx, settings, objective, products)
    trainer = RFFTTrainer.from_config(cfg, run_dir, judge=judge)
    trainer.write_config()
    records = trainer.run_steps(settings.steps)
    atomic_write_text(run_dir / "train_log.jsonl", "".join(json.dumps({"step": i + 1, **r}) + "\n"
                                                           for i, r in enumerate(records)))
    return AdGenerator(trainer.pipe, load_generator(ctx).sampling, trainer.info), records


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def collapse_reading(results: dict[str, dict], original: str, objectives: Sequence[Objective]) -> tuple[str, str]:
    """(details, verdict): per objective the diversity ratio, wall-colour accuracy and distance against the
    original, then whether ReFL collapsed and whether CC kept diversity and adherence. Read off the
    numbers with the collapse monitor's default rule (rfft.config.CollapseConfig) and a 10-point
    adherence drop."""
    from reliable_ad.rfft.config import CollapseConfig

    rule = CollapseConfig()
    base = results[original]
    details, refl, cc = [], [], []
    for objective in objectives:
        r = results[objective.name]
        ratio = r["diversity"] / base["diversity"] if base["diversity"] > 0 else float("nan")
        collapsed = ratio < rule.min_diversity_ratio or r["distance"] > rule.max_distance
        fell = base["wall_accuracy"] - r["wall_accuracy"] >= 0.10
        details.append(f"{objective.name}: diversity x{ratio:.2f} of the original's, wall-colour accuracy "
                       f"{100 * base['wall_accuracy']:.0f}% -> {100 * r['wall_accuracy']:.0f}%, distance "
                       f"{r['distance']:.3f} ({'collapsed' if collapsed else 'not collapsed'}; adherence "
                       f"{'fell' if fell else 'held'}).")
        entry = (ratio, r["wall_accuracy"], collapsed, fell)
        if objective.regularizer == "none":
            refl.append(entry)
        elif objective.regularizer == "consistent_condition":
            cc.append(entry)
    verdict = []
    if refl:
        bad = any(c or f for _, _, c, f in refl)
        verdict.append(f"ReFL {'lost' if bad else 'did not lose'} diversity or adherence "
                       f"({'collapsed' if any(c for _, _, c, _ in refl) else 'not collapsed'} by the monitor's rule).")
        if cc:
            kept = sum(not c and not f for _, _, c, f in cc)
            more_div = sum(ratio > refl[0][0] for ratio, _, _, _ in cc)
            more_acc = sum(acc > refl[0][1] for _, acc, _, _ in cc)
            verdict.append(f"CC kept both at {kept} of {len(cc)} β values; it kept more diversity than ReFL at "
                           f"{more_div} of {len(cc)} and more wall-colour accuracy at {more_acc} of {len(cc)}."
                           + ("" if bad else " With no collapse to prevent, this budget does not test CC."))
    chance = 1 / len(WALL_COLOR_NAMES)
    if base["wall_accuracy"] < 2 * chance:
        verdict.append(f"The original's wall-colour accuracy ({100 * base['wall_accuracy']:.0f}%) is near chance "
                       f"({100 * chance:.0f}%), so adherence has little room to fall: read it with care.")
    rule_text = (f"Rule: collapsed = diversity < {rule.min_diversity_ratio}x the original's or background distance > "
                 f"{rule.max_distance} (the trainer's collapse monitor); adherence fell = wall-colour accuracy down "
                 "by 10 points or more.")
    return " ".join(details + [rule_text]), " ".join(verdict)


def _plot(results: dict[str, dict], logs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    base = results[names[0]]
    metrics = [("available_rfnet", "available (RFNet)"), ("available_oracle", "available (oracle)"),
               ("wall_accuracy", "wall-colour accuracy"), ("diversity_ratio", "diversity / original's")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(metrics)
    for m, (key, label) in enumerate(metrics):
        values = [(results[n]["diversity"] / base["diversity"] if base["diversity"] > 0 else 0.0)
                  if key == "diversity_ratio" else results[n][key] for n in names]
        ax.bar(np.arange(len(names)) + (m - (len(metrics) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylim=(0, max(1.05, ax.get_ylim()[1])), title="held-out evaluation")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    for name, records in logs.items():
        ax2.plot(range(1, len(records) + 1), [r["p_available"] for r in records], marker=".", label=name)
    ax2.set(xlabel="optimizer step", ylabel="mean p(Available) in training", title="training feedback", ylim=(0, 1))
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _samples(images: dict[str, list[np.ndarray]], path: Path, columns: int = 8) -> None:
    """One row per model: the first `columns` held-out images (same products, prompts and seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(images)
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.6 + 1.0 * columns, 0.2 + 1.05 * len(rows)), squeeze=False)
    for ax, name in zip(axes[:, 0], rows):
        ax.imshow(np.concatenate(images[name][:columns], axis=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=1.5 / (1.6 + columns), right=0.99, top=0.98, bottom=0.02, hspace=0.08)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _load_part(folder: Path, key: dict) -> dict | None:
    """A model's finished part (metrics, training log, held-out images) from an earlier run with the same key."""
    done, npz = folder / "result.json", folder / "eval_images.npz"
    if not (done.is_file() and npz.is_file()):
        return None
    part = json.loads(done.read_text(encoding="utf-8"))
    if part.get("key") != key:
        return None
    with np.load(npz) as data:
        part["images"] = list(data["images"])
    return part


def _save_part(folder: Path, part: dict) -> None:
    """Images first, the result (the marker of a finished part) last, both atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.stack(part["images"]))
    atomic_write_bytes(folder / "eval_images.npz", buf.getvalue())
    atomic_write_json(folder / "result.json", {k: v for k, v in part.items() if k != "images"})


def run_part(ctx: ExperimentContext, settings: RFFTStudySettings, eval_set: EvalSet, objective: Objective | None,
             folder: Path, reference: list[np.ndarray] | None, products: Path | None, judge) -> dict:
    """Train (unless `objective` is None: the original model) and evaluate one model; read back when done."""
    key = json.loads(json.dumps({"ctx": ctx.to_dict(), "settings": asdict(settings),
                                 "objective": None if objective is None else asdict(objective)}))
    part = _load_part(folder, key)
    if part is not None:
        return part
    t0 = time.perf_counter()
    log, generator = [], None
    if objective is not None:
        generator, log = train_objective(ctx, settings, objective, products, folder, judge)
    train_seconds = time.perf_counter() - t0
    images = generate(ctx, eval_set.items, eval_set.prompts, eval_set.seeds, generator=generator)
    metrics = evaluate(ctx, eval_set, images, reference)
    part = {"key": key, "metrics": metrics, "train_log": log, "train_seconds": train_seconds if objective else None,
            "seconds": time.perf_counter() - t0, "images": images}
    _save_part(folder, part)
    del generator
    gc.collect()
    return part


def run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    """Train every objective, evaluate it and the original; tables, plots and training logs in `out_dir`.
    Models finished by an earlier run with the same settings are read back, not rerun."""
    with torch_threads():
        return _run_study(ctx, Path(out_dir))


def _run_study(ctx: ExperimentContext, out_dir: Path) -> dict:
    settings = RFFTStudySettings.for_context(ctx)
    eval_set = make_eval_set(ctx, settings)
    original = "original"
    parts = {original: run_part(ctx, settings, eval_set, None, out_dir / original, None, None, None)}
    products = write_train_products(ctx, settings.train_products, out_dir / "train_products")
    judge = None
    for objective in settings.objectives:
        if judge is None:
            judge = rfnet_reward(ctx)
        parts[objective.name] = run_part(ctx, settings, eval_set, objective, out_dir / objective.slug,
                                         parts[original]["images"], products, judge)

    results = {name: part["metrics"] for name, part in parts.items()}
    logs = {name: part["train_log"] for name, part in parts.items() if part["train_log"]}
    base_div = results[original]["diversity"]
    rows = []
    for name, part in parts.items():
        r, log = part["metrics"], part["train_log"]
        rows.append([name, r["available_rfnet"], r["available_oracle"], r["p_available_rfnet"], r["wall_accuracy"],
                     r["diversity"], r["diversity"] / base_div if base_div > 0 else None, r["distance"],
                     log[-1]["p_available"] if log else None, part["train_seconds"]])
    n_images = len(eval_set.items)
    details, verdict = collapse_reading(results, original, settings.objectives)
    note = (f"{settings.steps} optimizer steps x {settings.batch_size} images per objective on "
            f"{settings.train_products} training products (lr {settings.learning_rate:g}, same seeds for all); "
            f"evaluation on {n_images} held-out images ({settings.eval_products} products x {settings.eval_prompts} "
            f"prompts x {settings.eval_seeds} seeds). Diversity: mean pairwise background difference across the seeds "
            "of one product and prompt; distance: mean background difference to the original's image of the same "
            "seed (both on [0, 1] pixels at 32 px). " + verdict + " " + details)
    result_table = table(["model", "available (RFNet)", "available (oracle)", "mean p(Available) (RFNet)",
                          "wall-colour accuracy", "background diversity", "diversity / original's",
                          "distance to original", "last training p(Available)", "training seconds"], rows, note=note)
    figures = ["objectives.png", "samples.png"]
    _plot(results, logs, out_dir / figures[0])
    _samples({name: part["images"] for name, part in parts.items()}, out_dir / figures[1], columns=min(8, n_images))
    return study_result(
        {"RFFT objectives: held-out evaluation": result_table}, figures, sum(p["seconds"] for p in parts.values()),
        {**asdict(settings), "objectives": [asdict(o) for o in settings.objectives], "eval_images": n_images,
         "part_seconds": {name: round(p["seconds"], 2) for name, p in parts.items()}, **ctx.to_dict()},
        summary=_summary(results, original) + " " + verdict,
    )


def _summary(results: dict[str, dict], original: str) -> str:
    base = results[original]
    parts = [f"The original model's held-out images are Available for {100 * base['available_rfnet']:.0f}% by RFNet "
             f"and {100 * base['available_oracle']:.0f}% by the oracle."]
    for name, r in results.items():
        if name != original:
            parts.append(f"{name}: {100 * r['available_rfnet']:.0f}% / {100 * r['available_oracle']:.0f}%.")
    return " ".join(parts)
