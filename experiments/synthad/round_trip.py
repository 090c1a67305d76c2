"""SynthAd scenes as the generator shows them, with labels known by construction (docs/synthad.md,
"RFNet on valid labels"): rendered scenes passed through the generator's VAE with the product pasted
back, exactly as gate 1 does, written as an RF1M folder that `train_rfnet --extra-data` takes.

    python -m experiments.synthad.round_trip --vae runs/gen-v2/base/vae --out runs/rt --scenes 6000 [--seed 3000]

The label of each scene is the one the renderer injected, not the oracle's reading: while gate 1
holds (the oracle agrees with these labels >= 95% per class), training on them teaches RFNet what the
defects look like after the VAE, which is what generated images show.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from experiments.synthad.train_rfnet import CLASS_SHARES, IMAGE_SCALE

DEFAULT_SEED = 3_000  # no other SynthAd data stream uses it (train_rfnet: 1,000 + seed, 2,000 + seed, 9,000 + seed)


def round_trip_transform(vae, image_scale: float = IMAGE_SCALE):
    """scene item -> its image after the VAE round trip, with the product pasted back as generation pastes it."""
    from experiments.synthad import gates
    from reliable_ad.data.product import paste_back, prepare_product

    def transform(item):
        decoded = gates.vae_round_trip(vae, item.scene.image[None])[0]
        return paste_back(decoded, prepare_product(item.product.to_product(), item.scene.size, image_scale))

    return transform


def write_round_trip_dataset(out: str | Path, vae_folder: str | Path, scenes: int, seed: int = DEFAULT_SEED):
    from experiments.synthad import gates
    from reliable_ad.synthad.dataset import write_synthad_dataset

    vae = gates.load_vae_folder(vae_folder)
    return write_synthad_dataset(out, scenes, seed=seed, size=64, class_shares=CLASS_SHARES, image_scale=IMAGE_SCALE,
                                 maps=False, transform=round_trip_transform(vae),
                                 transform_name=f"vae round trip + paste-back ({Path(vae_folder).resolve()})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.synthad.round_trip", description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", required=True, help="the generator's AutoencoderKL folder (e.g. GENERATOR/base/vae)")
    p.add_argument("--out", required=True, help="the RF1M folder to write")
    p.add_argument("--scenes", type=int, default=6000)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = p.parse_args(argv)
    if args.scenes < 1:
        p.error(f"--scenes {args.scenes}: give at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = write_round_trip_dataset(args.out, args.vae, args.scenes, args.seed)
    print(f"{summary.written} scenes in {args.out}: {dict(summary.per_class)}; {len(summary.failed)} not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
