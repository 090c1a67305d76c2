"""`reliable-ad models` and `reliable-ad presets`: what can be named on the command line."""

from __future__ import annotations

import argparse
import sys

from reliable_ad.core.registry import KIND_TITLES, KINDS, list_entries


def add_parser(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list every registered name: model presets, RFNets, estimators, backbones, prompt presets",
        description="List the registry (reliable_ad.core.registry) grouped by kind, with descriptions: "
        "each name works where its kind is asked for (model: --model, rfnet: --rfnet, depth: --depth, "
        "salience: --salience, backbone: image_encoder.type, prompt: --preset). A folder, a hub id "
        "('org/model') or a file works there too.",
    )
    p.add_argument("pattern", nargs="?", help="only names matching this pattern (fnmatch, e.g. 'rfnet-*', '*synthad*')")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.set_defaults(func=list_models)
    p = sub.add_parser("presets", help="list prompt presets", description="List prompt presets (built-in or from a file).")
    p.add_argument("--presets-file", help="a presets file to list instead of the built-ins")
    p.set_defaults(func=list_presets)


def list_models(args: argparse.Namespace) -> int:
    groups = []
    for kind in (args.kind,) if args.kind else KINDS:
        entries = list_entries(kind, args.pattern)
        if not entries:
            continue
        width = max(len(e.name) for e in entries)
        lines = [f"{kind}: {KIND_TITLES[kind]}"]
        for e in entries:
            where = f" [hub: {e.hub_id}]" if e.hub_id else (" [packaged]" if e.packaged else "")
            lines.append(f"  {e.name:<{width}}  {e.description}{where}")
        groups.append("\n".join(lines))
    if not groups:
        kinds = f"kind {args.kind!r}" if args.kind else "any kind"
        print(f"reliable-ad models: no name of {kinds} matches {args.pattern!r}; run `reliable-ad models` "
              "to see them all", file=sys.stderr)
        return 1
    print("\n\n".join(groups))
    return 0


def list_presets(args: argparse.Namespace) -> int:
    from reliable_ad.generation.prompts import builtin_presets, load_presets

    presets = load_presets(args.presets_file) if args.presets_file else builtin_presets()
    for name, p in presets.items():
        slots = ", ".join(f"{{{k}}}: {len(v)} values" for k, v in p.slots.items())
        print(f"{name}  (image_scale {p.image_scale}{'; ' + slots if slots else ''})\n    {p.prompt}")
    return 0
