"""`reliable-ad models` and `reliable-ad presets`: what can be named on the command line."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list model presets", description="List the model presets usable with --model.")
    p.set_defaults(func=list_models)
    p = sub.add_parser("presets", help="list prompt presets", description="List prompt presets (built-in or from a file).")
    p.add_argument("--presets-file", help="a presets file to list instead of the built-ins")
    p.set_defaults(func=list_presets)


def list_models(args: argparse.Namespace) -> int:
    from reliable_ad.generation.models import MODEL_PRESETS

    for p in MODEL_PRESETS.values():
        src = "built locally from configs" if p.base is None else f"{p.base} + {p.controlnet}"
        print(f"{p.name:14s} {p.native_size:4d}px  {p.description}\n{'':20s}{src}")
    return 0


def list_presets(args: argparse.Namespace) -> int:
    from reliable_ad.generation.prompts import builtin_presets, load_presets

    presets = load_presets(args.presets_file) if args.presets_file else builtin_presets()
    for name, p in presets.items():
        slots = ", ".join(f"{{{k}}}: {len(v)} values" for k, v in p.slots.items())
        print(f"{name}  (image_scale {p.image_scale}{'; ' + slots if slots else ''})\n    {p.prompt}")
    return 0
