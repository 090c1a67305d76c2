"""Train the SynthAd generator: SD1.5-shaped diffusers components at toy size, trained on SynthAd scenes.

    python -m experiments.synthad.train_generator --out runs/synthad-generator [--install]

The generator is what `--model synthad` loads: a diffusers base-model folder (VAE, CLIP text encoder
and tokenizer, 4-channel UNet, DDIM scheduler) and a ControlNet folder, used through the same
ControlNet-inpainting pipeline as SD1.5 + the authors' ControlNet. Only the sizes differ: 64 px
images, a VAE with scale factor 4 (16x16x4 latents), UNet and ControlNet of about 1.5 M parameters.

Training, in three stages on one stream of labelled SynthAd scenes (`synthad.dataset.generate_scenes`,
products placed as `prepare_product` places them at the `synthad` prompt preset's image_scale):
1. the VAE learns to reconstruct scenes (L1 + MSE, a small KL term), or an existing one is taken
   (`--vae FOLDER`, e.g. one `vae_study` trained until gate 1 held);
2. UNet, ControlNet and the text encoder learn together to predict the noise (epsilon, SD1.5's
   schedule), the ControlNet fed the product's Canny edges exactly as `prepare_product` makes them;
   prompts (the `synthad` preset with the product's caption, which names its size class, as a real
   SD1.5 reads "a lipstick") are encoded in every step by the function and clip skip inference uses
   (`generation.weighting.encode_weighted_prompts`, with its graph kept), so the encoder learns to
   read colours and sizes; the prompt is dropped to the empty prompt 10% of the time so
   classifier-free guidance works; weights are averaged (EMA) and the averaged ones are saved.

The scenes mix classes as a real generator's outputs do (`GENERATOR_SHARES`: half Available, the
rest spread over the four failure classes), so the generator learns to make failures too, about as
often: its samples are usable only part of the time, which is what Recurrent Generation and RFFT
are there to fix. `evaluate_generator` measures that share with the oracle inspector.

Measured on 2 CPU cores (the defaults): see `docs/results/synthad.md` (stage times are printed and
saved in `training.json`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.synthad import WEIGHTS_DIR
from reliable_ad.core.io import atomic_write_json

logger = logging.getLogger(__name__)

SIZE = 64
VAE_SCALE_FACTOR = 4
UNET_CHANNELS = (32, 64, 64)
PROMPT_PRESET = "synthad"
CLIP_SKIP = 2  # A1111 convention, as SamplingConfig's default: what inference will use
GENERATOR_SHARES = {"Available": 0.5, "Space Mismatch": 0.125, "Size Mismatch": 0.125,
                    "Indistinctiveness": 0.125, "Shape Hallucination": 0.125}
PACKAGED = WEIGHTS_DIR / "generator"
MODULE = "experiments.synthad.train_generator"  # run as python -m MODULE from the repository root


@dataclass
class GeneratorTrainConfig:
    scenes: int = 8000  # training scenes (4,000 products, 2 scenes each)
    seed: int = 0
    vae_steps: int = 600
    vae_lr: float = 1e-3
    steps: int = 3000  # UNet + ControlNet steps
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup: int = 100
    batch_size: int = 32
    cond_drop: float = 0.1
    ema_decay: float = 0.999
    threads: int = 0  # torch threads; 0 = torch's default
    eval_products: int = 48  # products judged by the oracle after training (one image each)
    init_from: str | None = None  # a trained generator folder to continue from (base/, controlnet/)
    vae: str | None = None  # an AutoencoderKL folder to use as it is (no VAE stage)
    text_lr: float = 5e-4  # peak learning rate of the text encoder (0: frozen, as before)
    new_tokenizer: bool = False  # with init_from: a fresh word-level tokenizer and text encoder (build_components)
    min_snr_gamma: float = 0.0  # > 0: min-SNR-gamma loss weighting (min_snr_weights); 0: plain MSE
    prediction: str = "epsilon"  # "epsilon" (SD1.5) or "v": v-prediction on a zero-terminal-SNR schedule (use_v_prediction)

    @classmethod
    def quick(cls) -> "GeneratorTrainConfig":
        """A few steps of everything: checks the pipeline end to end, makes no useful model."""
        return cls(scenes=64, vae_steps=3, steps=3, warmup=1, batch_size=8, eval_products=2)


@dataclass
class SceneTensors:
    """The training stream as tensors: images in [-1, 1], Canny controls in [0, 1], prompt ids."""

    images: torch.Tensor  # (N, 3, S, S)
    controls: torch.Tensor  # (N, 1, S, S) uint8 {0, 255}
    prompt_ids: torch.Tensor  # (N,) index into prompts
    prompts: list[str]
    labels: Counter = field(default_factory=Counter)


def scene_prompt_text(attrs, caption: str) -> str:
    """The `synthad` prompt preset filled with a scene's attributes and its product's caption: the
    text the generator learns."""
    from reliable_ad.generation.prompts import get_preset

    clutter = "no" if attrs.clutter == "none" else attrs.clutter
    values = {"wall_color": attrs.wall, "surface": attrs.surface, "clutter": clutter}
    return get_preset(PROMPT_PRESET).render(0, slot_values=values, caption=caption).prompt


def make_scene_tensors(n: int, seed: int) -> SceneTensors:
    """Render `n` planned scenes (those whose layout fits) and their Canny controls, made as the
    generator's inputs are made at inference."""
    from reliable_ad.data.product import prepare_product
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.synthad.dataset import generate_scenes

    image_scale = get_preset(PROMPT_PRESET).image_scale
    images, controls = [], []
    prompts: dict[str, int] = {}
    ids, labels = [], Counter()
    prepared, prepared_for = None, None
    for item in generate_scenes(n, seed=seed, size=SIZE, class_shares=GENERATOR_SHARES, image_scale=image_scale,
                                skip_unfit=True):
        scene = item.scene
        if prepared is None or prepared_for != item.product_id:  # a product's first scene may not have fit
            prepared, prepared_for = prepare_product(item.product.to_product(), SIZE, image_scale), item.product_id
        if not np.array_equal(prepared.alpha > 0, scene.mask):
            raise AssertionError(f"scene {item.image_name}: the product is not where prepare_product puts it")
        images.append(scene.image)
        controls.append(prepared.control[..., 0])
        ids.append(prompts.setdefault(scene_prompt_text(scene.attrs, scene.caption), len(prompts)))
        labels[scene.label_name] += 1
    return SceneTensors(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0),
        controls=torch.from_numpy(np.stack(controls))[:, None],
        prompt_ids=torch.tensor(ids),
        prompts=list(prompts),
        labels=labels,
    )


