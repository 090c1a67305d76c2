"""The SynthAd oracle's validity gates (docs/synthad.md, "Validity gates"): can the oracle be trusted
as the ground truth on *generated* images, where it plays the paper's human reviewers (docs/method.md §6)?

    python -m experiments.synthad.gates [--quick] [--per-class N] [--seed S] [--vae FOLDER] [--out FILE.json]

Gate 1, "the oracle holds on VAE round-trips". Scenes with known labels are rendered from the SynthAd
world (`synthad.dataset.generate_scenes`, the dataset writer's stream, with the class of every scene
planned: N per class), the product placed where generation places it (the `synthad` prompt preset's
image_scale). Each scene goes through the shipped generator's VAE (encode, the posterior's mode,
decode, rounded to uint8 as the pipeline's output is) and the product is pasted back with the
undilated alpha (`data.product.paste_back` with `prepare_product`'s placement): the best image a
generator with this VAE could make of that scene (--vae FOLDER: another AutoencoderKL folder's VAE,
e.g. one of experiments/synthad/vae_study.py; gate 2 still uses the generator's). The oracle then judges it with the known
placement, as `synthad.generated.label_generated` judges generated images. The gate holds when the
oracle's label agrees with the scene's known label for >= 95% of the scenes of every class. The same
is reported on the clean renders (no round trip): the control, which shows the instrument can pass.

Gate 2, "verdicts are stable under imperceptible changes". Images of the shipped generator for fresh
SynthAd products (the `synthad` prompt preset, a few noise seeds per product, as `reliable-ad synthad
generated` makes them) are perturbed (Gaussian noise of sigma 2, 3, 4 on the uint8 scale, a gain of
x1.03, a Gaussian blur of sigma 0.5; each on the whole image, rounded and clipped to uint8) and judged
again. The gate holds when, for every perturbation, at most 3% of the images change the oracle's
Available-vs-not decision. The same perturbations applied to gate 1's clean renders are the control.

The report (JSON) gives per-class agreement and flip rates with Wilson 95% intervals, counts, the
confusion tables, the settings and the seconds each part took; a short table goes to stderr. For a
seed and thread count the figures are deterministic (the scenes, products, prompts, noise seeds and
perturbation noise all follow from --seed; torch runs single-threaded by default). The scenes and
products are drawn from streams keyed by the seed and "synthad-gates", so they are not the scenes the
generator was trained on (`train_generator` uses the stream of seed 0) nor the products of its
labelled set.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reliable_ad.synthad.decisive import CHECKS, PERTURBATIONS, Perturbation
from reliable_ad.core.labels import AVAILABLE_INDEX, CLASS_NAMES
from reliable_ad.synthad.generated import sub_seed

AVAILABLE = CLASS_NAMES[AVAILABLE_INDEX]
PROMPT_PRESET = "synthad"  # the preset the SynthAd generator learnt; its image_scale places the products
GATE1_MIN_AGREEMENT = 0.95  # every class's agreement with the known label on VAE round-trips
GATE2_MAX_FLIP_RATE = 0.03  # every perturbation's Available-vs-not flip rate on the decisive generated images
GATE2_MAX_ABSTENTION = 1 / 3  # the abstaining oracle must still judge at least two generated images in three
MODULE = "experiments.synthad.gates"  # run as python -m MODULE from the repository root


# ----------------------------------------------------------------------------------------------
# Settings and statistics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateSettings:
    """What a run measures. `per_class`: rendered scenes per class (gate 1); `products` x
    `images_per_product`: generated images (gate 2), one noise seed per image; `steps`: denoising
    steps; `model`: the generator (a preset or a folder with base/ and controlnet/; the VAE is its
    base/vae); `vae`: an AutoencoderKL folder gate 1 uses instead of the generator's VAE (None: the
    generator's); `threads`: torch threads (1 keeps the figures deterministic and the machine usable)."""

    per_class: int = 60
    products: int = 100
    images_per_product: int = 3
    seed: int = 0
    steps: int = 25
    model: str = "synthad"
    vae: str | None = None
    threads: int = 1
    batch_size: int = 16

    @classmethod
    def quick(cls, **overrides: Any) -> "GateSettings":
        return cls(**{"per_class": 8, "products": 16, "images_per_product": 3, **overrides})

    def __post_init__(self) -> None:
        for name in ("per_class", "products", "images_per_product", "steps", "threads", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0")


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95% for the default z); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(k: int, n: int) -> dict[str, Any]:
    """{"k", "n", "rate", "ci95"}: a count, its total, the rate and its Wilson 95% interval."""
    lo, hi = wilson(k, n)
    return {"k": int(k), "n": int(n), "rate": (k / n) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def _progress(iterable, desc: str, total: int | None, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, file=sys.stderr, leave=False)


# ----------------------------------------------------------------------------------------------
# Gate 1: rendered scenes with known labels, through the generator's VAE
# ----------------------------------------------------------------------------------------------


def world_seed(seed: int) -> int:
    """The SynthAd stream seed of the gates' scenes (disjoint from the generator's training stream)."""
    return sub_seed("synthad-gates/scenes", seed)


def render_scenes(per_class: int, seed: int, *, size: int = 64, image_scale: float | None = None) -> list:
    """`per_class` labelled scenes of every class (SceneItem), in the stream order of
    `synthad.dataset.generate_scenes` (class planned per scene, balanced), products placed as
    `prepare_product` places them at `image_scale` (default: the synthad preset's). A planned scene
    whose layout does not fit at that scale is left out and made up for by further products of the
    same stream with the class forced (`synthad.dataset.render_item`)."""
    from reliable_ad.synthad.dataset import generate_scenes, render_item, stream_product
    from reliable_ad.synthad.layout import LayoutError

    scale = _image_scale() if image_scale is None else image_scale
    ws = world_seed(seed)
    n = per_class * len(CLASS_NAMES)
    items = list(generate_scenes(n, seed=ws, size=size, image_scale=scale, skip_unfit=True, scenes_per_product=2))
    counts = Counter(item.scene.label for item in items)
    p = (n + 1) // 2  # the first product index the plan did not use
    for label in range(len(CLASS_NAMES)):
        tries = 0
        while counts[label] < per_class:
            tries += 1
            if tries > 50 * per_class:
                raise RuntimeError(f"could not lay out {per_class} {CLASS_NAMES[label]} scenes at image_scale {scale}")
            try:
                items.append(render_item(stream_product(ws, p), p, 0, label, seed=ws, size=size, image_scale=scale))
                counts[label] += 1
            except LayoutError:
                pass
            p += 1
    return items


def _image_scale() -> float:
    from reliable_ad.generation.prompts import get_preset

    return get_preset(PROMPT_PRESET).image_scale


def generator_folder(model: str) -> Path:
    """The generator folder (with base/ and controlnet/) of a preset with packaged weights or a path."""
    from reliable_ad.core.registry import packaged_folder

    if model == "synthad":
        return packaged_folder("generator")
    folder = Path(model).expanduser()
    if not (folder / "base" / "vae").is_dir():
        raise ValueError(f"model={model!r}: give 'synthad' or a generator folder with base/vae/ "
                         "(as experiments/synthad/train_generator.py writes)")
    return folder


def load_vae(model: str = "synthad"):
    """The generator's VAE in float32, for inference (as the pipeline loads it on a CPU)."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(generator_folder(model) / "base"), subfolder="vae",
                                        torch_dtype=torch.float32)
    return vae.eval().requires_grad_(False)


def load_vae_folder(folder: str | Path):
    """An AutoencoderKL folder's VAE (config.json and weights) in float32, for inference."""
    import torch
    from diffusers import AutoencoderKL

    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"vae={str(folder)!r}: not an AutoencoderKL folder (no config.json)")
    vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=torch.float32)
    return vae.eval().requires_grad_(False)


