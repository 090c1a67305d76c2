"""RFFT on SynthAd (docs/method.md §5): does fine-tuning on RFNet's feedback make more ads Available, does
ReFL (feedback alone) collapse the backgrounds, and does the Consistent Condition (CC) prevent it?

Three stages, each on the real `RFFTTrainer` (ControlNet only, graded step in the last quarter of the DDIM
loop, the ctx RFNet as the reward, micro-batches of `batch_size` images accumulated `accumulation` times):

1. Learning-rate sweep. ReFL at each rate of `sweep_lrs` for `sweep_steps` optimizer steps, and the
   original model on the very same micro-batches (no optimizer step: the trainer's micro-batches and noise
   follow from the seed and the micro-step only). The rise of a rate is its moving-average training
   reward at the end minus the original's on the same batches; the rate with the largest rise is chosen
   (`choose_learning_rate`). So a rate that lowers the reward on its own batches is never used to judge
   the objectives (a 40-step run at lr 1e-3 did exactly that).
2. Objectives at matched training reward. ReFL, a KL penalty and CC at several β, at the chosen rate, each
   trains until its moving-average reward gain over the original (same batches) reaches `target_share` of
   the chosen rate's rise, or `sweep_steps` steps (`reached_target`). Steps used and final gain are
   reported, so no objective wins by having trained further.
3. Held-out evaluation of the original and every objective on products x prompts x seeds: the abstaining
   oracle's Available rate over its decisive images (abstentions reported), the training RFNet, a second
   RFNet (the judge: `judge_rfnet`, default the training RFNet itself, then marked "not independent";
   reward hacking shows as the training RFNet rising while the oracle and the judge do not), background
   diversity across seeds, wall-colour adherence, distance to the original, and attempts until the first
   Available (the seeds of one product and prompt, in order, are the attempts).

The paper's claims are then read off paired bootstraps over held-out products (`claims`).

    python -m experiments.studies.rfft_study --out runs/rfft --judge-rfnet runs/rfnet-seed1   # one study
    python benchmarks/synthad_experiments.py --only rfft --judge-rfnet runs/rfnet-seed1        # via the driver
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.studies.common import (
    WALL_COLOR_NAMES,
    ExperimentContext,
    generate,
    image_seed,
    judge_oracle_decisive,
    judge_rfnet,
    load_generator,
    load_inspector,
    make_products,
    new_figure,
    prepare,
    prompt_preset,
    save_figure,
    study_result,
    sub_seed,
    synthad_prompt,
    table,
    wall_color_of_background,
)
from experiments.studies.recurrent_study import torch_threads
from experiments.studies.report import claim_verdict
from experiments.synthad.gates import proportion
from reliable_ad.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text

AVAILABLE = "Available"
BOOTSTRAP = 1000  # resamples of the held-out products
DIVERSITY_FLOOR = 0.8  # the claims' "diversity kept": at least this x the original's
ORIGINAL = "original"


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
    train_products: int  # products the runs train on (fresh, disjoint from the evaluation's)
    batch_size: int  # images per micro-batch
    accumulation: int  # micro-batches per optimizer step (the effective batch is batch_size x accumulation)
    sweep_lrs: tuple[float, ...]  # AdamW learning rates tried with ReFL
    sweep_steps: int  # optimizer steps per sweep run; also every objective's step cap
    window: int  # optimizer steps in the moving average of the training reward
    target_share: float  # matched reward: the share of the chosen rate's rise every objective must reach
    eval_products: int  # held-out products
    eval_prompts: int  # prompts per held-out product (wall colours rotate over all seven)
    eval_seeds: int  # seeds per product and prompt: the attempts, and the images diversity compares
    objectives: tuple[Objective, ...] = OBJECTIVES

    def __post_init__(self) -> None:
        for name in ("train_products", "batch_size", "accumulation", "sweep_steps", "window", "eval_products",
                     "eval_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"RFFTStudySettings.{name}={getattr(self, name)} must be >= 1")
        if self.eval_seeds < 2:
            raise ValueError(f"RFFTStudySettings.eval_seeds={self.eval_seeds} must be >= 2 (diversity needs pairs)")
        if self.window > self.sweep_steps:
            raise ValueError(f"RFFTStudySettings.window={self.window} exceeds sweep_steps={self.sweep_steps}; "
                             "pass a window of at most the sweep's length")
        if not self.sweep_lrs or any(not lr > 0 for lr in self.sweep_lrs) or not self.objectives:
            raise ValueError(f"sweep_lrs={self.sweep_lrs} must be non-empty and > 0, and objectives non-empty")
        if not 0 < self.target_share <= 1:
            raise ValueError(f"RFFTStudySettings.target_share={self.target_share} must be in (0, 1]")

    @property
    def eval_images(self) -> int:
        return self.eval_products * self.eval_prompts * self.eval_seeds

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> RFFTStudySettings:
        if ctx.quick:
            return cls(train_products=4, batch_size=2, accumulation=2, sweep_lrs=(1e-4, 1e-3), sweep_steps=2,
                       window=1, target_share=0.75, eval_products=2, eval_prompts=1, eval_seeds=3)
        # Full, on one core at 64 px and 25 denoising steps: a micro-batch of 4 costs ~2 s (~2.5 s with a
        # teacher pass), a held-out image ~0.3 s; measured (seed 0, shared 2-core machine) ~14.5 s per
        # optimizer step. Earlier runs, 10 steps on 32 products: the reward rose over the original's at 3e-5
        # (+0.032), 1e-4 (+0.019) and 3e-4 (+0.008; +0.050 in a second run) and fell at 1e-3 both times
        # (-0.166, -0.046), so 1e-3 is no longer tried; the rise did not carry to held-out products, not even
        # for the training RFNet (overfitting 160 images' worth of gradient on 32 products). Now 512
        # training products (an image's product is almost never seen twice) and 16 steps: sweep 3 x 16
        # steps ~12 min, objectives 5 x at most 16 steps ~19 min, evaluation 6 models x 216 images ~7 min.
        return cls(train_products=512, batch_size=4, accumulation=4, sweep_lrs=(3e-5, 1e-4, 3e-4),
                   sweep_steps=16, window=3, target_share=0.75, eval_products=12, eval_prompts=3, eval_seeds=6)


# ----------------------------------------------------------------------------------------------
# Pure rules: learning rate, matched reward, attempts, bootstrap, verdicts (unit-tested)
# ----------------------------------------------------------------------------------------------


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (fewer at the start)."""
    return [float(np.mean(values[max(0, i + 1 - window):i + 1])) for i in range(len(values))]


