"""Entry point of `reliable-ad`: exit 0 on success, 1 when something failed, 2 on a usage error."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from reliable_ad import __version__


def _subcommands():
    # each module exposes add_parser(subparsers) and sets `func` on its parser
    from reliable_ad.cli import annotate, generate, info, inspect, modalities, rfft, rfnet, run, synthad

    return [generate, run, rfft, info, inspect, modalities, rfnet, annotate, synthad]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reliable-ad",
        description=(
            "Reliable e-commerce advertising image generation with human feedback: generate ads around "
            "product cut-outs (Stable Diffusion + ControlNet inpainting), inspect them with RFNet, "
            "regenerate until usable, fine-tune with RFFT."
        ),
        epilog="Run `reliable-ad COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"reliable-ad {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommands():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("diffusers", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR if args.verbose < 2 else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"reliable-ad {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