def vae_round_trip(vae, images: np.ndarray, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(n, S, S, 3) uint8 images encoded (posterior mode) and decoded by `vae`, made uint8 as the
    pipeline's output is (x / 2 + 0.5 clipped to [0, 1], then round(255 x), as `AdGenerator` does)."""
    import torch

    out = []
    starts = range(0, len(images), batch_size)
    with torch.no_grad():
        for start in _progress(starts, "VAE round trip", len(starts), progress):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).permute(0, 3, 1, 2)
            x = x.float().div(127.5).sub(1.0)
            y = vae.decode(vae.encode(x).latent_dist.mode()).sample
            raw = (y / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy().astype(np.float32)
            out.append(np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:], np.uint8)


def agreement(true: Sequence[str], judged: Sequence[str]) -> dict[str, Any]:
    """Per-class and overall agreement of `judged` labels with `true` ones, and the confusion table
    {true class: {judged class: count}}."""
    per_class = {}
    for name in CLASS_NAMES:
        idx = [i for i, t in enumerate(true) if t == name]
        per_class[name] = proportion(sum(judged[i] == name for i in idx), len(idx))
    confusion = {t: {j: sum(1 for a, b in zip(true, judged) if a == t and b == j) for j in CLASS_NAMES}
                 for t in CLASS_NAMES}
    return {"overall": proportion(sum(a == b for a, b in zip(true, judged)), len(true)), "per_class": per_class,
            "confusion": confusion}