def reward_rise(rewards: Sequence[float], original: Sequence[float], window: int) -> float:
    """End-of-run moving-average reward minus the original model's on the same batches."""
    n = min(len(rewards), len(original))
    if n < window:
        raise ValueError(f"{n} steps for a moving average over {window}; train at least {window} steps")
    return float(np.mean(rewards[n - window:n]) - np.mean(original[n - window:n]))


def choose_learning_rate(rises: dict[float, float]) -> tuple[float, bool]:
    """(rate, rose): the rate with the largest reward rise (ties: the smaller rate), and whether that
    rise is above 0 (else no rate raised the reward, and the objectives are compared without one)."""
    if not rises:
        raise ValueError("no learning rates to choose from; give sweep_lrs")
    best = max(sorted(rises), key=lambda lr: rises[lr])  # max keeps the first (smallest) of equal rises
    return best, rises[best] > 0


def reached_target(rewards: Sequence[float], original: Sequence[float], target: float, window: int) -> bool:
    """Matched-reward stopping: the last `window` steps' mean reward, minus the original's on the same
    batches, is at least `target` (never before `window` steps)."""
    n = len(rewards)
    if n < window or len(original) < n:
        return False
    return float(np.mean(rewards[n - window:n]) - np.mean(original[n - window:n])) >= target


def attempts_until_available(groups: Sequence[Sequence[bool]]) -> dict[str, float | int | None]:
    """Per group (one product and prompt; its images in seed order are the attempts): attempts until
    the first Available image, the group's budget (its size) when none is. Mean attempts and the
    share of groups with an Available image within the budget."""
    attempts = [next((i + 1 for i, ok in enumerate(g) if ok), len(g)) for g in groups]
    return {"groups": len(groups), "budget": max((len(g) for g in groups), default=0),
            "mean_attempts": float(np.mean(attempts)) if attempts else None,
            "within_budget": float(np.mean([any(g) for g in groups])) if groups else None}


