"""What the SynthAd studies share: the run context, SynthAd products and prompts, the cached generator
and judges, wall-colour adherence, and the study result format the driver turns into a report.

A study module has ``run_study(ctx: ExperimentContext, out_dir: Path) -> dict`` returning
``study_result(tables, figures, seconds, settings)``: JSON-able, numbers finite or None (None = not
defined, e.g. AP on a test set without an Available image), figures as PNG paths relative to out_dir.

    ctx = ExperimentContext(model="tiny", rfnet="tiny", quick=True)
    items = make_products(4, seed=ctx.seed)
    gen = load_generator(ctx)
    prompt = synthad_prompt(7, items[0].caption)
    images = generate(ctx, items, [prompt] * 4, seeds=[image_seed(ctx, it.key, 0) for it in items])
    verdicts = judge_oracle(items, images)
    judged = judge_oracle_decisive(items, images, keys=[f"{it.key}/0" for it in items])  # abstains on edge cases
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reliable_ad.synthad.generated import (ProductItem, label_generated, make_products,  # noqa: F401 - re-exported
                                           prepared, shared_oracle, sub_seed)
from reliable_ad.synthad.world import WALL_COLORS, nearest_wall_color

PROMPT_PRESET = "synthad"  # the generation prompt preset whose format the SynthAd generator learnt
DEFAULT_STEPS = {True: 10, False: 25}  # denoising steps, quick vs full (the paper's 40 is slow on 2 cores)


# ----------------------------------------------------------------------------------------------
# The run context
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentContext:
    """Settings every study reads. Studies size themselves from ``quick``; everything random follows
    from ``seed``."""

    model: str = "synthad"  # generator preset (generation.models.MODEL_PRESETS) or base/+controlnet/ folder
    rfnet: str = "synthad"  # RFNet preset or saved folder: the judge and the source of the estimators
    quick: bool = False  # small sizes for a smoke run (minutes); numbers then mean little
    seed: int = 0  # run seed: products, prompts, noise, splits, training
    device: str = "cpu"  # torch device for generation, RFNet and training
    steps: int | None = None  # denoising steps; None = DEFAULT_STEPS[quick]
    judge_rfnet: str | None = None  # a second RFNet (another training seed) RFFT is also judged by; None = rfnet

    def __post_init__(self) -> None:
        for name in ("model", "rfnet", "device"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ExperimentContext.{name}={value!r} must be a non-empty string")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"ExperimentContext.seed={self.seed!r} must be an int in [0, 2**63)")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise ValueError(f"ExperimentContext.steps={self.steps!r} must be an int >= 1 or None (the default)")
        if self.judge_rfnet is not None and (not isinstance(self.judge_rfnet, str) or not self.judge_rfnet):
            raise ValueError(f"ExperimentContext.judge_rfnet={self.judge_rfnet!r} must be a non-empty string or None")

    @property
    def num_inference_steps(self) -> int:
        return self.steps or DEFAULT_STEPS[self.quick]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "rfnet": self.rfnet, "quick": self.quick, "seed": self.seed,
                "device": self.device, "num_inference_steps": self.num_inference_steps,
                "judge_rfnet": self.judge_rfnet or self.rfnet}


def image_seed(ctx: ExperimentContext, product_key: str, attempt: int, salt: str = "") -> int:
    """The noise seed of one image: depends on (ctx.seed, product, attempt, salt) only."""
    from reliable_ad.generation.seeds import derive_seed

    return derive_seed(ctx.seed, f"{salt}{product_key}", attempt)


# ----------------------------------------------------------------------------------------------
# Products and prompts
# ----------------------------------------------------------------------------------------------


# ProductItem, make_products and sub_seed are reliable_ad.synthad.generated's (imported above): the
# `reliable-ad synthad generated` command keys its products and seeds the same way.


@functools.lru_cache(maxsize=4)
def prompt_preset(name: str = PROMPT_PRESET):
    from reliable_ad.generation.prompts import get_preset

    return get_preset(name)


def synthad_prompt(seed: int, caption: str, **slot_values: str):
    """The ``synthad`` preset rendered for a product with this ``caption``, with slot values drawn
    from ``seed`` (a RenderedPrompt: ``.prompt``, ``.negative_prompt``, ``.slot_values`` with
    wall_color, surface, clutter); keyword arguments fix slots, e.g.
    ``synthad_prompt(3, "a small red lipstick", wall_color="beige")``."""
    return prompt_preset().render(int(seed), slot_values=slot_values or None, caption=caption)


# ----------------------------------------------------------------------------------------------
# Generator and judges (cached per process: studies share them)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _generator(model: str, device: str, steps: int):
    from reliable_ad.cli.synthad import load_generator

    return load_generator(model, device=device, steps=steps, batch_size=8)


def load_generator(ctx: ExperimentContext):
    """The AdGenerator for ``ctx.model`` at ``ctx.num_inference_steps`` (built once per process):
    a preset name (generation.models.MODEL_PRESETS), or a folder with ``base/`` and ``controlnet/``
    diffusers folders (as the packaged SynthAd generator), made at the checkpoint's own size.
    Studies that fine-tune it (RFFT) must work on a copy of its modules, never on this object."""
    return _generator(ctx.model, ctx.device, ctx.num_inference_steps)


def prepare(item: ProductItem, size: int, image_scale: float | None = None):
    """The PreparedProduct of ``item`` on a ``size`` canvas (image_scale: the synthad preset's)."""
    scale = prompt_preset().image_scale if image_scale is None else float(image_scale)
    return prepared(item, size, scale)  # cached there: a SynthProduct hashes by identity


def generate(ctx: ExperimentContext, items: Sequence[ProductItem], prompts: Sequence[Any], seeds: Sequence[int],
             *, generator=None, image_scale: float | None = None) -> list[np.ndarray]:
    """One (S, S, 3) uint8 image per (item, prompt, seed), the product pasted back pixel-exact.
    ``prompts``: RenderedPrompt objects or plain prompt strings; ``generator``: default load_generator(ctx)."""
    from reliable_ad.generation.generator import GenerationJob

    if not (len(items) == len(prompts) == len(seeds)):
        raise ValueError(f"got {len(items)} items, {len(prompts)} prompts, {len(seeds)} seeds; pass one of each")
    gen = generator or load_generator(ctx)
    jobs = []
    for item, prompt, seed in zip(items, prompts, seeds):
        text, negative = (prompt, "") if isinstance(prompt, str) else (prompt.prompt, prompt.negative_prompt)
        jobs.append(GenerationJob(prepare(item, gen.size, image_scale), text, negative, int(seed)))
    return [g.image for g in gen.generate(jobs)]


def oracle():
    """The shared OracleInspector (it caches where each product was found)."""
    return shared_oracle()


def judge_oracle(items: Sequence[ProductItem], images: Sequence[np.ndarray], *, size: int | None = None,
                 image_scale: float | None = None) -> list:
    """The oracle's verdicts (OracleVerdict: .label, .p_available, .reasons, .measurements) on
    generated images of ``items``; the product's placement is the known one (``prepare``)."""
    scale = prompt_preset().image_scale if image_scale is None else float(image_scale)
    return label_generated(items, images, image_scale=scale, size=size, oracle=oracle())


def judge_oracle_decisive(items: Sequence[ProductItem], images: Sequence[np.ndarray], keys: Sequence[str], *,
                          image_scale: float | None = None) -> list:
    """The abstaining oracle (reliable_ad.synthad.decisive) on generated images of ``items``: one
    DecisiveVerdict (.label, .available, .decisive, .verdict) per image. ``keys`` name the images (e.g.
    ``f"{item.key}/{seed}"``): they seed the oracle's re-readings, so give each image its own. Studies
    count rates over the decisive images and report the abstained share beside them
    (``decisive.decisive_summary``)."""
    from reliable_ad.synthad.generated import judge_generated

    if not (len(items) == len(images) == len(keys)):
        raise ValueError(f"got {len(items)} items, {len(images)} images and {len(keys)} keys; pass one of each per image")
    scale = prompt_preset().image_scale if image_scale is None else float(image_scale)
    return [judge_generated(item, image, image_scale=scale, key=key, oracle=oracle())
            for item, image, key in zip(items, images, keys)]


@functools.lru_cache(maxsize=2)
def _inspector(rfnet: str, device: str):
    from reliable_ad.rfnet.inspector import Inspector

    return Inspector.from_pretrained(rfnet, device=device, batch_size=16)


def load_inspector(ctx: ExperimentContext):
    """The RFNet Inspector for ``ctx.rfnet`` with the estimators it was trained with (built once)."""
    return _inspector(ctx.rfnet, ctx.device)


def judge_rfnet(ctx: ExperimentContext, items: Sequence[ProductItem], images: Sequence[np.ndarray]) -> list:
    """RFNet's verdicts (Verdict: .label, .p_available) on generated images of ``items``."""
    return load_inspector(ctx).inspect([it.rgba for it in items], list(images), [it.caption for it in items])


# ----------------------------------------------------------------------------------------------
# Prompt adherence
# ----------------------------------------------------------------------------------------------


def background_rgb(image: np.ndarray, product_alpha: np.ndarray, *, top: float = 0.25) -> np.ndarray | None:
    """The dominant colour (RGB float) of the upper ``top`` share of the image outside the product
    (dilated by 2 px), where a SynthAd scene shows its wall; None when no such pixel is left."""
    import cv2

    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        raise ValueError(f"image must be an (S, S, 3) uint8 array, got {getattr(image, 'shape', type(image))}")
    if product_alpha.shape != image.shape[:2]:
        raise ValueError(f"product_alpha has shape {product_alpha.shape}, the image {image.shape[:2]}; pass the "
                         "placed product's alpha at the image's size")
    rows = max(1, round(top * image.shape[0]))
    product = cv2.dilate((product_alpha > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    pixels = image[:rows][~product[:rows]].astype(np.float32)
    if not len(pixels):
        return None
    coarse = (pixels // 24).astype(np.int32)  # bins of 24 levels: shading and noise stay in one bin
    keys = coarse[:, 0] * 121 + coarse[:, 1] * 11 + coarse[:, 2]
    mode = np.bincount(keys).argmax()
    return pixels[keys == mode].mean(axis=0)


def wall_color_of_background(image: np.ndarray, product_alpha: np.ndarray) -> str | None:
    """The SynthAd wall colour name nearest to the image's background (``background_rgb``), for
    prompt adherence: compare it with the prompt's ``wall_color``. None when no background is visible."""
    rgb = background_rgb(image, product_alpha)
    return None if rgb is None else nearest_wall_color(rgb)


WALL_COLOR_NAMES = tuple(WALL_COLORS)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


def clean_number(value: Any, digits: int = 4) -> float | int | None:
    """A finite number rounded to ``digits``, or None for nan, inf and None (JSON has no nan)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> dict[str, Any]:
    """A result table: numbers made JSON-safe (``clean_number``), strings kept; every row as long as
    ``columns``."""
    out = []
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells for {len(columns)} columns {list(columns)}")
        out.append([clean_number(v) if v is None or isinstance(v, (int, float, np.number)) else str(v) for v in row])
    return {"columns": list(columns), "rows": out, "note": note}


def study_result(tables: dict[str, dict], figures: Sequence[str], seconds: float, settings: dict[str, Any],
                 *, summary: str = "") -> dict[str, Any]:
    """The dict a ``run_study`` returns. ``summary``: the study's own reading of its numbers (the
    report's "what this shows"), computed from them, never hard-coded."""
    return {"tables": dict(tables), "figures": [str(f) for f in figures], "seconds": float(seconds),
            "settings": dict(settings), "summary": summary}


def new_figure(width: float = 6.0, height: float = 4.0):
    """A matplotlib Figure from the object API (no pyplot state, no backend switch)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save_figure(figure, out_dir, name: str) -> str:
    """Write ``figure`` as ``<out_dir>/figures/<name>.png`` (atomically); returns the path relative to
    ``out_dir``, as ``study_result`` wants it."""
    import io
    from pathlib import Path

    from reliable_ad.core.io import atomic_write_bytes

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    rel = f"figures/{name}.png"
    atomic_write_bytes(Path(out_dir) / rel, buffer.getvalue())
    return rel


@dataclass
class Stopwatch:
    """Named wall-clock sections: ``with sw("generate"): ...``; ``sw.seconds`` maps name -> total."""

    seconds: dict[str, float] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter)

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def section():
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        return section()

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start