def gate1(items: Sequence, vae, oracle, *, image_scale: float | None = None, progress: bool = False) -> dict:
    """Gate 1 on rendered `items` (SceneItem): the oracle's agreement with the known labels on the
    clean renders (control) and on their VAE round-trips with the product pasted back; per scene
    rows too. Raises if a scene's product is not where generation would put it."""
    from reliable_ad.data.product import paste_back, prepare_product

    scale = _image_scale() if image_scale is None else image_scale
    clean = np.stack([item.scene.image for item in items])
    decoded = vae_round_trip(vae, clean, progress=progress)
    rows, clean_labels, rt_labels, true = [], [], [], []
    round_trips = []
    for item, out in _progress(zip(items, decoded), "gate 1 oracle", len(items), progress):
        scene = item.scene
        prep = prepare_product(item.product.to_product(), scene.size, scale)
        if not np.array_equal(prep.alpha > 0, scene.mask):
            raise AssertionError(f"{item.image_name}: the product is not where prepare_product puts it")
        rt = paste_back(out, prep)
        round_trips.append(rt)
        c = oracle.judge(scene.image, prep.alpha, scene.caption)
        r = oracle.judge(rt, prep.alpha, scene.caption)
        true.append(scene.label_name)
        clean_labels.append(c.label)
        rt_labels.append(r.label)
        rows.append({"image": item.image_name, "label": scene.label_name, "variant": scene.variant,
                     "caption": scene.caption, "clean": c.label, "round_trip": r.label,
                     "round_trip_reasons": list(r.reasons)})
    rt_report = agreement(true, rt_labels)
    rt_report["per_variant"] = _per_variant(rows)
    rt_report["mean_abs_change"] = round(float(np.mean(np.abs(decoded.astype(np.float32) - clean))), 3) \
        if len(items) else None
    worst = min((v["rate"] for v in rt_report["per_class"].values() if v["n"]), default=None)
    return {"name": "the oracle holds on VAE round-trips", "threshold": GATE1_MIN_AGREEMENT,
            "holds": worst is not None and worst >= GATE1_MIN_AGREEMENT, "n": len(items),
            "round_trip": rt_report, "clean": agreement(true, clean_labels), "scenes": rows,
            "_images": {"clean": clean, "round_trip": np.stack(round_trips) if round_trips else clean[:0]}}


def _per_variant(rows: list[dict]) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['label']}/{r['variant'] or '-'}", []).append(r)
    return {key: {**proportion(sum(r["round_trip"] == r["label"] for r in g), len(g)),
                  "judged": dict(Counter(r["round_trip"] for r in g))} for key, g in sorted(groups.items())}


# ----------------------------------------------------------------------------------------------
# Gate 2: generated images, perturbed
# ----------------------------------------------------------------------------------------------


