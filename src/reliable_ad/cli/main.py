"""Entry point of `reliable-ad`: exit 0 on success, 1 when something failed, 2 on a usage error or a
full disk (the run can be resumed once space is freed)."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from reliable_ad import __version__
from reliable_ad.cli.console import setup_console


def _subcommands():
    # each module exposes add_parser(subparsers) and sets `func` on its parser
    from reliable_ad.cli import annotate, data, generate, info, inspect, modalities, push, rfft, rfnet, run, synthad, verify

    return [generate, run, rfft, info, inspect, modalities, data, rfnet, annotate, synthad, push, verify]


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
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="also show the libraries' warnings and loading bars, and info logs (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _subcommands():
        module.add_parser(sub)
    return parser


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(exc: BaseException) -> OSError | None:
    """The "no space left" / "quota exceeded" OSError behind `exc` (itself, or one it was raised from or
    while handling), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_message(command: str, err: OSError, out: str | None) -> str:
    """One line: what ran out, where, and how to go on."""
    filename = os.fsdecode(err.filename) if err.filename is not None else None
    folder = out or (os.path.dirname(os.path.abspath(filename)) if filename else os.getcwd())
    what = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on the device"
    writing = f" while writing {filename}" if filename else ""
    return (f"reliable-ad {command}: error: {what}{writing}; free space on the disk holding {folder} "
            "and rerun the same command to resume")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_console(args.verbose)  # third-party warnings and loading bars only with -v
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as e:  # noqa: BLE001 - a full disk, a usage error or a missing file: one line each
        full = disk_full_error(e)
        if full is not None:
            print(disk_full_message(args.command, full, getattr(args, "out", None)), file=sys.stderr)
            return 2
        if not isinstance(e, (ValueError, FileNotFoundError, ImportError)):
            raise
        print(f"reliable-ad {args.command}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
