"""`reliable-ad synthad`: SynthAd products to run the pipeline on, and labelled SynthAd datasets."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synthad",
        help="SynthAd: procedural products and labelled scenes (a world with a known truth)",
        description=(
            "SynthAd is a procedural world of products and ad scenes in which every failure class is known "
            "(see reliable_ad.synthad). `products` writes product cut-outs with captions for `reliable-ad run "
            "--model synthad`; `dataset` writes labelled scenes in the RF1M layout for `reliable-ad rfnet train`."
        ),
    )
    s = p.add_subparsers(dest="synthad_command", metavar="ACTION", required=True)
    q = s.add_parser("products", help="write N product cut-outs (RGBA PNG) and products.csv with their captions",
                     description="Write N procedural products as RGBA PNGs plus products.csv (image, caption), "
                                 "the input `reliable-ad run` reads.")
    q.add_argument("--out", required=True, help="folder to write (created)")
    q.add_argument("-n", type=int, default=8, help="number of products (default 8)")
    q.add_argument("--seed", type=int, default=0, help="products are a deterministic stream of this seed (default 0)")
    q.set_defaults(func=write_products)
    d = s.add_parser("dataset", help="write N labelled scenes in the RF1M layout (with true depth and salience)",
                     description="Write N labelled SynthAd scenes (images/, labels.txt, products/, captions.json, "
                                 "scenes.jsonl) with the renderer's true depth and salience maps.")
    d.add_argument("--out", required=True, help="folder to write (created)")
    d.add_argument("-n", type=int, default=1000, help="number of scenes (default 1000)")
    d.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    d.add_argument("--size", type=int, default=64, choices=(64, 128), help="scene side in px (default 64)")
    d.add_argument("--image-scale", type=float, default=None,
                   help="place products as `prepare_product` does at this scale (e.g. 0.35, the synthad preset's); "
                        "default: free placement")
    d.add_argument("--no-maps", action="store_true", help="skip the true depth and salience maps")
    d.set_defaults(func=write_dataset)
    g = s.add_parser("generated", help="generate images with a model and label them with the oracle (RF1M layout)",
                     description="Generate images of fresh SynthAd products with a generator (default the packaged "
                                 "synthad one) and label each with the oracle inspector, which plays the paper's "
                                 "human annotators: RFNet training data from the generator's own distribution. "
                                 "Resumable (images already labelled are kept).")
    g.add_argument("--out", required=True, help="folder to write (created; an existing one is resumed)")
    g.add_argument("--products", type=int, default=300, help="number of products (default 300)")
    g.add_argument("--per-product", type=int, default=4, help="images per product (default 4)")
    g.add_argument("--seed", type=int, default=12345, help="products, prompts and noise follow from it (default 12345)")
    g.add_argument("--model", default="synthad", help="generator preset or folder with base/ and controlnet/")
    g.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    g.add_argument("--keep-abstained", action="store_true",
                   help="label every image; by default images on which the oracle abstains (its decision changes "
                        "under an imperceptible re-reading) stay in records.jsonl but not in labels.txt")
    g.set_defaults(func=write_generated)


def write_products(args: argparse.Namespace) -> int:
    from reliable_ad.synthad.dataset import stream_product
    from reliable_ad.synthad.products import write_product_png
    from reliable_ad.core.io import atomic_write_text

    if args.n < 1:
        print(f"-n {args.n}: give at least 1 product", file=sys.stderr)
        return 2
    out = Path(args.out)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "caption"])
    for p in range(args.n):
        product = stream_product(args.seed, p)
        name = f"synthad_{args.seed}_{p:04d}.png"
        write_product_png(product, out / name)
        writer.writerow([name, product.caption])
    atomic_write_text(out / "products.csv", buf.getvalue())
    print(f"{args.n} products -> {out}/products.csv (run: reliable-ad run --model synthad {out}/products.csv --out runs/demo)")
    return 0


def write_dataset(args: argparse.Namespace) -> int:
    from reliable_ad.synthad.dataset import write_synthad_dataset

    summary = write_synthad_dataset(args.out, args.n, seed=args.seed, size=args.size, image_scale=args.image_scale,
                                    maps=not args.no_maps)
    print(f"{summary.written} scenes -> {args.out} ({summary.per_class})")
    for name, error in summary.failed.items():
        print(f"  failed {name}: {error}", file=sys.stderr)
    return 0 if summary.ok else 1


def write_generated(args: argparse.Namespace) -> int:
    for flag, value in (("--products", args.products), ("--per-product", args.per_product), ("--steps", args.steps)):
        if value < 1:
            print(f"{flag} {value}: give at least 1", file=sys.stderr)
            return 2
    if not 0 <= args.seed < 2**63:
        print(f"--seed {args.seed}: give an int in [0, 2**63)", file=sys.stderr)
        return 2
    model, steps = args.model, args.steps
    summary = generate_labelled_set(Path(args.out), args.products, args.per_product, seed=args.seed,
                                    generator=lambda: load_generator(model, steps=steps),
                                    abstain=not args.keep_abstained)
    print(f"{summary['images']} images of {summary['products']} products -> {args.out}; labelled "
          f"{summary['per_class']}, the oracle abstained on {summary['abstained']}")
    return 0


# --- generate, then label with the oracle (the top layer: generation + synthad) ---------------------------

PROMPT_PRESET = "synthad"  # the prompt preset whose format the SynthAd generator learnt


def load_generator(model: str, *, device: str = "cpu", steps: int = 25, batch_size: int = 8):
    """The AdGenerator of ``model``: a preset name (generation.models.MODEL_PRESETS), or a folder with
    ``base/`` and ``controlnet/`` diffusers folders (as the packaged SynthAd generator and the ones
    experiments/synthad/train_generator.py writes), made at the checkpoint's own size."""
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.generation.models import MODEL_PRESETS

    sampling = SamplingConfig(num_inference_steps=steps, batch_size=batch_size)
    folder = Path(model).expanduser()
    if model not in MODEL_PRESETS and (folder / "base").is_dir() and (folder / "controlnet").is_dir():
        config = ModelConfig(model=str(folder / "base"), controlnet=str(folder / "controlnet"), device=device,
                             safety_checker=False)
    else:
        config = ModelConfig(model=model, device=device, safety_checker=False)
    generator = AdGenerator.from_config(config, sampling)
    if model not in MODEL_PRESETS:  # a checkpoint's own size, not SD1.5's 512 (unet latents x VAE factor)
        generator.sampling.size = int(generator.pipe.unet.config.sample_size) * int(generator.pipe.vae_scale_factor)
    return generator


