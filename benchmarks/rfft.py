"""RFFT training-step cost: seconds and peak memory per optimizer step, ControlNet vs LoRA training,
with and without gradient checkpointing, and the ratio to a plain pipeline call over the same steps.

    python benchmarks/rfft.py                          # CPU: tiny models, 64 px, 8 DDIM steps
    python benchmarks/rfft.py --sd15 --device cuda     # GPU: SD1.5-sized random weights, 512 px, 40 steps,
                                                       # frozen parts fp16, fp16 autocast, RFNet-R50-sized judge
Each configuration runs in its own subprocess so that its peak memory is its own (CPU: peak RSS of
the process; CUDA: torch.cuda.max_memory_allocated). A step is one optimizer step of one micro-batch
(gradient accumulation 1): no-grad DDIM to the graded step, the graded step with CFG and L_CC's
teacher pass, VAE decode, paste-back, judge, backward, AdamW. "pipeline" is one plain
`StableDiffusionControlNetInpaintPipeline.__call__` on the same components, batch, steps and size,
interleaved with the training steps; "ratio" is the median of the per-repeat ratios. Results go to
stdout as JSON lines and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _items(size: int, n: int):
    from reliable_ad.data.product import prepare_product, product_from_arrays
    from reliable_ad.generation.prompts import get_preset
    from reliable_ad.rfft.data import TrainItem, product_view

    preset = get_preset("bright-indoor-beige")
    items = []
    for i in range(n):
        yy, xx = np.mgrid[0:256, 0:256]
        alpha = (((xx - 128) ** 2 / 60**2 + (yy - 140) ** 2 / 100**2) < 1).astype(np.uint8) * 255
        rgb = np.zeros((256, 256, 3), np.uint8)
        rgb[..., i % 3] = 200
        product = product_from_arrays(rgb, alpha, source=f"bench-{i}")
        prepared = prepare_product(product, size=size, image_scale=0.75)
        items.append(TrainItem(f"bench-{i}", prepared, product_view(product, size), "a product", preset))
    return items


def _judge(sd15: bool, device):
    from reliable_ad.rfft.feedback import RFNetJudge

    if not sd15:
        return RFNetJudge.from_pretrained("tiny", depth="tiny", salience="fine-grained", device=device)
    # the paper's RFNet size (ResNet-50 encoders, BERT-base caption encoder) with random weights; the
    # detached depth/salience maps come from the small estimators (they run without gradient)
    from reliable_ad.modalities import build_depth, build_salience
    from reliable_ad.rfnet import build_rfnet
    from reliable_ad.rfnet.processor import RFNetProcessor, build_tiny_tokenizer

    model = build_rfnet("rfnet-r50", load_pretrained=False).to(device)
    processor = RFNetProcessor(build_tiny_tokenizer(), image_size=384)
    return RFNetJudge(model, processor, build_depth("tiny", size=384, device=device), build_salience("fine-grained"))


def _pipeline(sd15: bool, device: str):
    if sd15:
        sys.path.insert(0, str(HERE))
        from generation import sd15_sized_pipeline  # benchmarks/generation.py

        return sd15_sized_pipeline(torch.float32, device), {"native_size": 512}
    from reliable_ad.generation.config import ModelConfig
    from reliable_ad.generation.models import load_pipeline

    return load_pipeline(ModelConfig(model="tiny", device=device, dtype="fp32", safety_checker=False))


def _pipeline_call(pipe, items, steps: int, size: int):
    """A plain `pipe(...)` on the same batch, steps and size as a training micro-batch."""
    from PIL import Image

    from reliable_ad.generation.weighting import encode_prompt_pair

    te = pipe.text_encoder
    pos, neg = encode_prompt_pair(pipe.tokenizer, te, ["a product on a table"] * len(items), [""] * len(items),
                                  device=te.device, dtype=te.dtype)
    images = [Image.fromarray(i.prepared.image) for i in items]
    masks = [Image.fromarray(i.prepared.mask) for i in items]
    controls = [Image.fromarray(i.prepared.control) for i in items]

    def call():
        pipe(prompt_embeds=pos, negative_prompt_embeds=neg, image=images, mask_image=masks, control_image=controls,
             height=size, width=size, num_inference_steps=steps, guidance_scale=7.5,
             generator=[torch.Generator().manual_seed(k) for k in range(len(items))], output_type="np")

    return call


def run_one(spec: dict) -> dict:
    """One configuration, in this process: build the trainer, then time training steps interleaved with
    plain pipeline calls on the same components (the ratio is robust to a noisy machine)."""
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.models import set_scheduler
    from reliable_ad.rfft.config import OptimConfig, RFFTConfig, RuntimeConfig, TrainableConfig, ValidationConfig
    from reliable_ad.rfft.trainer import RFFTTrainer
    from reliable_ad.training.accelerator import make_accelerator

    torch.manual_seed(0)
    sd15, device = spec["sd15"], spec["device"]
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    steps, size, batch = spec["steps"], spec["size"], spec["batch"]
    start = max(0, steps - max(1, steps // 4))  # the graded step from the last quarter (paper: last ten of 40)
    cfg = RFFTConfig(
        model=ModelConfig(model="tiny", safety_checker=False),
        sampling=SamplingConfig(size=size, num_inference_steps=steps, batch_size=batch, clip_skip=1),
        rf_interval=(start, steps),
        trainable=TrainableConfig(target=spec["target"], lora_modules=spec["lora_modules"],
                                  gradient_checkpointing=spec["checkpointing"]),
        optim=OptimConfig(batch_size=batch, gradient_accumulation_steps=1, max_steps=10**6),
        validation=ValidationConfig(every=0),
        runtime=RuntimeConfig(device="cpu" if not cuda else "auto", mixed_precision=spec["mixed_precision"],
                              tensorboard=False),
    )
    accelerator = make_accelerator(cfg.runtime)
    pipe, info = _pipeline(sd15, str(accelerator.device))
    set_scheduler(pipe, "ddim")
    pipe.set_progress_bar_config(disable=True)
    items = _items(size, batch)
    judge = _judge(sd15, accelerator.device)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    with tempfile.TemporaryDirectory() as out:
        trainer = RFFTTrainer(cfg, out, pipe=pipe, info=info, judge=judge, train_items=items, accelerator=accelerator)
        n_trainable = sum(p.numel() for p in trainer.trainable.parameters())
        call = _pipeline_call(pipe, items, steps, size)
        with torch.no_grad(), accelerator.autocast():  # frozen parts in half precision, the student in fp32
            call()
        trainer.run_steps(1)  # warm-up; allocates the optimizer state
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        step_times, pipe_times = [], []
        for _ in range(spec["repeats"]):
            sync()
            t = time.perf_counter()
            with torch.no_grad(), accelerator.autocast():
                call()
            sync()
            pipe_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            trainer.run_steps(1)
            sync()
            step_times.append(time.perf_counter() - t)
    ratio = statistics.median(s / p for s, p in zip(step_times, pipe_times))
    result = {**{k: spec[k] for k in ("target", "lora_modules", "checkpointing", "size", "steps", "batch")},
              "model": "sd15-sized" if sd15 else "tiny", "device": device, "trainable_params": n_trainable,
              "step_s": round(statistics.median(step_times), 4), "pipeline_s": round(statistics.median(pipe_times), 4),
              "ratio": round(ratio, 3), "repeats": spec["repeats"]}
    if cuda:
        result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        result["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        result["rss_after_loading_gib"] = round(rss_loaded, 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd15", action="store_true", help="SD1.5-sized random weights (needs a GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=None, help="default 512 with --sd15, else 64")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps; default 40 with --sd15, else 8")
    ap.add_argument("--batch", type=int, default=None, help="images per micro-batch; default 1 with --sd15, else 2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--targets", default="controlnet,lora-controlnet,lora-unet",
                    help="comma list of controlnet, lora-controlnet, lora-unet, lora-both")
    ap.add_argument("--checkpointing", default="off,on", help="comma list of off, on")
    ap.add_argument("--mixed-precision", default=None, help="default fp16 on CUDA, else no")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON spec in this process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return

    lora = {"lora-controlnet": ["controlnet"], "lora-unet": ["unet"], "lora-both": ["controlnet", "unet"]}
    rows = []
    for name in args.targets.split(","):
        for ckpt in args.checkpointing.split(","):
            spec = dict(sd15=args.sd15, device=args.device, size=args.size or (512 if args.sd15 else 64),
                        steps=args.steps or (40 if args.sd15 else 8), batch=args.batch or (1 if args.sd15 else 2),
                        repeats=args.repeats, target="controlnet" if name == "controlnet" else "lora",
                        lora_modules=lora.get(name, ["controlnet"]), checkpointing=ckpt == "on",
                        mixed_precision=args.mixed_precision or ("fp16" if args.device.startswith("cuda") else "no"))
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                  text=True, env=env)
            if proc.returncode != 0:
                print(json.dumps({"config": name, "checkpointing": ckpt, "error": proc.stderr[-2000:]}), flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["config"] = name
            rows.append(row)
            print(json.dumps(row), flush=True)
    cuda = args.device.startswith("cuda")
    memory = "peak GiB (CUDA)" if cuda else "peak RSS GiB (above loaded models)"
    print(f"\n| training | checkpointing | trainable params | s / step | pipeline s | step / pipeline | {memory} |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mem = f"{r['peak_gib']:.2f}" if cuda else \
            f"{r['peak_rss_gib']:.2f} (+{r['peak_rss_gib'] - r['rss_after_loading_gib']:.3f})"
        print(f"| {r['config']} | {'on' if r['checkpointing'] else 'off'} | {r['trainable_params'] / 1e6:.2f}M | "
              f"{r['step_s']:.3f} | {r['pipeline_s']:.3f} | {r['ratio']:.2f} | {mem} |")


if __name__ == "__main__":
    main()