def paired_bootstrap(arrays: Sequence[np.ndarray], statistic: Callable[..., float], seed: int,
                     n: int = BOOTSTRAP) -> list[float] | None:
    """95% percentile interval of `statistic(*resampled)` over `n` resamples of the products: `arrays`
    hold one row per product (the same products in every array), all resampled with the same indices.
    None when the statistic is undefined in more than half of the resamples."""
    n_products = len(arrays[0])
    if not n_products or any(len(a) != n_products for a in arrays):
        raise ValueError(f"arrays have {[len(a) for a in arrays]} products; pass the same products to each")
    rng = np.random.default_rng([seed, 0xB007])
    values = []
    for _ in range(n):
        idx = rng.integers(0, n_products, n_products)
        with np.errstate(divide="ignore", invalid="ignore"):
            values.append(statistic(*(a[idx] for a in arrays)))
    v = np.array(values, dtype=float)
    v = v[np.isfinite(v)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if len(v) * 2 > n else None


# ----------------------------------------------------------------------------------------------
# The evaluation set and its per-image records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """Held-out images to make: item, prompt (RenderedPrompt), seed and key per image; `groups` lists the
    indices of the images that share a product and a prompt, in seed order (the attempts)."""

    items: list
    prompts: list
    seeds: list[int]
    keys: list[str]
    groups: list[list[int]]


def make_eval_set(ctx: ExperimentContext, settings: RFFTStudySettings) -> EvalSet:
    """Held-out products x prompts x seeds, the same for every model; prompts rotate the wall colour."""
    products = make_products(settings.eval_products, sub_seed(ctx.seed, "rfft-eval"), prefix="e")
    items, prompts, seeds, keys, groups = [], [], [], [], []
    for i, item in enumerate(products):
        for j in range(settings.eval_prompts):
            wall = WALL_COLOR_NAMES[(i * settings.eval_prompts + j) % len(WALL_COLOR_NAMES)]
            prompt = synthad_prompt(sub_seed(ctx.seed, "rfft-eval-prompt", item.key, j), item.caption, wall_color=wall)
            groups.append(list(range(len(items), len(items) + settings.eval_seeds)))
            for s in range(settings.eval_seeds):
                items.append(item)
                prompts.append(prompt)
                seeds.append(image_seed(ctx, f"{item.key}/{j}", s, salt="rfft-eval/"))
                keys.append(f"rfft-eval/{item.key}/{j}/{s}")
    return EvalSet(items, prompts, seeds, keys, groups)


def _tensors(images: Sequence[np.ndarray], alphas: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) images and (B, 1, S, S) product alphas, both in [0, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    a = torch.from_numpy(np.stack(alphas))[:, None].float().div_(255.0)
    return x, a


def rfnet_records(ctx: ExperimentContext, eval_set: EvalSet, images: list[np.ndarray]) -> list[dict]:
    """The ctx RFNet's (label, p_available) per image."""
    return [{"label": v.label, "p_available": float(v.p_available)} for v in judge_rfnet(ctx, eval_set.items, images)]


def image_records(ctx: ExperimentContext, eval_set: EvalSet, images: list[np.ndarray],
                  reference: list[np.ndarray] | None) -> dict[str, Any]:
    """Per image: the training RFNet's and the abstaining oracle's verdicts and the wall colour's match;
    per group: background diversity; and the mean background distance to `reference`."""
    from reliable_ad.rfft.validation import background_distance, background_diversity

    items = eval_set.items
    oracle = judge_oracle_decisive(items, images, eval_set.keys)
    alphas = [prepare(item, img.shape[0]).alpha for item, img in zip(items, images)]
    walls = [wall_color_of_background(img, a) for img, a in zip(images, alphas)]
    x, a = _tensors(images, alphas)
    return {
        "product": [item.key for item in items],
        "rfnet": rfnet_records(ctx, eval_set, images),
        "oracle": [{"label": o.label, "available": o.available, "decisive": o.decisive} for o in oracle],
        "wall_ok": [w == p.slot_values["wall_color"] for w, p in zip(walls, eval_set.prompts)],
        "diversity": [background_diversity(x[g], a[g]) for g in eval_set.groups],
        "distance": background_distance(x, _tensors(reference, alphas)[0], a) if reference is not None else 0.0,
    }


def model_metrics(records: dict[str, Any], judge: list[dict], groups: Sequence[Sequence[int]]) -> dict[str, Any]:
    """A model's held-out figures from its image records and the judge RFNet's verdicts."""
    oracle = records["oracle"]
    decisive = [o for o in oracle if o["decisive"]]
    good = [o["decisive"] and o["available"] for o in oracle]
    return {
        "oracle": proportion(sum(o["available"] for o in decisive), len(decisive)),
        "abstained": proportion(len(oracle) - len(decisive), len(oracle)),
        "rfnet": proportion(sum(r["label"] == AVAILABLE for r in records["rfnet"]), len(records["rfnet"])),
        "judge": proportion(sum(r["label"] == AVAILABLE for r in judge), len(judge)),
        "wall_accuracy": float(np.mean(records["wall_ok"])),
        "diversity": float(np.mean(records["diversity"])),
        "distance": float(records["distance"]),
        "attempts": attempts_until_available([[good[i] for i in g] for g in groups]),
    }


def per_product(records: dict[str, Any], groups: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Per held-out product (sorted): oracle [decisive Available, decisive] counts and mean diversity."""
    products = sorted(set(records["product"]))
    counts = {p: [0, 0] for p in products}
    for p, o in zip(records["product"], records["oracle"]):
        if o["decisive"]:
            counts[p][0] += o["available"]
            counts[p][1] += 1
    div = {p: [] for p in products}
    for g, value in zip(groups, records["diversity"]):
        div[records["product"][g[0]]].append(value)
    return {"oracle": np.array([counts[p] for p in products], dtype=float),
            "diversity": np.array([np.mean(div[p]) for p in products], dtype=float)}


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


def rfft_config(ctx: ExperimentContext, settings: RFFTStudySettings, objective: Objective, learning_rate: float,
                products: Path):
    """One RFFT run; everything but the loss and the rate is the same for all runs (and so are the
    micro-batches and their noise: they follow from the seed and the micro-step)."""
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
        optim=OptimConfig(learning_rate=learning_rate, batch_size=settings.batch_size,
                          gradient_accumulation_steps=settings.accumulation, max_steps=settings.sweep_steps),
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


def original_steps(trainer, n: int) -> list[dict]:
    """The original model's rewards on the micro-batches of `n` optimizer steps: the trainer's own
    training steps with the gradients dropped instead of applied."""
    out = []
    for _ in range(n):
        t0, rewards = time.perf_counter(), []
        for _ in range(trainer.cfg.optim.gradient_accumulation_steps):
            rewards.append(trainer.training_step(trainer.micro_step)["p_available"])
            trainer.micro_step += 1
        trainer.optimizer.zero_grad(set_to_none=True)
        out.append({"p_available": float(np.mean(rewards)), "seconds": time.perf_counter() - t0})
    return out


def train_run(ctx: ExperimentContext, settings: RFFTStudySettings, objective: Objective | None, learning_rate: float,
              products: Path, run_dir: Path, judge, *, stop: Callable[[list[float]], bool] | None = None):
    """Train a fresh copy of the generator (objective None: the original, gradients dropped) for up to
    `sweep_steps` optimizer steps, stopping early when `stop(rewards so far)`; (trainer, step records)."""
    from tqdm.auto import tqdm

    from reliable_ad.rfft.trainer import RFFTTrainer

    cfg = rfft_config(ctx, settings, objective or OBJECTIVES[0], learning_rate, products)
    trainer = RFFTTrainer.from_config(cfg, run_dir, judge=judge)
    trainer.write_config()
    records: list[dict] = []

    with tqdm(total=settings.sweep_steps, desc=f"rfft {run_dir.name}", leave=False) as bar:
        while len(records) < settings.sweep_steps:
            records += original_steps(trainer, 1) if objective is None else trainer.run_steps(1)
            bar.update(1)
            bar.set_postfix(p_available=f"{records[-1]['p_available']:.3f}")
            if stop is not None and stop([r["p_available"] for r in records]):
                break
    atomic_write_text(run_dir / "train_log.jsonl", "".join(json.dumps({"step": i + 1, **r}) + "\n"
                                                           for i, r in enumerate(records)))
    return trainer, records


# ----------------------------------------------------------------------------------------------
# Parts: finished pieces are saved and read back by a rerun with the same key
# ----------------------------------------------------------------------------------------------


def _load_part(folder: Path, key: dict) -> dict | None:
    done = folder / "result.json"
    if not done.is_file():
        return None
    part = json.loads(done.read_text(encoding="utf-8"))
    if part.get("key") != key:
        return None
    npz = folder / "eval_images.npz"
    if part.get("has_images"):
        if not npz.is_file():
            return None
        with np.load(npz) as data:
            part["images"] = list(data["images"])
    return part


def _save_part(folder: Path, part: dict) -> None:
    """Images first, the result (the marker of a finished part) last, both atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    if "images" in part:
        buf = io.BytesIO()
        np.savez_compressed(buf, images=np.stack(part["images"]))
        atomic_write_bytes(folder / "eval_images.npz", buf.getvalue())
    atomic_write_json(folder / "result.json", {**{k: v for k, v in part.items() if k != "images"},
                                               "has_images": "images" in part})


def _key(**fields) -> dict:
    return json.loads(json.dumps(fields))


def sweep_part(ctx, settings, lr: float | None, products: Path, folder: Path, judge) -> dict:
    """One sweep run (lr None: the original on the same batches): its training rewards."""
    key = _key(ctx=ctx.to_dict(), settings=asdict(settings), lr=lr)
    part = _load_part(folder, key)
    if part is None:
        t0 = time.perf_counter()
        trainer, log = train_run(ctx, settings, None if lr is None else OBJECTIVES[0], lr or settings.sweep_lrs[0],
                                 products, folder, judge)
        del trainer
        gc.collect()
        part = {"key": key, "train_log": log, "seconds": time.perf_counter() - t0}
        _save_part(folder, part)
    return part


def model_part(ctx, settings, eval_set: EvalSet, objective: Objective | None, folder: Path, *, lr: float = 0.0,
               original: list[float] | None = None, target: float = math.inf, reference=None, products=None,
               judge=None) -> dict:
    """Train `objective` to the matched reward (None: the original model, untrained) and make and judge
    its held-out images."""
    key = _key(ctx=ctx.to_dict(), settings=asdict(settings),
               objective=None if objective is None else asdict(objective), lr=lr,
               target=target if math.isfinite(target) else None)
    part = _load_part(folder, key)
    if part is not None:
        return part
    t0 = time.perf_counter()
    log, generator = [], None
    if objective is not None:
        from reliable_ad.generation.generator import AdGenerator

        trainer, log = train_run(ctx, settings, objective, lr, products, folder, judge,
                                 stop=lambda r: reached_target(r, original, target, settings.window))
        generator = AdGenerator(trainer.pipe, load_generator(ctx).sampling, trainer.info)
    train_seconds = time.perf_counter() - t0
    images = generate(ctx, eval_set.items, eval_set.prompts, eval_set.seeds, generator=generator)
    part = {"key": key, "records": image_records(ctx, eval_set, images, reference), "train_log": log,
            "train_seconds": train_seconds if objective else None, "seconds": time.perf_counter() - t0,
            "images": images}
    _save_part(folder, part)
    del generator
    gc.collect()
    return part


def _check_settings(out_dir: Path, ctx: ExperimentContext, settings: RFFTStudySettings) -> None:
    """A study folder belongs to one context and one set of sizes: refuse to mix them."""
    path, current = out_dir / "settings.json", _key(ctx=ctx.to_dict(), settings=asdict(settings))
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != current:
            changed = sorted(k for part in ("ctx", "settings") for k in set(old.get(part, {})) | set(current[part])
                             if old.get(part, {}).get(k) != current[part].get(k))
            raise ValueError(f"{out_dir} holds an RFFT study made with other settings ({', '.join(changed)} "
                             "differ); rerun with the same settings to resume, or pass another output folder")
    atomic_write_json(path, current)


# ----------------------------------------------------------------------------------------------
# The study
# ----------------------------------------------------------------------------------------------


def run_study(ctx: ExperimentContext, out_dir: Path, *, judge_rfnet: str | None = None) -> dict:
    """Sweep, objectives at matched reward, held-out evaluation, claims; tables and figures in `out_dir`.
    `judge_rfnet`: the second RFNet (preset or folder); default ctx.judge_rfnet, else ctx.rfnet (then
    reported as not independent). Parts finished by an earlier run are read back, not rerun."""
    judge_rfnet = judge_rfnet or ctx.judge_rfnet or ctx.rfnet
    with torch_threads():
        return _run_study(ctx, Path(out_dir), judge_rfnet)


def run_sweep(ctx: ExperimentContext, settings: RFFTStudySettings, out_dir: Path, products: Path, reward):
    """Stage 1, the learning-rate sweep (ReFL) against the original on the same batches:
    (original's part, {lr: part}, {lr: rise}, chosen lr, whether it rose)."""
    base = sweep_part(ctx, settings, None, products, out_dir / "sweep" / ORIGINAL, reward)
    sweep = {lr: sweep_part(ctx, settings, lr, products, out_dir / "sweep" / f"lr{lr:g}", reward)
             for lr in settings.sweep_lrs}
    rises = {lr: reward_rise(_rewards(p), _rewards(base), settings.window) for lr, p in sweep.items()}
    return (base, sweep, rises, *choose_learning_rate(rises))


def _start(ctx: ExperimentContext, out_dir: Path):
    settings = RFFTStudySettings.for_context(ctx)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, ctx, settings)
    products = write_train_products(ctx, settings.train_products, out_dir / "train_products")
    return settings, products, rfnet_reward(ctx)


def sweep_only(ctx: ExperimentContext, out_dir: Path) -> dict:
    """Stage 1 alone (a quick look at whether the reward rises): its table and figure."""
    with torch_threads():
        settings, products, reward = _start(ctx, Path(out_dir))
        base, sweep, rises, lr, rose = run_sweep(ctx, settings, Path(out_dir), products, reward)
        return {"table": sweep_table(settings, sweep, base, rises, lr, rose),
                "figure": sweep_figure(settings, sweep, _rewards(base), lr, Path(out_dir))}


def _run_study(ctx: ExperimentContext, out_dir: Path, judge_rfnet: str) -> dict:
    settings, products, reward = _start(ctx, out_dir)

    base, sweep, rises, lr, rose = run_sweep(ctx, settings, out_dir, products, reward)
    original = _rewards(base)
    target = settings.target_share * rises[lr] if rose else math.inf

    # 2. + 3. objectives at matched reward, and the held-out evaluation
    eval_set = make_eval_set(ctx, settings)
    parts = {ORIGINAL: model_part(ctx, settings, eval_set, None, out_dir / ORIGINAL)}
    for objective in settings.objectives:
        parts[objective.name] = model_part(ctx, settings, eval_set, objective, out_dir / objective.slug, lr=lr,
                                           original=original, target=target, reference=parts[ORIGINAL]["images"],
                                           products=products, judge=reward)
    judge_ctx = replace(ctx, rfnet=judge_rfnet)
    judges = {name: p["records"]["rfnet"] if judge_rfnet == ctx.rfnet else
              rfnet_records(judge_ctx, eval_set, p["images"]) for name, p in parts.items()}
    metrics = {name: model_metrics(p["records"], judges[name], eval_set.groups) for name, p in parts.items()}
    products_data = {name: per_product(p["records"], eval_set.groups) for name, p in parts.items()}

    independent = judge_rfnet != ctx.rfnet
    cc_best = best_cc(metrics, settings.objectives)
    claims = make_claims(metrics, products_data, settings.objectives, cc_best, ctx.seed)
    tables = {
        "RFFT learning-rate sweep (ReFL, training reward on its own batches)":
            sweep_table(settings, sweep, base, rises, lr, rose),
        "RFFT objectives at matched training reward": objectives_table(settings, parts, original, target, lr),
        "RFFT objectives: held-out evaluation": eval_table(settings, metrics, judge_rfnet, independent, cc_best),
    }
    figures = [sweep_figure(settings, sweep, original, lr, out_dir),
               objectives_figure(settings, parts, original, target, out_dir),
               eval_figure(metrics, out_dir),
               samples_figure({name: p["images"] for name, p in parts.items()}, out_dir,
                              columns=min(8, settings.eval_images))]
    result = study_result(
        tables, figures, sum(p["seconds"] for p in [base, *sweep.values(), *parts.values()]),
        {**asdict(settings), "objectives": [asdict(o) for o in settings.objectives], "eval_images": settings.eval_images,
         "chosen_lr": lr, "reward_rose": rose, "target_gain": None if math.isinf(target) else target,
         "judge_rfnet": judge_rfnet, "judge_independent": independent, "cc_best": cc_best,
         "part_seconds": {name: round(p["seconds"], 2) for name, p in parts.items()}, **ctx.to_dict()},
        summary=summary(metrics, claims, lr, rose, rises[lr], independent),
    )
    result["claims"] = claims
    return result


def best_cc(metrics: dict[str, dict], objectives: Sequence[Objective]) -> str | None:
    """The CC objective the claims use: the highest Available rate by the judge RFNet, so the oracle rate
    that decides the first claim is not also the one that picks β (ties: the first listed)."""
    cc = [o.name for o in objectives if o.regularizer == "consistent_condition"]
    return max(cc, key=lambda n: metrics[n]["judge"]["rate"] or 0.0) if cc else None


def make_claims(metrics: dict[str, dict], data: dict[str, dict], objectives: Sequence[Objective], cc: str | None,
                seed: int) -> list[dict]:
    """The paper's RFFT claims, each decided by a paired bootstrap over held-out products."""
    claims = []
    o = data[ORIGINAL]

    def rate_gain(a, b):
        return a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()

    def diversity_claim(claim: str, paper: str, name: str, above: bool) -> dict:
        ratio = paired_bootstrap([data[name]["diversity"], o["diversity"]], lambda a, b: a.mean() / b.mean(), seed)
        return {"claim": claim, "paper": paper, "measured": f"{name}: x{_ratio(metrics, name)} (95% {_interval(ratio)})",
                "interval": ratio, "verdict": claim_verdict(ratio, DIVERSITY_FLOOR, above=above)}

    if cc is not None:
        gain = paired_bootstrap([data[cc]["oracle"], o["oracle"]], rate_gain, seed)
        m, m0 = metrics[cc]["oracle"], metrics[ORIGINAL]["oracle"]
        point = None if m["rate"] is None or m0["rate"] is None else m["rate"] - m0["rate"]
        claims.append({
            "claim": "RFFT with CC raises the first-attempt Available rate (oracle)",
            "paper": "70.1% -> 86.3% (human reviewers)",
            "measured": f"{cc}: {_pct(m0['rate'])} -> {_pct(m['rate'])} over decisive images, every seed a "
                        f"first attempt (n {m0['n']} / {m['n']}), difference {_pp(point)} (95% {_pp_interval(gain)})",
            "interval": gain, "verdict": claim_verdict(gain)})
        claims.append(diversity_claim(f"CC keeps background diversity >= {DIVERSITY_FLOOR}x the original's",
                                      "backgrounds keep their character (supplemental Fig. 5, §6.2)", cc, True))
    for refl in (x.name for x in objectives if x.regularizer == "none"):
        claims.append(diversity_claim(f"ReFL collapses (diversity falls below {DIVERSITY_FLOOR}x the original's) "
                                      "without CC", "every background the same degraded pattern (supplemental Fig. 5)",
                                      refl, False))
    return claims


# ----------------------------------------------------------------------------------------------
# Tables, figures, summary
# ----------------------------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _pp(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} pp"


def _pp_interval(interval: Sequence[float] | None) -> str:
    return "undefined" if interval is None else f"{100 * interval[0]:+.1f} to {100 * interval[1]:+.1f} pp"


def _interval(interval: Sequence[float] | None) -> str:
    return "undefined" if interval is None else f"x{interval[0]:.2f} to x{interval[1]:.2f}"


def _ratio(metrics: dict[str, dict], name: str) -> str:
    base = metrics[ORIGINAL]["diversity"]
    return f"{metrics[name]['diversity'] / base:.2f}" if base > 0 else "n/a"


def _rewards(part: dict) -> list[float]:
    return [r["p_available"] for r in part["train_log"]]


def sweep_table(settings, sweep: dict, base: dict, rises: dict, lr: float, rose: bool) -> dict:
    w = settings.window
    original = _rewards(base)
    rows = [["original (no step)", "-", float(np.mean(original[:w])), float(np.mean(original[-w:])), 0.0,
             len(original), base["seconds"], ""]]
    for rate, part in sweep.items():  # rates as text: a table rounds its numbers to 4 digits (3e-05 -> 0)
        r = _rewards(part)
        rows.append([f"ReFL lr {rate:g}", f"{rate:g}", float(np.mean(r[:w])), float(np.mean(r[-w:])), rises[rate], len(r),
                     part["seconds"], "chosen" if rate == lr else ""])
    note = (f"Each run: {settings.sweep_steps} optimizer steps of {settings.accumulation} micro-batches x "
            f"{settings.batch_size} images on {settings.train_products} training products, the same micro-batches "
            f"and noise for every rate and for the original (which drops its gradients). Reward: mean RFNet "
            f"p(Available) on the step's own images; start/end: means over the first/last {w} steps. Rise: end "
            "minus the original's end on the same batches. Rule: the rate with the largest rise is chosen"
            + ("." if rose else "; NO rate raised the reward, so the objectives below train to their step cap "
                                "and are not compared at a raised reward."))
    return table(["run", "learning rate", "reward at start", "reward at end", "rise over the original",
                  "optimizer steps", "seconds", "chosen"], rows, note=note)


def objectives_table(settings, parts: dict, original: list[float], target: float, lr: float) -> dict:
    rows = []
    for name, part in parts.items():
        if name == ORIGINAL:
            continue
        r, n = _rewards(part), len(part["train_log"])
        w = min(settings.window, n)
        gain = float(np.mean(r[n - w:n]) - np.mean(original[n - w:n]))
        rows.append([name, n, float(np.mean(r[n - w:n])), gain, "yes" if gain >= target else "no (step cap)",
                     part["train_seconds"]])
    target_text = "none (no rate raised the reward)" if math.isinf(target) else f"{target:+.4f}"
    note = (f"At lr {lr:g}, each objective trains until its mean reward over the last {settings.window} steps "
            f"exceeds the original's on the same batches by the target gain {target_text} "
            f"({settings.target_share:g} of the chosen rate's rise), or {settings.sweep_steps} steps.")
    return table(["objective", "optimizer steps", "final training reward", "gain over the original",
                  "reached the target", "training seconds"], rows, note=note)


def eval_table(settings, metrics: dict, judge_rfnet: str, independent: bool, cc_best: str | None) -> dict:
    judge_col = f"available (judge RFNet{'' if independent else ', not independent'})"
    rows = []
    base = metrics[ORIGINAL]["diversity"]
    for name, m in metrics.items():
        a = m["attempts"]
        rows.append([name, m["oracle"]["rate"], f"{m['oracle']['ci95'][0]:.2f}-{m['oracle']['ci95'][1]:.2f}",
                     m["oracle"]["n"], m["abstained"]["rate"], m["rfnet"]["rate"], m["judge"]["rate"],
                     m["wall_accuracy"], m["diversity"], m["diversity"] / base if base > 0 else None, m["distance"],
                     a["mean_attempts"], a["within_budget"]])
    note = (f"{settings.eval_images} held-out images ({settings.eval_products} products x {settings.eval_prompts} "
            f"prompts x {settings.eval_seeds} seeds). Oracle: Available rate over the images it is decisive on "
            "(Wilson 95% interval, n decisive), abstentions beside it. Training RFNet: the reward; judge RFNet: "
            f"{judge_rfnet!r}" + ("" if independent else " = the training RFNet, so NOT an independent check; pass "
                                  "--judge-rfnet with a second RFNet") + ". Reward "
            "hacking shows as the training RFNet rising while the oracle and the judge do not. Attempts: the seeds "
            "of one product and prompt in order; attempts until the first decisive oracle-Available image, a "
            f"group with none counting as the budget ({settings.eval_seeds}); paper: 1.77 -> 1.17 attempts per "
            "available image. Diversity: mean pairwise background difference across the seeds of one product and "
            "prompt; distance: mean background difference to the original's image of the same seed ([0, 1] pixels "
            f"at 32 px). CC β used by the claims: {cc_best} (highest judge-RFNet rate).")
    return table(["model", "available (oracle, decisive)", "oracle 95% interval", "decisive images",
                  "oracle abstention rate", "available (training RFNet)", judge_col, "wall-colour accuracy",
                  "background diversity", "diversity / original's", "distance to original",
                  "mean attempts to Available", "Available within budget"], rows, note=note)


def sweep_figure(settings, sweep: dict, original: list[float], lr: float, out_dir: Path) -> str:
    fig = new_figure(6.5, 4.0)
    ax = fig.subplots()
    steps = np.arange(1, len(original) + 1)
    ax.plot(steps, moving_average(original, settings.window), "k--", label="original (same batches)")
    for rate, part in sweep.items():
        ax.plot(steps[:len(part["train_log"])], moving_average(_rewards(part), settings.window), marker=".",
                lw=2.5 if rate == lr else 1.2, label=f"ReFL lr {rate:g}" + (" (chosen)" if rate == lr else ""))
    ax.set(xlabel="optimizer step", ylabel=f"training reward, mean over {settings.window} steps",
           title="learning-rate sweep: RFNet p(Available) on own batches")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "sweep")


