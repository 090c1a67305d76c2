"""Load on the annotation server: simulated annotators on loopback label a batch with k labels per
item, then the database is checked (every item exactly k labels, from k different annotators, none
lost or duplicated) and request latencies are reported.

    python benchmarks/annotation_load.py                               # SQLite, 20 x 2,000 x k=2
    python benchmarks/annotation_load.py --db postgresql://u:pw@127.0.0.1/db
    python benchmarks/annotation_load.py --record docs/benchmarks.md   # also update the table there

The server is `reliable-ad annotate serve` in its own process; the annotators are asyncio clients
in this one, each doing what the availability page does (claim the shown item plus two preloaded
ones, fetch the image, label it) with no pause between items: a closed loop at full speed, so the
latencies include the queueing of 20 clients on one server process. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from annotation_loadsim import load_test  # benchmarks/annotation_loadsim.py

SECTION = "## Annotation server load"


def _row(r: dict) -> str:
    ok = "all hold" if not r["problems"] and not r["errors"] else f"FAILED: {'; '.join(r['problems']) or r['errors']}"
    by = r["p95_ms_by_endpoint"]
    return (f"| {time.strftime('%Y-%m-%d')} | {r['backend']} | {r['annotators']} | {r['items']:,} × {r['k']} | "
            f"{r['labels_in_db']:,} | {r['requests']:,} | {r['seconds']:.1f} | {r['requests_per_s']:.0f} | "
            f"{r['p50_ms']:.0f} | **{r['p95_ms']:.0f}** | {r['p99_ms']:.0f} | "
            f"{by.get('next', 0):.0f} / {by.get('image', 0):.0f} / {by.get('label', 0):.0f} | "
            f"{by.get('login', 0):.0f} | "
            f"{r['load_average_before']} | {ok} |")


def record(doc: Path, result: dict) -> None:
    """Put ``result`` in this benchmark's table in ``doc``, replacing the row of the same backend
    and leaving every other section as it is."""
    from reliable_ad.core.io import atomic_write_text

    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    start = text.find(SECTION + "\n")
    end = len(text) if start < 0 else text.find("\n## ", start + len(SECTION))
    end = len(text) if end < 0 else end + 1
    rows = {}
    if start >= 0:
        for line in text[start:end].splitlines():
            if line.startswith("| ") and not line.startswith(("| date", "|---")):
                rows[line.split("|")[2].strip()] = line  # one row per backend, the latest
    rows[result["backend"]] = _row(result)
    section = f"""{SECTION}

Command: `python benchmarks/annotation_load.py [--db postgresql://...] --record docs/benchmarks.md`.
The server (`reliable-ad annotate serve`, one uvicorn process) and {result['annotators']} simulated
annotators (asyncio clients in a second process) run on loopback on a {result['cpus']}-core machine
(Python {result['python']}). Each annotator does what the availability page does, with no pause
between items: claim the shown item plus two preloaded ones, fetch the image, label it (the answer
brings the next items back). A closed loop at full speed, so latencies include the queueing of all
annotators on one server process; real annotators, at a few seconds per item, send a small
fraction of this load. Afterwards the database is checked: every item has exactly k labels from k
different annotators, none open, and the server holds exactly the labels the clients were told were
saved. Latencies in ms over the work requests (claim, image, label); logins (scrypt, once a day)
apart. "load" is the machine's load average before the run: other jobs share these cores.

| date | backend | annotators | items × k | labels | requests | wall s | req/s | p50 | p95 | p99 | p95 claim / image / label | login p95 | load | invariants |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows[k] for k in sorted(rows))}
"""
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        new = text[:start] + section + ("\n" if end < len(text) else "") + text[end:]
    atomic_write_text(doc, new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", help="database URL (default: a temporary SQLite file); postgresql://... uses a fresh schema")
    p.add_argument("--annotators", type=int, default=20)
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--no-images", action="store_true", help="do not fetch images (API requests only)")
    p.add_argument("--record", type=Path, help="update this markdown file's annotation-load section")
    args = p.parse_args(argv)
    result = load_test(args.db, args.annotators, args.items, args.k, fetch_images=not args.no_images)
    print(json.dumps(result))
    if args.record:
        record(args.record, result)
    return 0 if not result["problems"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