def prompt_words() -> list[str]:
    """Every word a `synthad` prompt can hold (the preset's text and slot values, the products'
    captions), in a fixed order: the generator's tokenizer makes each one token, as a real CLIP
    vocabulary has "pink" and "sofa", so the text encoder sees words rather than letters."""
    import re

    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.synthad.products import CATEGORIES, COLOR_NAMES
    from reliable_ad.synthad.world import SIZE_CLASSES

    preset = get_preset(PROMPT_PRESET)
    texts = [re.sub(r"\{\w*\}", " ", preset.prompt), *(v for values in preset.slots.values() for v in values), *SIZE_CLASSES, *COLOR_NAMES,
             *(c.noun for c in CATEGORIES.values())]
    return list(dict.fromkeys(w for text in texts for w in re.findall(r"[a-z]+", text.lower())))


def build_components(seed: int = 0) -> dict:
    """The untrained SynthAd generator: `tiny`'s components at 64 px with a factor-4 VAE and a tokenizer
    that has the SynthAd prompt words (`prompt_words`) as tokens."""
    from reliable_ad.generation.tiny import build_tiny_components

    parts = build_tiny_components(seed=seed, image_size=SIZE, vae_scale_factor=VAE_SCALE_FACTOR,
                                  unet_channels=UNET_CHANNELS, words=prompt_words())
    with torch.no_grad():  # tiny's random zero-convolutions suit an untrained demo, not training
        cn = parts["controlnet"]
        for module in [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]:
            module.weight.zero_()
            module.bias.zero_()
    return parts