def objectives_figure(settings, parts: dict, original: list[float], target: float, out_dir: Path) -> str:
    fig = new_figure(6.5, 4.0)
    ax = fig.subplots()
    for name, part in parts.items():
        if name != ORIGINAL:
            r = _rewards(part)
            gain = np.subtract(moving_average(r, settings.window), moving_average(original[:len(r)], settings.window))
            ax.plot(np.arange(1, len(r) + 1), gain, marker=".", label=name)
    if math.isfinite(target):
        ax.axhline(target, color="k", ls="--", lw=1, label="target gain")
    ax.set(xlabel="optimizer step", ylabel="training reward gain over the original",
           title="objectives trained to a matched reward")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_dir, "objectives")


def eval_figure(metrics: dict, out_dir: Path) -> str:
    names = list(metrics)
    base = metrics[ORIGINAL]["diversity"]
    bars = [("available (oracle, decisive)", [m["oracle"]["rate"] or 0.0 for m in metrics.values()]),
            ("available (training RFNet)", [m["rfnet"]["rate"] for m in metrics.values()]),
            ("available (judge RFNet)", [m["judge"]["rate"] for m in metrics.values()]),
            ("wall-colour accuracy", [m["wall_accuracy"] for m in metrics.values()]),
            ("diversity / original's", [m["diversity"] / base if base > 0 else 0.0 for m in metrics.values()])]
    fig = new_figure(9.0, 4.2)
    ax = fig.subplots()
    width = 0.8 / len(bars)
    for k, (label, values) in enumerate(bars):
        ax.bar(np.arange(len(names)) + (k - (len(bars) - 1) / 2) * width, values, width, label=label)
    ax.axhline(DIVERSITY_FLOOR, color="k", ls=":", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylim=(0, max(1.05, ax.get_ylim()[1])), title="held-out evaluation")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, out_dir, "evaluation")


