"""RF1M at scale: index a synthetic 1,000,000-row label.txt whose images sit in a few zip archives,
and measure the wall time and peak memory of the index (`reliable_ad.data.rf1m.build_index`), and of
reading it into samples (`read_rf1m`), each in a fresh process.

    python benchmarks/rf1m_index.py                     # 1,000,000 rows in 4 archives, under /tmp
    python benchmarks/rf1m_index.py --rows 200000 --archives 8 --work /data/tmp

The archives hold one empty member per row (a zip's directory is what the index reads; the image
bytes are never touched), so the set-up needs ~150 MB of disk, not a terabyte. Labels are the release
README's codes 1..6 with a realistic mix. Prints one JSON line per measurement; the numbers are in
docs/benchmarks.md ("RF1M at scale"). Targets: the index within 30 s and 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

CODES = [1] * 40 + [2] * 5 + [3] * 15 + [4] * 15 + [5] * 15 + [6] * 10  # README codes, Available ~40%


def make_release(root: Path, rows: int, archives: int, seed: int = 0) -> None:
    """label.txt plus ``archives`` zips of empty members; skipped when ``root`` already has them."""
    if (root / "label.txt").is_file() and len(list(root.glob("images_*.zip"))) == archives:
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    t0 = time.perf_counter()
    zips = [zipfile.ZipFile(root / f"images_{k:02d}.zip", "w", zipfile.ZIP_STORED) for k in range(archives)]
    with open(root / "label.txt", "w", encoding="utf-8") as f:
        f.write("image label\n")
        for i in range(rows):
            rel = f"images/{i // 4:07d}_{i % 4}.jpg"  # four attempts per product
            zips[i % archives].writestr(rel, b"")
            f.write(f"{rel} {rng.choice(CODES)}\n")
    for zf in zips:
        zf.close()
    print(f"wrote {rows:,} rows in {archives} archives in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


MEASURE = """
import json, sys, time


def status(field):  # /proc/self/status in MB: VmHWM is this process's peak RSS (reset at exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024)


t0 = time.perf_counter()
from reliable_ad.data.rf1m import build_index, read_rf1m
imported = time.perf_counter()
before = status("VmRSS")
cpu = time.process_time()
if sys.argv[2] == "index":
    index = build_index(sys.argv[1])
    n, found = len(index), int((index.member_of_row >= 0).sum())
else:
    samples, problems = read_rf1m(sys.argv[1], unsuitable="keep")
    n, found = len(samples), len(samples)
seconds = time.perf_counter() - imported
print(json.dumps({"what": sys.argv[2], "rows": n, "found_in_archives": found, "seconds": round(seconds, 2),
                  "cpu_seconds": round(time.process_time() - cpu, 2), "peak_rss_mb": status("VmHWM"),
                  "rss_before_mb": before, "import_seconds": round(imported - t0, 2)}))
"""


def measure(root: Path, what: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", MEASURE, str(root), what], capture_output=True, text=True, env=env,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="label rows (and archive members)")
    parser.add_argument("--archives", type=int, default=4, help="zip archives the members are spread over")
    parser.add_argument("--work", default="/tmp/reliable-ad-rf1m-bench", help="folder for the synthetic release")
    parser.add_argument("--skip-samples", action="store_true", help="measure only the index, not read_rf1m")
    args = parser.parse_args()
    root = Path(args.work) / f"rows{args.rows}_zips{args.archives}"
    make_release(root, args.rows, args.archives)
    for what in ("index",) if args.skip_samples else ("index", "samples"):
        result = measure(root, what)
        print(json.dumps({**result, "archives": args.archives, "cpu_count": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
