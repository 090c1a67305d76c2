"""`reliable-ad modalities DIR`: precompute RFNet's depth and salience maps of a run or dataset (resumable)."""

from __future__ import annotations

import argparse
import sys

from reliable_ad.cli.data import LABEL_CODES_HELP

NONE = "none"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "modalities",
        help="precompute depth and salience maps for a run or an RF1M dataset",
        description=(
            "Compute the depth and salience map of every image of a generation run (RUN_DIR/manifest.jsonl) "
            "or an RF1M-style dataset folder into DIR/modalities/<depth|salience>/<image>.npy (float16) with "
            "DIR/modalities/meta.json. Rerunning skips the maps that exist. Training and `inspect` use them "
            "when they come from the model's estimators. Under accelerate launch / torchrun (or with --rank and "
            "--world-size) each process computes its share of the sorted images."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dir", metavar="RUN_DIR|DATASET_DIR", help="a generation run folder or an RF1M dataset folder")
    p.add_argument("--rfnet", help="take the estimators and map size of this RFNet (preset or folder)")
    p.add_argument("--depth", help=f"depth estimator (default dpt-hybrid, or the --rfnet model's); {NONE} = skip")
    p.add_argument("--salience", help=f"salience estimator (default u2netp, or the --rfnet model's); {NONE} = skip")
    p.add_argument("--size", type=int, help="map side in px (default 384, or the --rfnet model's)")
    p.add_argument("--batch-size", type=int, default=8, help="images per estimator call")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--label-codes", metavar="NAME|FILE", help="RF1M folders: " + LABEL_CODES_HELP)
    p.add_argument("--rank", type=int, help="this process's share: sorted images [rank::world-size] (default: the "
                                            "launcher's RANK, else 0)")
    p.add_argument("--world-size", type=int, help="processes sharing the work (default: WORLD_SIZE, else 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace) -> tuple[str | None, str | None, int]:
    from reliable_ad.rfnet.modality_spec import PAPER_ESTIMATORS

    depth, salience, size = PAPER_ESTIMATORS[0], PAPER_ESTIMATORS[1], 384
    if args.rfnet:
        from pathlib import Path

        from reliable_ad.rfnet.io import read_config, resolve_folder
        from reliable_ad.rfnet.modality_spec import resolve_modality_spec
        from reliable_ad.rfnet.presets import PACKAGED, _config_source

        source, config = args.rfnet, _config_source(args.rfnet)
        if config is None:
            if not Path(args.rfnet).is_dir() and args.rfnet not in PACKAGED:
                raise ValueError(f"--rfnet {args.rfnet!r} is neither a preset, a config file nor a saved RFNet folder")
            source = resolve_folder(args.rfnet)  # a packaged model ("synthad") is a saved folder too
            config = read_config(source)
        spec = resolve_modality_spec(source, config)
        depth, salience, size = spec.depth, spec.salience, spec.size
    depth = args.depth or depth
    salience = args.salience or salience
    return (None if depth == NONE else depth), (None if salience == NONE else salience), args.size or size


def run(args: argparse.Namespace) -> int:
    from reliable_ad.cli.data import show_class_histograms
    from reliable_ad.modalities.cache import build_cache
    from reliable_ad.rfnet.inspector import default_device

    show_class_histograms()
    depth, salience, size = _spec(args)
    s = build_cache(args.dir, depth=depth, salience=salience, size=size, batch_size=args.batch_size,
                    device=args.device or default_device(), progress=not args.no_progress, rank=args.rank,
                    world_size=args.world_size, label_codes=args.label_codes)
    print(f"{s.images} image(s): written depth {s.written['depth']}, salience {s.written['salience']}; "
          f"already cached depth {s.skipped['depth']}, salience {s.skipped['salience']}; {len(s.failed)} failed "
          f"-> {s.root / 'modalities'} (depth={depth}, salience={salience}, size={size})", file=sys.stderr)
    if s.images_per_second:
        print(f"{s.images_per_second:.2f} images/s, {s.bytes_per_image:.0f} bytes of maps per image "
              f"(recorded in {s.root / 'modalities' / 'throughput'})", file=sys.stderr)
    for image, error in s.failed.items():
        print(f"  failed: {image}: {error}", file=sys.stderr)
    return 1 if s.failed else 0