def samples_figure(images: dict[str, list[np.ndarray]], out_dir: Path, columns: int = 8) -> str:
    """One row per model: the first `columns` held-out images (same products, prompts and seeds)."""
    rows = list(images)
    fig = new_figure(1.6 + 1.0 * columns, 0.2 + 1.05 * len(rows))
    axes = fig.subplots(len(rows), 1, squeeze=False)
    for ax, name in zip(axes[:, 0], rows):
        ax.imshow(np.concatenate(images[name][:columns], axis=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    return save_figure(fig, out_dir, "samples")


def summary(metrics: dict, claims: list[dict], lr: float, rose: bool, rise: float, independent: bool) -> str:
    base = metrics[ORIGINAL]
    out = [f"Learning rate {lr:g} chosen by the sweep: the training reward {'rose' if rose else 'did not rise'} "
           f"({rise:+.3f} over the original on the same batches).",
           f"Original: {_pct(base['oracle']['rate'])} Available by the oracle (decisive images, "
           f"{_pct(base['abstained']['rate'])} abstained), {_pct(base['rfnet']['rate'])} by the training RFNet, "
           f"{base['attempts']['mean_attempts']:.2f} attempts to an Available image."]
    for name, m in metrics.items():
        if name != ORIGINAL:
            out.append(f"{name}: oracle {_pct(m['oracle']['rate'])}, training RFNet {_pct(m['rfnet']['rate'])}, "
                       f"judge {_pct(m['judge']['rate'])}, diversity x{_ratio(metrics, name)}, "
                       f"{m['attempts']['mean_attempts']:.2f} attempts.")
    if not independent:
        out.append("The judge RFNet is the training RFNet: reward hacking is visible only against the oracle.")
    out += [f"Claim '{c['claim']}': {c['verdict']} ({c['measured']})." for c in claims]
    return " ".join(out)


# ----------------------------------------------------------------------------------------------
# Command line: this study alone
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="RFFT study on SynthAd alone (the driver is "
                                            "benchmarks/synthad_experiments.py): sweep, matched-reward objectives, "
                                            "held-out evaluation, claims.")
    p.add_argument("--out", type=Path, required=True, help="study folder (finished parts are read back)")
    p.add_argument("--judge-rfnet", default=None,
                   help="second RFNet (preset or folder) for the held-out check; default --rfnet "
                        "(then marked not independent)")
    p.add_argument("--quick", action="store_true", help="small sizes: checks the pipeline in minutes")
    p.add_argument("--model", default="synthad", help="generator preset or folder (default synthad)")
    p.add_argument("--rfnet", default="synthad", help="training RFNet: the reward (default synthad)")
    p.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default 10 quick, 25 full)")
    p.add_argument("--sweep-only", action="store_true", help="run stage 1 (the learning-rate sweep) only")
    args = p.parse_args(argv)
    ctx = ExperimentContext(model=args.model, rfnet=args.rfnet, quick=args.quick, seed=args.seed, steps=args.steps)
    if args.sweep_only:
        sweep = sweep_only(ctx, args.out)
        atomic_write_json(args.out / "sweep.json", sweep)
        print(json.dumps(sweep["table"], indent=1))
        return 0
    result = run_study(ctx, args.out, judge_rfnet=args.judge_rfnet)
    atomic_write_json(args.out / "result.json", result)
    print(result["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