def generate_images(settings: GateSettings, *, progress: bool = False, generator=None) -> tuple[list, list, list]:
    """The generated images of gate 2: `products` fresh SynthAd products x `images_per_product` noise
    seeds, random `synthad` prompts, as `reliable-ad synthad generated` makes them. Returns
    (items, images, rows): the ProductItem of each image, (S, S, 3) uint8 images (product pasted
    back), and what made each."""
    from reliable_ad.generation.generator import GenerationJob
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.generation.seeds import derive_seed
    from reliable_ad.synthad.generated import make_products, prepared

    preset = get_preset(PROMPT_PRESET)
    gen = generator or load_generator(settings)
    products = make_products(settings.products, sub_seed("synthad-gates/products", settings.seed), prefix="gate")
    pairs = [(item, k) for item in products for k in range(settings.images_per_product)]
    items, images, rows = [], [], []
    bs = settings.batch_size
    for start in _progress(range(0, len(pairs), bs), "gate 2 generate", math.ceil(len(pairs) / bs), progress):
        part = pairs[start:start + bs]
        prompts = [preset.render(sub_seed(settings.seed, "synthad-gates/prompt", item.key, k), caption=item.caption)
                   for item, k in part]
        seeds = [derive_seed(settings.seed, f"synthad-gates/{item.key}", k) for item, k in part]
        jobs = [GenerationJob(prepared(item, gen.size, preset.image_scale), p.prompt, p.negative_prompt, int(s))
                for (item, _), p, s in zip(part, prompts, seeds)]
        for (item, k), p, s, g in zip(part, prompts, seeds, gen.generate(jobs)):
            items.append(item)
            images.append(g.image)
            rows.append({"product": item.key, "k": k, "caption": item.caption, "slots": dict(p.slot_values),
                         "seed": int(s)})
    return items, images, rows


def load_generator(settings: GateSettings):
    from reliable_ad.cli.synthad import load_generator as load

    model = settings.model if settings.model == "synthad" else str(generator_folder(settings.model))
    return load(model, steps=settings.steps, batch_size=settings.batch_size)


def flip_rates(images: Sequence[np.ndarray], judge: Callable[[int, np.ndarray], str], seed: int, *,
               perturbations: Sequence[Perturbation] = PERTURBATIONS, progress: bool = False,
               desc: str = "perturb") -> dict:
    """How often each perturbation flips the Available-vs-not decision of `judge(i, image)` (a
    label) over `images`; the noise of image i under a perturbation is seeded by (seed, name, i)."""
    base = [judge(i, img) for i, img in enumerate(images)]
    out = {"n": len(images), "available": proportion(sum(b == AVAILABLE for b in base), len(base)),
           "labels": dict(Counter(base)), "perturbations": {}}
    todo = [(pert, i) for pert in perturbations for i in range(len(images))]
    judged: dict[str, list[str]] = {p.name: [] for p in perturbations}
    for pert, i in _progress(todo, desc, len(todo), progress):
        rng = np.random.default_rng(sub_seed("synthad-gates/perturb", seed, pert.name, i))
        judged[pert.name].append(judge(i, pert.apply(images[i], rng)))
    out["per_image"] = [{"label": b, "flipped": [p.name for p in perturbations
                                                 if (judged[p.name][i] == AVAILABLE) != (b == AVAILABLE)]}
                        for i, b in enumerate(base)]
    for pert in perturbations:
        after = judged[pert.name]
        to_av = sum(b != AVAILABLE and a == AVAILABLE for b, a in zip(base, after))
        from_av = sum(b == AVAILABLE and a != AVAILABLE for b, a in zip(base, after))
        out["perturbations"][pert.name] = {
            **proportion(to_av + from_av, len(base)), "to_available": to_av, "from_available": from_av,
            "label_changed": proportion(sum(b != a for b, a in zip(base, after)), len(base))}
    return out


