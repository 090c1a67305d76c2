"""`python -m reliable_ad.annotation ACTION ...`: `reliable-ad annotate ACTION ...` without loading the
other commands (some import torch, seconds before a server could start)."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from reliable_ad.cli import annotate

    parser = argparse.ArgumentParser(prog="python -m reliable_ad.annotation")
    annotate.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["annotate", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"reliable-ad annotate: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
