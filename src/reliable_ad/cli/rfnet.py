"""`reliable-ad rfnet train|eval|presets`: train RFNet (or a baseline), evaluate a saved one, list presets.

Training and evaluation run on one process as is, and on several GPUs or nodes under accelerate:

    accelerate launch --num_processes 8 -m reliable_ad.cli.main rfnet train --config rfnet.yaml --out runs/rfnet

Several CPU processes (gloo): accelerate's --cpu starts them only through MPI; without MPI use its
torchrun launcher and the trainer's CPU switch:
    accelerate launch --multi_gpu --num_processes 2 -m reliable_ad.cli.main rfnet train ... --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from reliable_ad.cli.data import LABEL_CODES_HELP, show_class_histograms

# flag -> TrainConfig field
TRAIN_FLAGS = {
    "source": "model.source",
    "depth": "model.depth",
    "salience": "model.salience",
    "epochs": "optim.epochs",
    "learning_rate": "optim.learning_rate",
    "batch_size": "optim.batch_size",
    "gradient_accumulation_steps": "optim.gradient_accumulation_steps",
    "class_weighting": "optim.class_weighting",
    "max_steps": "optim.max_steps",
    "unsuitable": "data.unsuitable",
    "shards": "data.shards",
    "split_seed": "data.split_seed",
    "mixed_precision": "runtime.mixed_precision",
    "device": "runtime.device",
    "num_workers": "num_workers",
    "checkpoint_every": "runtime.checkpoint_every",
    "seed": "runtime.seed",
}


class _OldFlag(argparse.Action):
    """A hidden old spelling of a flag: stores into the new flag's dest with a FutureWarning."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(f"{option_string} is deprecated, use {self.new}", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_parser(sub) -> None:
    p = sub.add_parser("rfnet", help="train and evaluate RFNet",
                       description="Train and evaluate RFNet (docs/method.md §3).")
    rsub = p.add_subparsers(dest="rfnet_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])
    _add_train(rsub)
    _add_eval(rsub)
    pr = rsub.add_parser("presets", help="list RFNet presets", description="List the RFNet presets usable as a model.")
    pr.set_defaults(func=list_presets)


def _add_train(rsub) -> None:
    from reliable_ad.data.splits import WEIGHT_SCHEMES
    from reliable_ad.training.config import DEVICES, MIXED_PRECISION

    p = rsub.add_parser(
        "train",
        help="train RFNet or a baseline",
        description=(
            "Train RFNet with accelerate (defaults: the paper's schedule on the rfnet-r50 preset), fit the "
            "temperature on the val split, evaluate val and test, save the model in OUT/model. Rerunning the "
            "same command resumes from the newest checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML/JSON TrainConfig; flags override it")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="data sources (RF1M folders, run folders or manifests, annotation exports); "
                        "replace the config's")
    p.add_argument("--shards", metavar="DIR|GLOB",
                   help="train on WebDataset shards written by `reliable-ad data shard` (each process and DataLoader "
                        "worker reads its own shards; resumes exactly); --data then gives only the val/test data")
    p.add_argument("--label-codes", metavar="NAME|FILE", help=LABEL_CODES_HELP + " (applies to every --data source)")
    p.add_argument("--model", dest="source",
                   help="preset (see `reliable-ad rfnet presets`), config file or saved folder")
    p.add_argument("--depth", help="depth estimator (default: the model's)")
    p.add_argument("--salience", help="salience estimator (default: the model's)")
    p.add_argument("--epochs", type=int, help="epochs (default 10)")
    p.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--lr", dest="learning_rate", type=float, action=_OldFlag, new="--learning-rate")
    p.add_argument("--batch-size", type=int, help="batch size per process (default 32)")
    p.add_argument("--gradient-accumulation-steps", type=int, help="batches per optimizer step (default 1)")
    p.add_argument("--grad-accum-steps", dest="gradient_accumulation_steps", type=int, action=_OldFlag,
                   new="--gradient-accumulation-steps")
    p.add_argument("--class-weighting", choices=WEIGHT_SCHEMES, help="loss weights from class counts (default none)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--unsuitable", help="Unsuitable label: drop, keep or merge:<class> (default drop)")
    p.add_argument("--split-seed", type=int, help="seed of the by-product split (default 0)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISION, help="default auto: bf16/fp16 on GPU")
    p.add_argument("--device", choices=DEVICES, help="auto (the launcher's / GPU if any) or cpu")
    p.add_argument("--num-workers", type=int, help="DataLoader workers per process (default 4)")
    p.add_argument("--checkpoint-every", type=int, help="optimizer steps between checkpoints (default 1000)")
    p.add_argument("--seed", type=int, help="data order and dropout seed (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config field, e.g. runtime.log_every=5 or model.overrides.modalities.depth=false "
                        "(repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def _add_eval(rsub) -> None:
    p = rsub.add_parser(
        "eval",
        help="evaluate a saved RFNet on labelled data",
        description=(
            "Evaluate a saved RFNet (with its stored temperature) on labelled data: per-class precision, recall, "
            "F1, macro-F1, confusion matrix, Available AP, ECE, into OUT/metrics.json (+ PNGs with matplotlib) "
            "and OUT/predictions.jsonl. Runs under `accelerate launch` too; each sample is evaluated once."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="saved RFNet folder, hub id, or preset (tiny)")
    p.add_argument("--data", required=True, nargs="+", metavar="PATH",
                   help="RF1M folders, run folders or manifests, annotation exports")
    p.add_argument("--out", required=True, help="folder for the report")
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="evaluate everything, or one split of the by-product split")
    p.add_argument("--split-seed", type=int,
                   help="seed of the by-product split (default: the model's training.json, else 0)")
    p.add_argument("--unsuitable",
                   help="Unsuitable label: drop, keep or merge:<class> (default: as in training, else drop)")
    p.add_argument("--label-codes", default="rf1m", metavar="NAME|FILE", help=LABEL_CODES_HELP)
    p.add_argument("--batch-size", type=int, default=32, help="batch size per process")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per process")
    p.add_argument("--depth", help="depth estimator (default: the model's modalities.json)")
    p.add_argument("--salience", help="salience estimator (default: the model's modalities.json)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu"), help="auto (GPU if any) or cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from reliable_ad.cli.common import overrides_from_args
    from reliable_ad.core.config import merge_dicts
    from reliable_ad.rfnet.train import train
    from reliable_ad.rfnet.train_config import TrainConfig, parse_set

    show_class_histograms()
    overrides = overrides_from_args(args, TRAIN_FLAGS)
    if args.data:
        codes = {"label_codes": args.label_codes} if args.label_codes else {}
        overrides = merge_dicts(overrides, {"data": {"sources": [{"path": path, **codes} for path in args.data]}})
    config = TrainConfig.load(args.config, merge_dicts(overrides, parse_set(args.set)))
    if args.label_codes and not args.data:  # the config file's sources
        config = TrainConfig.from_dict(merge_dicts(config.to_dict(), {"data": {"sources": [
            {**source, "label_codes": args.label_codes} for source in config.to_dict()["data"]["sources"]]}}))
    metrics = train(config, args.out, progress=not args.no_progress)
    if not _is_main_process():
        return 0
    for split, m in metrics.items():
        ap = m.get("available", {}).get("average_precision")
        print(f"{split}: n={m.get('n')} accuracy={m.get('accuracy', float('nan')):.4f} "
              f"macro_f1={m.get('macro_f1', float('nan')):.4f} available_ap={ap if ap is None else round(ap, 4)} "
              f"temperature={m.get('temperature'):.4f}", file=sys.stderr)
    print(f"model saved to {args.out}/model", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from reliable_ad.rfnet.eval_loop import evaluate_model
    from reliable_ad.rfnet.train_config import DataSource

    show_class_histograms()
    sources = [DataSource(path, label_codes=args.label_codes) for path in args.data]
    metrics = evaluate_model(
        args.model, sources, args.out, split=args.split, unsuitable=args.unsuitable,
        split_seed=args.split_seed, batch_size=args.batch_size, num_workers=args.num_workers, depth=args.depth,
        salience=args.salience, device=args.device, progress=not args.no_progress,
    )
    if not _is_main_process():
        return 0
    summary = {k: metrics.get(k) for k in ("n", "accuracy", "macro_f1", "ece", "n_unreadable")}
    summary["available_ap"] = metrics.get("available", {}).get("average_precision")
    print(json.dumps(summary), file=sys.stderr)
    return 0


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def list_presets(args: argparse.Namespace) -> int:
    from reliable_ad.rfnet.presets import list_presets as presets

    for name, description in presets().items():
        print(f"{name:20s} {description}")
    return 0