def load_components(folder: str | Path) -> dict:
    """The components of a saved generator (`folder/base`, `folder/controlnet`) in fp32, to train further."""
    from diffusers import ControlNetModel, StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline.from_pretrained(folder / "base", torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    parts["controlnet"] = ControlNetModel.from_pretrained(folder / "controlnet", torch_dtype=torch.float32)
    return parts


def _batches(n: int, batch_size: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


def train_vae(vae, data: SceneTensors, cfg: GeneratorTrainConfig, progress: bool = True) -> dict:
    """Stage 1: reconstruct scenes. Returns the final losses; sets the VAE's scaling factor."""
    from tqdm.auto import tqdm

    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bs = min(cfg.batch_size, len(data.images))
    losses = []
    bar = tqdm(_batches(len(data.images), bs, cfg.vae_steps, cfg.seed + 1), total=cfg.vae_steps,
               desc="VAE", disable=not progress)
    for step, idx in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr, cfg.min_lr, min(cfg.warmup, cfg.vae_steps // 10))
        x = data.images[idx]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(data.images[i : i + 256]).latent_dist.mode()
                             for i in range(0, min(len(data.images), 2048), 256)])
    scaling = float(1.0 / latents.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=scaling)
    return {"final_loss": float(np.mean(losses[-50:])), "scaling_factor": scaling}


def _lr(step: int, total: int, peak: float, floor: float, warmup: int) -> float:
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and std of every scene, scaled as the pipeline scales latents."""
    means, stds = [], []
    for i in range(0, len(images), 256):
        dist = vae.encode(images[i : i + 256]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    s = vae.config.scaling_factor
    return torch.cat(means) * s, torch.cat(stds) * s


def encode_prompts(tokenizer, text_encoder, prompts: list[str], *, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, L, D) embeddings of the prompts and (P, L, D) of the empty prompt padded to their length,
    as inference encodes a prompt and the empty negative prompt (`encode_prompt_pair`)."""
    from reliable_ad.generation.config import SamplingConfig
    from reliable_ad.generation.weighting import encode_weighted_prompts

    skip = SamplingConfig(clip_skip=CLIP_SKIP).diffusers_clip_skip
    kwargs = dict(clip_skip=skip, device="cpu", dtype=torch.float32, grad=grad)
    pos = encode_weighted_prompts(tokenizer, text_encoder, prompts, **kwargs)
    empty = encode_weighted_prompts(tokenizer, text_encoder, [""], **kwargs)
    return pos, empty.repeat(1, pos.shape[1] // empty.shape[1], 1).expand_as(pos)


class EMA:
    """Exponential moving average of parameters (with the usual warm-up of the decay)."""

    def __init__(self, params, decay: float):
        self.params = [p for p in params if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def min_snr_weights(schedule, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights of epsilon-prediction per timestep, min(SNR, gamma) / SNR (Hang et
    al., 2023): steps whose signal-to-noise ratio exceeds gamma (the low-noise ones) count less, so the
    high-noise steps, where a scene's layout and wall colour are decided, weigh relatively more."""
    alphas = schedule.alphas_cumprod.float()
    snr = alphas / (1.0 - alphas)
    return torch.clamp(snr, max=gamma) / snr


PREDICTIONS = ("epsilon", "v")


def use_v_prediction(parts: dict) -> None:
    """Switch the generator to v-prediction on a zero-terminal-SNR schedule with trailing timesteps (Lin
    et al., 2024, "Common diffusion noise schedules and sample steps are flawed"), in place.

    SD1.5's schedule keeps sqrt(alpha_bar) = 0.068 of the image at its last training step, so a wall's
    flat colour can be read from the noisy latent itself: the model learns to take it from there, and at
    inference, where the latent is pure noise, the seed rather than the prompt picks the wall's colour.
    With zero terminal SNR nothing of the image is left at t = T and the colour has to come from the text;
    epsilon-prediction is undefined there, hence v. The scheduler's config carries all three settings,
    so the pipeline samples as the model was trained."""
    from diffusers import DDIMScheduler

    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config, prediction_type="v_prediction",
                                                   rescale_betas_zero_snr=True, timestep_spacing="trailing")


def train_denoiser(parts: dict, data: SceneTensors, cfg: GeneratorTrainConfig, progress: bool = True) -> dict:
    """Stage 3: UNet + ControlNet predict the noise (or v, as the scheduler's `prediction_type` says) of
    noised scene latents given prompt and control."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    unet, controlnet = parts["unet"], parts["controlnet"]
    noise_schedule = DDPMScheduler.from_config(parts["scheduler"].config)
    v_prediction = noise_schedule.config.prediction_type == "v_prediction"
    if v_prediction and cfg.min_snr_gamma:
        raise ValueError(f"min_snr_gamma={cfg.min_snr_gamma} is for epsilon-prediction; with prediction='v' "
                         "leave it at 0 (the v loss already weighs the high-noise steps)")
    weights = min_snr_weights(noise_schedule, cfg.min_snr_gamma) if cfg.min_snr_gamma else None
    tokenizer, text_encoder = parts["tokenizer"], parts["text_encoder"]
    mean, std = encode_latents(parts["vae"], data.images)
    params = [*unet.parameters(), *controlnet.parameters()]
    text_params = [p for p in text_encoder.parameters()] if cfg.text_lr > 0 else []
    for p in text_encoder.parameters():
        p.requires_grad_(bool(text_params))
    groups = [{"params": params, "peak": cfg.lr}] + ([{"params": text_params, "peak": cfg.text_lr}] if text_params else [])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=1e-4)
    ema = EMA(params + text_params, cfg.ema_decay)
    unet.train()
    controlnet.train()
    text_encoder.train(bool(text_params))
    g = torch.Generator().manual_seed(cfg.seed + 3)
    bs = min(cfg.batch_size, len(data.images))
    losses = []
    bar = tqdm(_batches(len(data.images), bs, cfg.steps, cfg.seed + 2), total=cfg.steps, desc="UNet+ControlNet",
               disable=not progress)
    for step, idx in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg.steps, group["peak"], cfg.min_lr * group["peak"] / cfg.lr, cfg.warmup)
        b = len(idx)
        latents = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (b,), generator=g)
        noisy = noise_schedule.add_noise(latents, noise, t)
        text, empty = encode_prompts(tokenizer, text_encoder, [data.prompts[i] for i in data.prompt_ids[idx]],
                                     grad=bool(text_params))
        dropped = torch.rand(b, generator=g) < cfg.cond_drop
        text = torch.where(dropped[:, None, None], empty, text)
        control = data.controls[idx].float().div(255.0).expand(-1, 3, -1, -1)
        down, mid = controlnet(noisy, t, encoder_hidden_states=text, controlnet_cond=control, return_dict=False)
        pred = unet(noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid).sample
        target = noise_schedule.get_velocity(latents, noise, t) if v_prediction else noise
        per_image = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_image * weights[t]).mean() if weights is not None else per_image.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params + text_params, 1.0)
        opt.step()
        ema.update()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    ema.copy_to_params()
    unet.eval()
    controlnet.eval()
    text_encoder.eval()
    text_encoder.requires_grad_(False)
    return {"final_loss": float(np.mean(losses[-100:])), "prompts": len(data.prompts)}


def save_generator(parts: dict, out: Path) -> tuple[Path, Path]:
    """Write the base-model folder and the ControlNet folder (fp16 safetensors; loaders cast back)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the fp16 cast warns about modules kept in fp32: there are none
    out.mkdir(parents=True, exist_ok=True)
    components = {k: v for k, v in parts.items() if k != "controlnet"}
    for name in ("vae", "unet", "text_encoder"):
        components[name] = components[name].to(torch.float16)
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = out / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp / "base")
    parts["controlnet"].to(torch.float16).save_pretrained(tmp / "controlnet")
    for name in ("base", "controlnet"):
        shutil.rmtree(out / name, ignore_errors=True)
        (tmp / name).replace(out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    for name in ("vae", "unet", "text_encoder", "controlnet"):  # back to fp32 for any later use
        parts[name].to(torch.float32)
    return out / "base", out / "controlnet"


def evaluate_generator(base: str | Path, controlnet: str | Path, *, products: int = 48, seed: int = 10_000,
                       steps: int | None = None, guidance: float | None = None, scheduler: str | None = None,
                       guidance_rescale: float = 0.0, batch_size: int = 16, progress: bool = True) -> dict:
    """Generate one image per fresh SynthAd product (random `synthad` prompts) and judge it with the
    oracle. Returns the available rate, the per-class counts and the images (for a contact sheet)."""
    from tqdm.auto import tqdm

    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator, GenerationJob
    from reliable_ad.data.product import prepare_product
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.synthad.dataset import stream_product
    from reliable_ad.synthad.oracle import OracleInspector

    sampling = SamplingConfig(size=SIZE, batch_size=batch_size, **({"num_inference_steps": steps} if steps else {}),
                              **({"guidance_scale": guidance} if guidance is not None else {}),
                              **({"scheduler": scheduler} if scheduler else {}), guidance_rescale=guidance_rescale)
    gen = AdGenerator.from_config(ModelConfig(model=str(base), controlnet=str(controlnet), safety_checker=False),
                                  sampling)
    preset = get_preset(PROMPT_PRESET)
    items = [stream_product(seed, p) for p in range(products)]
    jobs = []
    for p, product in enumerate(items):
        rendered = preset.render(seed + p, caption=product.caption)
        jobs.append(GenerationJob(prepare_product(product.to_product(), SIZE, preset.image_scale),
                                  rendered.prompt, rendered.negative_prompt, seed + p))
    images = []
    for start in tqdm(range(0, len(jobs), batch_size), desc="evaluate", disable=not progress):
        images += [r.image for r in gen.generate(jobs[start : start + batch_size])]
    verdicts = OracleInspector().inspect([p.rgba for p in items], images, [p.caption for p in items])
    counts = Counter(v.label for v in verdicts)
    return {"available_rate": counts.get("Available", 0) / max(1, len(verdicts)), "labels": dict(counts),
            "products": products, "seed": seed, "images": images, "verdicts": [v.label for v in verdicts]}


def verdict_sheet(images: list[np.ndarray], labels: list[str], path: Path) -> None:
    """The judged samples as a contact sheet, one row per oracle verdict (upscaled 2x)."""
    from reliable_ad.core.labels import CLASS_NAMES
    from reliable_ad.synthad.preview import contact_sheet, save_png

    rows = [(name, [im for im, label in zip(images, labels) if label == name]) for name in CLASS_NAMES]
    rows = [(name, row) for name, row in rows if row]
    save_png(contact_sheet([row for _, row in rows], [f"{name} ({len(row)})" for name, row in rows]), path)


def train_generator(out: str | Path, cfg: GeneratorTrainConfig | None = None, *, progress: bool = True) -> dict:
    """All stages; writes `out/base`, `out/controlnet`, `out/training.json` and `out/samples.png`."""
    cfg = cfg or GeneratorTrainConfig()
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = make_scene_tensors(cfg.scenes, cfg.seed)
    times["scenes"] = time.perf_counter() - t0
    logger.info("%d scenes (%s), %d prompts", cfg.scenes, dict(data.labels), len(data.prompts))
    parts = load_components(cfg.init_from) if cfg.init_from else build_components(cfg.seed)
    if cfg.init_from and cfg.new_tokenizer:
        fresh = build_components(cfg.seed)
        parts["tokenizer"], parts["text_encoder"] = fresh["tokenizer"], fresh["text_encoder"]
    if cfg.vae:
        from diffusers import AutoencoderKL

        parts["vae"] = AutoencoderKL.from_pretrained(cfg.vae, torch_dtype=torch.float32)
    if cfg.prediction not in PREDICTIONS:
        raise ValueError(f"prediction={cfg.prediction!r}: choose one of {PREDICTIONS}")
    if cfg.prediction == "v":
        use_v_prediction(parts)
    t0 = time.perf_counter()
    vae_stats = {"from": cfg.vae} if cfg.vae else \
        train_vae(parts["vae"], data, cfg, progress) if cfg.vae_steps else {"skipped": True}
    for p in parts["vae"].parameters():
        p.requires_grad_(False)
    times["vae"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    denoiser_stats = train_denoiser(parts, data, cfg, progress)
    times["denoiser"] = time.perf_counter() - t0
    base, controlnet = save_generator(parts, out)
    t0 = time.perf_counter()
    evaluation = evaluate_generator(base, controlnet, products=cfg.eval_products, progress=progress)
    times["evaluate"] = time.perf_counter() - t0
    verdict_sheet(evaluation.pop("images"), evaluation["verdicts"], out / "samples.png")
    report = {"config": asdict(cfg), "seconds": {k: round(v, 1) for k, v in times.items()},
              "torch_threads": torch.get_num_threads(), "scene_labels": dict(data.labels), "vae": vae_stats,
              "denoiser": denoiser_stats, "oracle_evaluation": evaluation}
    atomic_write_json(out / "training.json", report)
    return report


def install(out: str | Path, target: Path = PACKAGED) -> Path:
    """Copy a trained generator (`out/base`, `out/controlnet`, `out/training.json`) into the package."""
    out = Path(out)
    for name in ("base", "controlnet"):
        if not (out / name).is_dir():
            raise FileNotFoundError(f"{out / name} is missing; train first: python -m {MODULE} --out {out}")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("base", "controlnet"):
        shutil.copytree(out / name, tmp / name)
    shutil.copy2(out / "training.json", tmp / "training.json")
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Train the SynthAd generator (`--model synthad`) on procedural SynthAd scenes, judge a "
                    "sample with the oracle inspector, and optionally install it into the package.",
    )
    p.add_argument("--out", required=True, help="output folder (base/, controlnet/, training.json, samples.png)")
    p.add_argument("--quick", action="store_true", help="a few steps of everything (checks the pipeline only)")
    defaults = GeneratorTrainConfig()
    for name in ("scenes", "steps", "vae_steps", "batch_size", "seed", "threads", "eval_products"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {getattr(defaults, name)}")
    p.add_argument("--lr", type=float, help=f"peak learning rate of UNet + ControlNet (default {defaults.lr})")
    p.add_argument("--text-lr", type=float, help=f"peak learning rate of the text encoder, 0 to freeze it "
                   f"(default {defaults.text_lr})")
    p.add_argument("--new-tokenizer", action="store_true", help="with --init-from: keep its UNet and ControlNet "
                   "but start a fresh text encoder with the word-level tokenizer of build_components")
    p.add_argument("--min-snr-gamma", type=float, help="weight the loss by min(SNR, gamma)/SNR (e.g. 5; default 0: "
                   "plain MSE)")
    p.add_argument("--prediction", choices=PREDICTIONS, help="epsilon (SD1.5's, the default) or v: v-prediction on a "
                   "zero-terminal-SNR schedule, so the prompt rather than the seed sets flat colours (use_v_prediction)")
    p.add_argument("--vae", metavar="DIR", help="use this AutoencoderKL folder as it is (no VAE stage), e.g. one "
                   "experiments.synthad.vae_study trained")
    p.add_argument("--init-from", metavar="DIR", help="continue training a saved generator (with --vae-steps 0 "
                   "its VAE is kept as it is)")
    p.add_argument("--install", action="store_true", help=f"copy the result into the package ({PACKAGED})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = GeneratorTrainConfig.quick() if args.quick else GeneratorTrainConfig()
    for name in ("scenes", "steps", "vae_steps", "batch_size", "seed", "threads", "eval_products", "init_from", "lr",
                 "text_lr", "vae", "new_tokenizer", "min_snr_gamma", "prediction"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    report = train_generator(args.out, cfg, progress=not args.no_progress)
    print(json.dumps({k: report[k] for k in ("seconds", "vae", "denoiser", "oracle_evaluation")}, indent=1))
    if args.install:
        print(f"installed to {install(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
