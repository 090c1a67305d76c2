"""Generator overhead vs a direct diffusers call, and (on a GPU) SD1.5-sized throughput and memory.

    python benchmarks/generation.py                       # CPU: tiny model, overhead ratio
    python benchmarks/generation.py --sd15 --device cuda  # GPU: SD1.5-sized random weights, 512 px,
                                                          # 40 DDIM steps, fp16, batch 1/4/8
Both calls use the same components, settings and seeds, interleaved in one process, so the ratio is
robust to machine noise. Results go to stdout as JSON lines; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image


def sd15_sized_pipeline(dtype: torch.dtype, device: str):
    """Random weights with SD1.5's exact shapes (UNet 859.5M params, ControlNet, VAE, CLIP ViT-L text)."""
    from reliable_ad.generation.sd15_shaped import sd15_shaped_pipeline

    return sd15_shaped_pipeline(dtype, device)


def _prepared(size: int):
    from reliable_ad.data.product import prepare_product, product_from_arrays

    yy, xx = np.mgrid[0:256, 0:256]
    alpha = (((xx - 128) ** 2 / 60**2 + (yy - 140) ** 2 / 100**2) < 1).astype(np.uint8) * 255
    rgb = np.zeros((256, 256, 3), np.uint8)
    rgb[..., 0] = 200
    return prepare_product(product_from_arrays(rgb, alpha), size=size, image_scale=0.75)


def bench(gen, batch: int, repeats: int) -> dict:
    from reliable_ad.generation.generator import GenerationJob

    p = _prepared(gen.size)
    jobs = [GenerationJob(p, "a product on a wooden table, (snowy mountain:1.2), best quality", "lowres", 1000 + i)
            for i in range(batch)]
    plain = [GenerationJob(p, "a product on a wooden table, snowy mountain, best quality", "lowres", 1000 + i)
             for i in range(batch)]
    s = gen.sampling

    def direct():
        gen.pipe(prompt=[j.prompt for j in plain], negative_prompt=[j.negative_prompt for j in plain],
                 image=[Image.fromarray(p.image)] * batch, mask_image=[Image.fromarray(p.mask)] * batch,
                 control_image=[Image.fromarray(p.control)] * batch, height=gen.size, width=gen.size,
                 num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale, eta=s.eta,
                 controlnet_conditioning_scale=s.controlnet_conditioning_scale,
                 generator=[torch.Generator().manual_seed(j.seed) for j in plain], output_type="np")

    def ours():
        gen.generate(plain, batch_size=batch)

    def ours_weighted():
        gen.generate(jobs, batch_size=batch)

    sync = torch.cuda.synchronize if gen.device.type == "cuda" else (lambda: None)
    times = {"direct": [], "ours": [], "ours_weighted": []}
    direct(), ours()  # warm-up
    if gen.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        for name, fn in (("direct", direct), ("ours", ours), ("ours_weighted", ours_weighted)):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"batch": batch, "size": gen.size, "steps": s.num_inference_steps, "device": str(gen.device),
           "images_per_s_direct": batch / med["direct"], "images_per_s_ours": batch / med["ours"],
           "images_per_s_ours_weighted_prompt": batch / med["ours_weighted"],
           "overhead_ratio": med["ours"] / med["direct"], "repeats": repeats}
    if gen.device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd15", action="store_true", help="SD1.5-sized random weights instead of the tiny model")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--size", type=int, default=None, help="default: 512 with --sd15, else 128")
    ap.add_argument("--steps", type=int, default=None, help="default: 40 with --sd15, else 20")
    ap.add_argument("--batches", default=None, help="comma list; default 1,4,8 with --sd15, else 4")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.generation.models import select_device_dtype

    dev, dtype = select_device_dtype(args.device, args.dtype or "auto")
    size = args.size or (512 if args.sd15 else 128)
    steps = args.steps or (40 if args.sd15 else 20)
    batches = [int(b) for b in (args.batches or ("1,4,8" if args.sd15 else "4")).split(",")]
    # clip skip 1 (none): diffusers 0.42 cannot clip-skip with transformers 5, so the plain call runs without it
    sampling = SamplingConfig(size=size, num_inference_steps=steps, clip_skip=1)
    if args.sd15:
        gen = AdGenerator(sd15_sized_pipeline(dtype, str(dev)), sampling, {"native_size": size})
    else:
        gen = AdGenerator.from_config(ModelConfig(model="tiny", device=str(dev), dtype=args.dtype or "auto"), sampling)
    torch.manual_seed(0)
    for b in batches:
        print(json.dumps({"model": "sd15-sized" if args.sd15 else "tiny", "dtype": str(dtype), **bench(gen, b, args.repeats)}), flush=True)


if __name__ == "__main__":
    main()
