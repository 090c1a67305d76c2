"""Shared command-line plumbing: config file + flag overrides → typed config."""

from __future__ import annotations

import argparse
from typing import Any

from reliable_ad.core.config import from_dict, load_config_file, merge_dicts


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML/JSON config file; flags given on the command line override it")


def overrides_from_args(args: argparse.Namespace, mapping: dict[str, str]) -> dict:
    """Nested override dict from flags that were given; ``mapping`` maps arg name → 'section.key'."""
    out: dict[str, Any] = {}
    for arg, dotted in mapping.items():
        value = getattr(args, arg, None)
        if value is None:
            continue
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def build_config(cls, args: argparse.Namespace, mapping: dict[str, str]):
    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    return from_dict(cls, merge_dicts(data, overrides_from_args(args, mapping)))