def generate_labelled_set(root: Path, products: int, per_product: int, *, seed: int, generator,
                          chunk: int = 32, abstain: bool = True) -> dict:
    """``products`` fresh SynthAd products x ``per_product`` images, generated with ``generator`` (an
    AdGenerator, or a function that makes one, called only when images are missing) from the
    ``synthad`` prompt preset, and labelled by the oracle into ``root`` (RF1M layout, resumable;
    `synthad.generated.write_labelled_set`, which leaves the images the oracle abstains on out of
    labels.txt unless ``abstain`` is False). Products, prompts and noise seeds follow from ``seed``;
    returns {"images", "products", "per_class", "abstained"}."""
    from reliable_ad.generation.generator import GenerationJob
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.generation.seeds import derive_seed
    from reliable_ad.synthad.generated import make_products, prepared, sub_seed, write_labelled_set

    preset = get_preset(PROMPT_PRESET)
    items = make_products(products, seed, prefix="rf")
    made: list = [generator] if hasattr(generator, "generate") else []

    def make_images(part):
        if not made:
            made.append(generator())
        gen = made[0]
        # the seed salts ("rfnet-prompt", "rfnet/") are the ones the shipped RFNet's labelled set was made with
        prompts = [preset.render(sub_seed(seed, "rfnet-prompt", item.key, k), caption=item.caption)
                   for item, k in part]
        seeds = [derive_seed(seed, f"rfnet/{item.key}", k) for item, k in part]
        jobs = [GenerationJob(prepared(item, gen.size, preset.image_scale), p.prompt, p.negative_prompt, int(s))
                for (item, _), p, s in zip(part, prompts, seeds)]
        images = [g.image for g in gen.generate(jobs)]
        return [(image, {"prompt": p.prompt, "slots": p.slot_values, "seed": s})
                for image, p, s in zip(images, prompts, seeds)]

    return write_labelled_set(root, items, per_product, make_images, image_scale=preset.image_scale, chunk=chunk,
                              abstain=abstain)
