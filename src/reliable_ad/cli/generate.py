"""`reliable-ad generate`: product cut-outs + a prompt preset → labelled ad images and a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reliable_ad.cli.common import add_config_arg, build_config

# flag → config field
GENERATION_FLAGS = {
    "model": "model.model",
    "controlnet": "model.controlnet",
    "lora": "model.lora",
    "lora_scale": "model.lora_scale",
    "base_config": "model.base_config",
    "controlnet_config": "model.controlnet_config",
    "device": "model.device",
    "dtype": "model.dtype",
    "safety_checker": "model.safety_checker",
    "size": "sampling.size",
    "scheduler": "sampling.scheduler",
    "steps": "sampling.num_inference_steps",
    "guidance_scale": "sampling.guidance_scale",
    "guidance_rescale": "sampling.guidance_rescale",
    "clip_skip": "sampling.clip_skip",
    "controlnet_scale": "sampling.controlnet_conditioning_scale",
    "eta": "sampling.eta",
    "batch_size": "sampling.batch_size",
    "image_scale": "product.image_scale",
    "keep_loc": "product.keep_loc",
    "canny_low": "product.canny_low",
    "canny_high": "product.canny_high",
    "white_threshold": "product.white_threshold",
    "box_alpha_threshold": "product.box_alpha_threshold",
    "preset": "preset",
    "presets_file": "presets_file",
    "num_per_product": "num_per_product",
    "seed": "seed",
    "attention": "speed.attention",
    "channels_last": "speed.channels_last",
    "compile": "speed.compile",
    "compile_mode": "speed.compile_mode",
    "reuse_control_embedding": "speed.reuse_control_embedding",
    "overlap_inspection": "speed.overlap_inspection",
    "c2pa": "provenance.c2pa",
    "c2pa_cert": "provenance.c2pa_cert",
    "c2pa_key": "provenance.c2pa_key",
    "watermark": "provenance.watermark",
    "watermark_product": "provenance.watermark_product",
}


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """Model, sampling and product flags shared by `generate` and `run`. Defaults: the paper's."""
    from reliable_ad.generation.config import DTYPES, SCHEDULERS

    add_config_arg(p)
    m = p.add_argument_group("model")
    m.add_argument("--model", help="model preset (see `reliable-ad models`; default tiny) or base model: hub id, folder, .safetensors")
    m.add_argument("--controlnet", help="ControlNet (canny): hub id, folder or single file (default: the preset's)")
    m.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="LoRA to fuse into the UNet and text encoder: hub id, folder or .safetensors file, kohya/A1111 "
                        "(lora_unet_*/lora_te_*) or diffusers/peft keys; repeat for several, each with its own scale, "
                        "e.g. --lora a.safetensors:0.5 --lora b.safetensors (no :SCALE = --lora-scale)")
    m.add_argument("--lora-scale", type=float, help="scale of a --lora given without :SCALE (paper: 0.8)")
    m.add_argument("--base-config", help="for a single-file base model: diffusers folder or hub id with its configs")
    m.add_argument("--controlnet-config", help="for a single-file ControlNet: diffusers ControlNet folder or hub id "
                   "with its config.json (offline: a local folder)")
    m.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    m.add_argument("--dtype", choices=DTYPES, help="default: fp16 on CUDA, fp32 on CPU")
    m.add_argument("--no-safety-checker", dest="safety_checker", action="store_const", const=False,
                   help="turn off the safety checker the base model ships (on by default)")
    s = p.add_argument_group("sampling (defaults: supplemental Table 1)")
    s.add_argument("--size", type=int, help="output side in px (default: the model's, 512 for SD1.5)")
    s.add_argument("--scheduler", choices=SCHEDULERS, help="sampler (default ddim)")
    s.add_argument("--steps", type=int, help="denoising steps (default 40)")
    s.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default 7.5)")
    s.add_argument("--guidance-rescale", type=float, metavar="PHI",
                   help="rescale the guided prediction towards the text prediction's std, in [0, 1], against "
                        "over-saturated images (Lin et al. 2023 recommend 0.7 for v-prediction / zero-terminal-SNR "
                        "models); default 0 = off, the paper's sampling")
    s.add_argument("--clip-skip", type=int, help="A1111 convention, 1 = no skip (default 2)")
    s.add_argument("--controlnet-scale", type=float, help="ControlNet conditioning scale (default 1.0)")
    s.add_argument("--eta", type=float, help="DDIM eta (default 0)")
    s.add_argument("--batch-size", type=int, help="images per pipeline call (default 4)")
    s.add_argument("--seed", type=int, help="run seed; each image's seed derives from it, the product and the attempt (default 0)")
    g = p.add_argument_group("product and prompt")
    g.add_argument("--preset", help="prompt preset (see `reliable-ad presets`)")
    g.add_argument("--presets-file", help="YAML/JSON file of presets (ours, or the authors' reference_prompts.json)")
    g.add_argument("--image-scale", type=float, help="product's longer side / image side (default: the preset's, 0.70-0.78)")
    g.add_argument("--keep-loc", action="store_const", const=True, help="keep the product's position instead of centring it")
    g.add_argument("--canny-low", type=int, help="Canny low threshold (default 100)")
    g.add_argument("--canny-high", type=int, help="Canny high threshold (default 200)")
    g.add_argument("--white-threshold", type=int, help="products without alpha: channel value from which a pixel is background (default 250)")
    g.add_argument("--box-alpha-threshold", type=int,
                   help="the product is cropped to its pixels with alpha >= this: 128 as the authors do, so a faint "
                        "drop shadow does not shrink the product; 1 keeps faint shadows (default 128)")
    add_speed_args(p)
    v = p.add_argument_group(
        "provenance", "Every image is labelled AI-generated (PNG text + XMP), carries a signed C2PA manifest and an "
        "invisible watermark; `reliable-ad verify IMAGE` checks them (README, \"Provenance\").")
    v.add_argument("--c2pa-cert", metavar="PEM", help="C2PA signing certificate chain, signing certificate first "
                   "(default: a self-signed development identity made once under $RELIABLE_AD_HOME/c2pa or "
                   "~/.cache/reliable-ad/c2pa: valid, but not trusted by validators)")
    v.add_argument("--c2pa-key", metavar="PEM", help="private key of --c2pa-cert (EC P-256, ES256; unencrypted PEM)")
    v.add_argument("--no-c2pa", dest="c2pa", action="store_const", const=False,
                   help="write no C2PA manifest (the PNG label and the watermark stay)")
    v.add_argument("--no-watermark", dest="watermark", action="store_const", const=False,
                   help="no invisible watermark")
    v.add_argument("--watermark-product", action="store_const", const=True,
                   help="watermark the product's pixels too (by default they stay exactly the cut-out's)")


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """generation.speed: how fast, never what (docs/benchmarks.md, "Speed options")."""
    from reliable_ad.generation.config import ATTENTION, COMPILE_MODES

    f = p.add_argument_group("speed", "Options that make generation faster without changing what it makes: "
                             "images stay equal within float tolerance; a resumed run may change them.")
    f.add_argument("--attention", choices=ATTENTION,
                   help="sdpa: torch's fused scaled_dot_product_attention (flash/memory-efficient kernels on a GPU; "
                        "default); default: diffusers' plain matmul + softmax attention, slower, for comparison")
    f.add_argument("--channels-last", action="store_const", const=True,
                   help="UNet, ControlNet and VAE in channels-last memory format (usually faster convolutions on a "
                        "GPU in fp16; off by default)")
    f.add_argument("--compile", action="store_const", const=True,
                   help="torch.compile the UNet and ControlNet: the first batch of each size compiles (about a "
                        "minute or more on a GPU; several on a CPU), later batches run faster; off by default")
    f.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode with --compile (default: default; reduce-overhead adds CUDA graphs)")
    f.add_argument("--no-reuse-control-embedding", dest="reuse_control_embedding", action="store_const", const=False,
                   help="recompute the ControlNet's embedding of the Canny image at every denoising step (by "
                        "default it is computed once per batch: the same result, less work)")
    f.add_argument("--overlap-inspection", action="store_const", const=True,
                   help="`run` only: inspect batch i (RFNet, depth, salience) in a worker thread, on a CUDA stream "
                        "of its own, while batch i+1 generates; the same verdicts and records in the same order "
                        "(off by default)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate ad images for product cut-outs (no inspection)",
        description=(
            "Generate advertising images around product cut-outs with Stable Diffusion + ControlNet "
            "inpainting. Writes labelled PNGs, manifest.jsonl and config.json into --out; running the "
            "same command again resumes and never duplicates an image."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("products", nargs="+", help="product images (RGBA cut-outs or products on white), folders, or a products .csv/.jsonl")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--num-per-product", "-n", type=int, help="images per product (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_generation_args(p)
    p.set_defaults(func=run)


def report_problems(problems) -> None:
    """Print each input problem once, as `skipped WHERE: PROBLEM; FIX`."""
    for prob in problems:
        print(f"skipped {prob.source}: {prob.message}", file=sys.stderr)


def failure_line(where: str, error: str) -> str:
    """`WHERE: ERROR`, or just `ERROR` when it names the product already (a product error starts with it)."""
    return error if Path(where).name and Path(where).name in error else f"{where}: {error}"


def run(args: argparse.Namespace) -> int:
    from reliable_ad.generation.config import GenerateConfig, validate_generate_config
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.generation.run import run_generate

    cfg = build_config(GenerateConfig, args, GENERATION_FLAGS)
    validate_generate_config(cfg)  # before anything is written: a bad value must not end up in config.json
    inputs, problems = read_product_inputs(args.products, check_preset=lambda name: get_preset(name, cfg.presets_file))
    report_problems(problems)
    summary = run_generate(inputs, cfg, args.out, progress=not args.no_progress, problems=problems)
    print(
        f"{summary.written} image(s) written, {summary.skipped} already done, "
        f"{len(summary.failed_products)} product(s) failed, in {summary.seconds:.1f} s -> {summary.out_dir}",
        file=sys.stderr,
    )
    reported = {prob.source for prob in problems}
    for where, err in summary.failed_products.items():
        if where not in reported:  # the input problems were printed above
            print(f"  failed: {failure_line(where, err)}", file=sys.stderr)
    return 1 if summary.failed_products or problems else 0
