"""Is gate 1's failure the VAE's? (docs/synthad.md, "Validity gates" / "Is it the VAE?")

    python -m experiments.synthad.vae_study --out runs/vae-study/X --vae-steps N [--scale-factor 4|2]
        [--init-from VAE_FOLDER] [--lr LR] [--threads T]
    python -m experiments.synthad.vae_study --eval VAE_FOLDER [...]   # PSNR and gate 1 of a VAE only
    python -m experiments.synthad.vae_study --probe blur:1.0 [...]      # a fixed degradation instead of a VAE

Trains a SynthAd VAE alone with stage 1 of `train_generator` (`train_vae` on `make_scene_tensors`,
the generator's training stream of seed 0), the architecture `build_tiny_components` makes at 64 px for
the given scale factor (4: the shipped one), from scratch or continuing a saved VAE; saves it in fp16
as `save_generator` does (an AutoencoderKL folder `gates --vae` takes), then measures on gate 1's 300
scenes (seed 0, 60 per class): the reconstruction PSNR of the uint8 round trip against the clean
render (whole image, before the product is pasted back) and gate 1 (`gates.gate1`, as
`python -m experiments.synthad.gates --vae FOLDER` computes it). Writes FOLDER/study.json.

--probe puts a fixed, non-learnt degradation in the VAE's place, to map what gate 1 tolerates:
`blur:S` (Gaussian blur of sigma S px), `resample:F` (area down by F, bicubic up: a linear decoder of a
64/F-px image; 3 channels where the VAE's latent has 4), `noise:S` (Gaussian noise of sigma S, uint8 scale).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiments.synthad import gates
from experiments.synthad.train_generator import (SIZE, UNET_CHANNELS, GeneratorTrainConfig, build_components,
                                                 make_scene_tensors, train_vae)
from reliable_ad.core.io import atomic_write_json
from reliable_ad.core.labels import CLASS_NAMES


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def evaluate(vae, per_class: int = 60, seed: int = 0) -> dict:
    from reliable_ad.synthad.oracle import OracleInspector

    t = time.perf_counter()
    items = gates.render_scenes(per_class, seed)
    clean = np.stack([item.scene.image for item in items])
    g1 = gates.gate1(items, vae, OracleInspector(), progress=False)
    g1.pop("_images")
    decoded = gates.vae_round_trip(vae, clean)
    rt = g1["round_trip"]
    return {"psnr_db": round(psnr(decoded, clean), 2),
            "gate1": {name: rt["per_class"][name]["rate"] for name in CLASS_NAMES} | {"overall": rt["overall"]["rate"]},
            "gate1_holds": g1["holds"], "mean_abs_change": rt["mean_abs_change"], "confusion": rt["confusion"],
            "per_variant": rt["per_variant"], "seconds": round(time.perf_counter() - t, 1)}


class Probe:
    """A degradation with the VAE interface `gates.vae_round_trip` uses (encode(x).latent_dist.mode(),
    decode(z).sample; x in [-1, 1], (B, 3, S, S))."""

    def __init__(self, spec: str):
        kind, _, amount = spec.partition(":")
        if kind not in ("blur", "resample", "noise"):
            raise ValueError(f"--probe {spec!r}: blur:S, resample:F or noise:S")
        self.kind, self.amount, self.calls = kind, float(amount), 0

    def encode(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

    def decode(self, x):
        import cv2
        from types import SimpleNamespace

        import torch.nn.functional as F

        if self.kind == "resample":
            f = int(self.amount)
            y = F.interpolate(F.avg_pool2d(x, f), scale_factor=f, mode="bicubic", align_corners=False)
        elif self.kind == "blur":
            a = x.permute(0, 2, 3, 1).numpy()
            y = torch.from_numpy(np.stack([cv2.GaussianBlur(im, (0, 0), self.amount) for im in a])).permute(0, 3, 1, 2)
        else:
            g = torch.Generator().manual_seed(self.calls)
            y = x + torch.randn(x.shape, generator=g) * (self.amount / 127.5)
        self.calls += 1
        return SimpleNamespace(sample=y)


def build_vae(scale_factor: int, seed: int = 0):
    if scale_factor == 4:
        return build_components(seed)["vae"]
    from reliable_ad.generation.tiny import build_tiny_components

    return build_tiny_components(seed=seed, image_size=SIZE, vae_scale_factor=scale_factor,
                                 unet_channels=UNET_CHANNELS)["vae"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.synthad.vae_study", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder of the trained VAE (AutoencoderKL) and study.json")
    p.add_argument("--eval", metavar="VAE_FOLDER", help="only measure this AutoencoderKL folder")
    p.add_argument("--probe", help="blur:S, resample:F or noise:S instead of a VAE")
    p.add_argument("--vae-steps", type=int, default=500)
    p.add_argument("--scale-factor", type=int, default=4, choices=(2, 4, 8))
    p.add_argument("--init-from", metavar="VAE_FOLDER", help="continue training this AutoencoderKL folder")
    p.add_argument("--lr", type=float, default=GeneratorTrainConfig.vae_lr)
    p.add_argument("--scenes", type=int, default=6000, help="training scenes (default 6000, as the shipped VAE)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1)")
    p.add_argument("--per-class", type=int, default=60)
    args = p.parse_args(argv)
    from diffusers import AutoencoderKL

    report: dict = {"args": vars(args)}
    if args.probe:
        vae, out = Probe(args.probe), None
    elif args.eval:
        vae = gates.load_vae_folder(args.eval)
        out = None
    else:
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        cfg = GeneratorTrainConfig(scenes=args.scenes, vae_steps=args.vae_steps, vae_lr=args.lr, threads=args.threads)
        t = time.perf_counter()
        data = make_scene_tensors(cfg.scenes, cfg.seed)
        report["scenes_seconds"] = round(time.perf_counter() - t, 1)
        vae = (AutoencoderKL.from_pretrained(args.init_from, torch_dtype=torch.float32) if args.init_from
               else build_vae(args.scale_factor))
        t = time.perf_counter()
        report["train"] = train_vae(vae, data, cfg, progress=False)
        report["train_seconds"] = round(time.perf_counter() - t, 1)
        out = Path(args.out)
        vae.to(torch.float16).save_pretrained(out)  # as save_generator ships it
        vae = gates.load_vae_folder(out)
    torch.set_num_threads(1)  # gate 1 as the gates run it
    report["eval"] = evaluate(vae, args.per_class)
    e = report["eval"]
    print(json.dumps({k: report.get(k) for k in ("train", "train_seconds")} | {"psnr_db": e["psnr_db"],
                     "gate1": e["gate1"], "eval_seconds": e["seconds"]}), file=sys.stderr)
    if out is not None:
        atomic_write_json(out / "study.json", report)
    elif args.out:
        atomic_write_json(Path(args.out), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