def gate2(items: Sequence, images: Sequence[np.ndarray], oracle, seed: int, *, image_scale: float | None = None,
          progress: bool = False) -> dict:
    """Gate 2 on generated `images` of `items` (ProductItem): Available-vs-not flip rates of every image and
    of the decisive ones (`decisive.judge_decisive`, the abstaining oracle the studies use). Holds when every
    flip rate on the decisive images is <= GATE2_MAX_FLIP_RATE and the oracle abstains on at most
    GATE2_MAX_ABSTENTION of the images."""
    from reliable_ad.synthad.generated import judge_generated, prepared

    scale = _image_scale() if image_scale is None else image_scale

    def judge(i: int, image: np.ndarray) -> str:
        item = items[i]
        return oracle.judge(image, prepared(item, image.shape[0], scale).alpha, item.caption).label

    report = flip_rates(images, judge, seed, progress=progress, desc="gate 2 perturb")
    decisive = [judge_generated(item, image, image_scale=scale, key=f"synthad-gates/{seed}/{i}", oracle=oracle).decisive
                for i, (item, image) in enumerate(zip(items, images))]
    for row, d in zip(report["per_image"], decisive):
        row["decisive"] = d
    kept = [row for row in report["per_image"] if row["decisive"]]
    report["abstained"] = proportion(len(decisive) - len(kept), len(decisive))
    report["decisive"] = {
        "n": len(kept), "available": proportion(sum(r["label"] == AVAILABLE for r in kept), len(kept)),
        "perturbations": {p.name: proportion(sum(p.name in r["flipped"] for r in kept), len(kept))
                          for p in PERTURBATIONS}}
    worst = max((v["rate"] for v in report["decisive"]["perturbations"].values() if v["n"]), default=None)
    abstention = report["abstained"]["rate"]
    return {"name": "verdicts are stable under imperceptible changes", "threshold": GATE2_MAX_FLIP_RATE,
            "max_abstention": GATE2_MAX_ABSTENTION, "checks": [asdict(c) for c in CHECKS],
            "holds": worst is not None and worst <= GATE2_MAX_FLIP_RATE and abstention <= GATE2_MAX_ABSTENTION,
            **report}


