"""`reliable-ad rfft train`: fine-tune the generator's ControlNet (or LoRA adapters) with RFNet feedback.

Several GPUs or nodes: `accelerate launch -m reliable_ad.cli.main rfft train --config ... --out ...`.
"""

from __future__ import annotations

import argparse
import sys

from reliable_ad.cli.common import add_config_arg, build_config

# flag -> config field
TRAIN_FLAGS = {
    "products": "data.products",
    "validation_products": "data.validation_products",
    "preset": "data.preset",
    "model": "model.model",
    "controlnet": "model.controlnet",
    "rfnet": "feedback.rfnet",
    "depth": "feedback.depth",
    "salience": "feedback.salience",
    "regularizer": "loss.regularizer",
    "beta": "loss.beta",
    "target": "trainable.target",
    "gradient_checkpointing": "trainable.gradient_checkpointing",
    "optimizer": "optim.optimizer",
    "learning_rate": "optim.learning_rate",
    "batch_size": "optim.batch_size",
    "gradient_accumulation_steps": "optim.gradient_accumulation_steps",
    "max_steps": "optim.max_steps",
    "validate_every": "validation.every",
    "mixed_precision": "runtime.mixed_precision",
    "device": "runtime.device",
    "seed": "runtime.seed",
}


def add_parser(sub) -> None:
    from reliable_ad.rfft.config import OPTIMIZERS, REGULARIZERS, TARGETS
    from reliable_ad.training.config import DEVICES, MIXED_PRECISION

    p = sub.add_parser("rfft", help="fine-tune the generator with RFNet feedback (RFFT)",
                       description="RFFT: fine-tune the ControlNet (or LoRA adapters) with RFNet's feedback, "
                                   "regularised by the Consistent Condition.")
    actions = p.add_subparsers(dest="rfft_command", metavar="ACTION")
    t = actions.add_parser(
        "train",
        help="train (or resume) an RFFT run",
        description=(
            "Train or resume an RFFT run in --out: config.json, logs/metrics.jsonl, checkpoints/, validation/ grids, "
            "and export/controlnet (use it with `reliable-ad generate --controlnet PATH`). Rerunning the same "
            "command resumes from the newest checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_arg(t)
    t.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    t.add_argument("--products", nargs="+", help="product images, folders or a products .csv/.jsonl")
    t.add_argument("--validation-products", nargs="+", help="held-out products (default: a share of --products)")
    t.add_argument("--preset", help="prompt preset (see `reliable-ad presets`)")
    t.add_argument("--model", help="base model preset or path (as `generate`)")
    t.add_argument("--controlnet", help="ControlNet to start from (default: the preset's)")
    t.add_argument("--rfnet", help="trained RFNet folder or hub id")
    t.add_argument("--depth", help="depth estimator (default: the one the RFNet was trained with)")
    t.add_argument("--salience", help="salience estimator (default: the one the RFNet was trained with)")
    t.add_argument("--regularizer", choices=REGULARIZERS, help="default consistent_condition; none = ReFL")
    t.add_argument("--beta", type=float, help="weight of the regulariser")
    t.add_argument("--target", choices=TARGETS, help="what trains (default controlnet)")
    t.add_argument("--gradient-checkpointing", action="store_const", const=True, help="recompute activations")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="default adamw; adamw8bit needs bitsandbytes")
    t.add_argument("--learning-rate", type=float, help="default 1e-5 (paper)")
    t.add_argument("--batch-size", type=int, help="images per micro-batch per process (default 4)")
    t.add_argument("--gradient-accumulation-steps", type=int, help="default 4 (paper)")
    t.add_argument("--max-steps", type=int, help="optimizer steps (default 1000)")
    t.add_argument("--validate-every", type=int, help="optimizer steps between validations; 0 = never")
    t.add_argument("--mixed-precision", choices=MIXED_PRECISION, help="default no")
    t.add_argument("--device", choices=DEVICES, help="cpu or auto (default auto; accelerate assigns GPUs)")
    t.add_argument("--seed", type=int, help="run seed (default 0)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from reliable_ad.rfft.config import RFFTConfig
    from reliable_ad.rfft.trainer import RFFTTrainer

    cfg = build_config(RFFTConfig, args, TRAIN_FLAGS)
    if not cfg.data.products:
        raise ValueError("no training products: set data.products in --config or pass --products")
    summary = RFFTTrainer.from_config(cfg, args.out).train(progress=not args.no_progress)
    if not summary.main_process:  # under `accelerate launch`, the main process reports
        return 0
    for path, err in summary.failed_products.items():
        print(f"  skipped product {path}: {err}", file=sys.stderr)
    done = f"{summary.step} step(s) done"
    status = f"stopped at step {summary.step} ({summary.stopped})" if summary.stopped else done
    print(f"RFFT {status}; exported: {summary.exported} -> {summary.out_dir}", file=sys.stderr)
    return 1 if summary.failed_products else 0
