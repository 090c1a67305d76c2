"""`reliable-ad data index|shard`: check how a labelled release is read (label codes, archives, class
histogram), and write it as WebDataset shards that `rfnet train --shards` streams (docs/method.md §3)."""

from __future__ import annotations

import argparse
import logging
import sys

LABEL_CODES_HELP = ("what integer labels in an RF1M label file mean: rf1m (the release README's 1 Available, "
                    "2 Unsuitable, 3 Space Mismatch, 4 Size Mismatch, 5 Indistinctiveness, 6 Shape Hallucination; "
                    "default), paper0 (0..5 in the paper's order, Unsuitable last) or a JSON/YAML file "
                    "{code: class name}. Class names in the file always work")


def show_class_histograms() -> None:
    """Let the readers' class histograms through at the CLI's default log level: a wrong label-code
    mapping shows at once."""
    logging.getLogger("reliable_ad.data.label_codes").setLevel(logging.INFO)


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="index a labelled release, write WebDataset shards",
                       description="Labelled data at scale: check how an RF1M release is read, write shards.")
    dsub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    i = dsub.add_parser(
        "index", help="read an RF1M release's label file and archives; print counts and the class histogram",
        description="Index an RF1M folder (label file, images in folders or zip archives, read in place) and print "
                    "rows, archives, matched members, problems and the class histogram. Nothing is written.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    i.add_argument("root", metavar="RF1M_DIR", help="folder with label.txt and the images or *.zip archives")
    i.add_argument("--label-file", help="label file relative to RF1M_DIR (default: label.txt, labels.txt, ...)")
    i.add_argument("--label-codes", default="rf1m", metavar="NAME|FILE", help=LABEL_CODES_HELP)
    i.set_defaults(func=run_index)

    s = dsub.add_parser(
        "shard", help="write labelled data as WebDataset tar shards (resumable)",
        description=(
            "Write the samples of a labelled source (RF1M folder, zipped or not; run folder; annotation export) as "
            "WebDataset tar shards of about --shard-size bytes: <key>.png|jpg (generated image), <key>.product.png, "
            "<key>.txt (caption), <key>.cls (class), <key>.depth.npy/<key>.salience.npy when the modality cache "
            "has them, <key>.json (origin). Samples are shuffled once (--seed) so shards mix classes. Each shard "
            "is written as .tmp and renamed; rerunning the same command skips finished shards. OUT/shards.json "
            "lists counts per shard and the class histogram. Train with `rfnet train --shards OUT`."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("source", metavar="SOURCE", help="RF1M folder, run folder or manifest, or annotation export")
    s.add_argument("--out", required=True, help="folder for the shards and shards.json")
    s.add_argument("--kind", default="auto", choices=("auto", "rf1m", "manifest", "annotations"),
                   help="source kind; auto guesses from the path")
    s.add_argument("--label-file", help="RF1M: label file relative to SOURCE")
    s.add_argument("--label-codes", default="rf1m", metavar="NAME|FILE", help=LABEL_CODES_HELP)
    s.add_argument("--unsuitable", default="drop", help="Unsuitable label: drop, keep or merge:<class>")
    s.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="write everything, or one split of the by-product split (train with the train split's "
                        "shards and evaluate on the same --split-seed's val/test)")
    s.add_argument("--split-seed", type=int, default=0, help="seed of the by-product split")
    s.add_argument("--split-fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"),
                   help="shares of products per split")
    s.add_argument("--shard-size", default="1GB", help="bytes per shard, about (1GB, 500MB, ...)")
    s.add_argument("--seed", type=int, default=0, help="the one shuffle of the samples before sharding")
    s.add_argument("--no-cached-maps", action="store_true", help="leave the modality cache's maps out")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=run_shard)


def run_index(args: argparse.Namespace) -> int:
    from reliable_ad.data.rf1m import build_index

    show_class_histograms()
    index = build_index(args.root, label_file=args.label_file, label_codes=args.label_codes)
    in_archives = int((index.member_of_row >= 0).sum())
    print(f"{index.label_path}: {len(index)} rows (label codes {index.codes.name!r}: {index.codes.describe()}); "
          f"{len(index.members.archives)} zip archive(s) with {len(index.members.names)} image members, "
          f"{in_archives} rows found in them; {len(index.problems)} problem(s)", file=sys.stderr)
    print("classes: " + ", ".join(f"{k} {v}" for k, v in index.histogram.items()), file=sys.stderr)
    for problem in index.problems[:20]:
        print(f"  {problem.file}:{problem.line}: {problem.message}", file=sys.stderr)
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from reliable_ad.data.readers import policy_class_names
    from reliable_ad.data.shards import write_shards
    from reliable_ad.data.splits import split_by_product
    from reliable_ad.modalities.cache import attach_cached_maps, read_meta
    from reliable_ad.rfnet.trainer_data import read_source, source_kind

    show_class_histograms()
    kind, path = source_kind(args.source, args.kind)
    samples, problems = read_source(path, kind, unsuitable=args.unsuitable, label_file=args.label_file,
                                    label_codes=args.label_codes, use_cache=False)
    root = path if kind == "rf1m" else path.parent
    maps = {}
    if not args.no_cached_maps and (meta := read_meta(root)):
        samples, counts = attach_cached_maps(samples, root)
        maps = {k: meta.get(k) for k in ("depth", "salience", "size") if meta.get(k) is not None}
        print(f"cached maps attached: {counts}", file=sys.stderr)
    if args.split != "all":
        keep = split_by_product(samples, tuple(args.split_fractions), args.split_seed)[args.split]
        samples = [samples[i] for i in keep]
    if not samples:
        raise ValueError(f"no samples to shard from {args.source!r} ({len(problems)} problems); check the source "
                         "and --label-codes")
    settings = {"source": str(path.resolve()), "kind": kind, "label_codes": args.label_codes,
                "unsuitable": args.unsuitable, "split": args.split, "split_seed": args.split_seed,
                "split_fractions": list(args.split_fractions), "maps": maps}
    summary = write_shards(samples, args.out, class_names=policy_class_names(args.unsuitable),
                           shard_size=args.shard_size, seed=args.seed, settings=settings,
                           progress=not args.no_progress)
    total = sum(s["count"] for s in summary.shards)
    print(f"{len(summary.shards)} shard(s) in {args.out} ({summary.written} written, {summary.skipped} already "
          f"complete), {total} samples, {len(summary.failed)} failed; {len(problems)} source problem(s)",
          file=sys.stderr)
    for failure in summary.failed[:20]:
        print(f"  failed: {failure['key']} ({failure['source']}): {failure['error']}", file=sys.stderr)
    return 0 if summary.ok else 1