def scene_flip_rates(items: Sequence, images: np.ndarray, oracle, seed: int, *, progress: bool = False) -> dict:
    """Gate 2's perturbations on rendered scenes (`images`, one per SceneItem), judged with the
    scene's known placement: the control for gate 2."""
    def judge(i: int, image: np.ndarray) -> str:
        scene = items[i].scene
        return oracle.judge(image, scene.product_alpha, scene.caption).label

    return flip_rates(list(images), judge, seed, progress=progress, desc="gate 2 control")


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def run_gates(settings: GateSettings | None = None, *, progress: bool = True, generator=None) -> dict:
    """Both gates and their controls; returns the JSON-ready report (module docstring)."""
    import torch

    from reliable_ad.synthad.oracle import OracleInspector

    settings = settings or GateSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        scale = _image_scale()
        items = render_scenes(settings.per_class, settings.seed, image_scale=scale)
        seconds["render"] = time.perf_counter() - t0
        t = time.perf_counter()
        vae = load_vae_folder(settings.vae) if settings.vae else load_vae(settings.model)
        g1 = gate1(items, vae, OracleInspector(), image_scale=scale, progress=progress)
        images = g1.pop("_images")
        seconds["gate1"] = time.perf_counter() - t
        t = time.perf_counter()
        g1_control = scene_flip_rates(items, images["clean"], OracleInspector(), settings.seed, progress=progress)
        seconds["gate2_control"] = time.perf_counter() - t
        t = time.perf_counter()
        gen_items, gen_images, gen_rows = generate_images(settings, progress=progress, generator=generator)
        seconds["generate"] = time.perf_counter() - t
        t = time.perf_counter()
        g2 = gate2(gen_items, gen_images, OracleInspector(), settings.seed, image_scale=scale, progress=progress)
        g1_control.pop("per_image")
        g2["control_clean_renders"] = g1_control
        g2["images"] = [{**row, **judged} for row, judged in zip(gen_rows, g2.pop("per_image"))]
        seconds["gate2"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return {
        "settings": {**asdict(settings), "image_scale": scale, "size": int(images["clean"].shape[1]),
                     "world_seed": world_seed(settings.seed), "vae": settings.vae or str(generator_folder(settings.model) / "base/vae"),
                     "vae_latent": "posterior mode", "prompt_preset": PROMPT_PRESET,
                     "perturbations": [asdict(p) for p in PERTURBATIONS],
                     "abstention_checks": [asdict(c) for c in CHECKS], "torch_threads": settings.threads},
        "holds": bool(g1["holds"] and g2["holds"]),
        "gate1": g1,
        "gate2": g2,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


def _pct(p: dict) -> str:
    if p["rate"] is None:
        return "   -  "
    return f"{100 * p['rate']:5.1f}% [{100 * p['ci95'][0]:4.1f}-{100 * p['ci95'][1]:5.1f}] (n={p['n']})"


def summary_table(report: dict) -> str:
    """The report's figures as a short text table."""
    g1, g2 = report["gate1"], report["gate2"]
    lines = [f"gate 1: {g1['name']} (every class >= {g1['threshold']:.0%}): "
             f"{'HOLDS' if g1['holds'] else 'FAILS'}",
             f"  {'class':<22} {'VAE round trip':<32} {'clean render (control)':<32}"]
    for name in [*CLASS_NAMES, "overall"]:
        rt = g1["round_trip"]["overall"] if name == "overall" else g1["round_trip"]["per_class"][name]
        cl = g1["clean"]["overall"] if name == "overall" else g1["clean"]["per_class"][name]
        lines.append(f"  {name:<22} {_pct(rt):<32} {_pct(cl):<32}")
    lines += [f"gate 2: {g2['name']} (every flip rate on decisive images <= {g2['threshold']:.0%}, abstention "
              f"<= {g2['max_abstention']:.0%}): {'HOLDS' if g2['holds'] else 'FAILS'}; {g2['n']} generated images, "
              f"{_pct(g2['available'])} Available; abstained on {_pct(g2['abstained'])}",
              f"  {'perturbation':<22} {'flips, decisive generated':<32} {'flips, all generated':<32} "
              f"{'flips, clean renders (control)':<32}"]
    for name, v in g2["perturbations"].items():
        lines.append(f"  {name:<22} {_pct(g2['decisive']['perturbations'][name]):<32} {_pct(v):<32} "
                     f"{_pct(g2['control_clean_renders']['perturbations'][name]):<32}")
    lines.append(f"seconds: {report['seconds']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a small run (8 scenes per class, 48 generated images; about 20 s)")
    p.add_argument("--per-class", type=int, help="rendered scenes per class for gate 1 (default 60; quick 8)")
    p.add_argument("--products", type=int, help="fresh products for gate 2 (default 100; quick 16)")
    p.add_argument("--images-per-product", type=int, help="noise seeds per product for gate 2 (default 3; quick 3)")
    p.add_argument("--seed", type=int, default=0, help="everything drawn follows from it (default 0)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25, as the studies)")
    p.add_argument("--model", default="synthad", help="'synthad' or a generator folder (base/, controlnet/)")
    p.add_argument("--vae", metavar="FOLDER", help="gate 1 uses this AutoencoderKL folder's VAE instead of the "
                   "generator's (gate 2 still uses the generator's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: deterministic figures)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--check", action="store_true", help="exit 1 when a gate does not hold")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("per_class", args.per_class), ("products", args.products),
                                   ("images_per_product", args.images_per_product)) if v is not None}
    common = {"seed": args.seed, "steps": args.steps, "model": args.model, "vae": args.vae, "threads": args.threads}
    try:
        settings = GateSettings.quick(**common, **overrides) if args.quick else GateSettings(**common, **overrides)
    except ValueError as e:
        p.error(str(e))
    report = run_gates(settings, progress=not args.no_progress)
    report["settings"]["quick"] = args.quick
    print(summary_table(report), file=sys.stderr)
    if args.out:
        from reliable_ad.core.io import atomic_write_json

        atomic_write_json(Path(args.out), report)
        print(f"report -> {args.out}", file=sys.stderr)
    return 1 if args.check and not report["holds"] else 0


if __name__ == "__main__":
    sys.exit(main())
