"""`reliable-ad run` under `accelerate launch`: 2 CPU processes shard the products, none is done twice,
and the merged summary equals a 1-process run with the same seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from reliable_ad.core.io import read_jsonl

ARGS = ["--model", "tiny", "--size", "64", "--steps", "2", "--max-attempts", "2", "--batch-size", "2", "--no-progress"]


def _strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("seconds", "seconds_per_available_image")}


@pytest.mark.timeout(900)
def test_two_process_run_equals_one_process_run(tiny_checkpoint, product_files, tmp_path):
    # five products, so the shards are uneven
    extra = [tmp_path / "products" / f"more_{i}.png" for i in range(2)]
    from PIL import Image

    for i, p in enumerate(extra):  # distinct content: the mirrored image
        Image.open(product_files[i]).transpose(Image.FLIP_LEFT_RIGHT).save(p)
    products = [str(p) for p in product_files + extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "reliable_ad.cli.main", "run", *products, "--out", str(tmp_path / "one"), *ARGS],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        # accelerate's --cpu runs several processes only through MPI; torchrun's launcher does it with gloo
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "reliable_ad.cli.main", "run", *products,
         "--out", str(tmp_path / "two"), *ARGS, "--device", "cpu"],
        capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert not list((tmp_path / "two").glob("manifest.rank*.jsonl"))  # shards merged
    recs = read_jsonl(tmp_path / "two" / "manifest.jsonl")
    counts = Counter((r["product_hash"], r["attempt"]) for r in recs)
    assert counts and max(counts.values()) == 1  # no attempt made twice
    assert len({r["product_hash"] for r in recs}) == 5
    assert {r["process"] for r in recs} == {0, 1}  # both processes really worked
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert _strip(s1) == _strip(s2)
    key = lambda r: (r["product_hash"], r["attempt"])  # noqa: E731
    r1 = sorted(read_jsonl(tmp_path / "one" / "manifest.jsonl"), key=key)
    assert [(key(r), r["seed"]) for r in r1] == [(key(r), r["seed"]) for r in sorted(recs, key=key)]
