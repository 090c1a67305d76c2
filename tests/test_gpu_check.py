"""The prepared GPU check (benchmarks/gpu.py) in --smoke mode: the same code path on CPU with the tiny
generator and tiny inspector. It must finish and write a well-formed JSON: both sections present, every
measured rate and time positive and finite. The values themselves are not checked (random tiny models)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_gpu_check_smoke_writes_well_formed_json(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s" in proc.stdout and "AdGenerator" in proc.stdout  # the table
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["device"] == "cpu" and report["card"] is None
    for key in ("torch", "diffusers", "transformers"):
        assert isinstance(report[key], str) and report[key]
    assert _positive(report["total_s"])
    assert set(report["sections"]) == {"generation", "inspection"}

    gen = report["sections"]["generation"]
    assert "error" not in gen, gen.get("error")
    assert gen["size"] == 64 and gen["steps"] == 2 and gen["guidance_scale"] == 7.5 and _positive(gen["unet_params_m"])
    assert [r["batch"] for r in gen["results"]] == [1, 2] and gen["skipped"] == []
    for r in gen["results"]:
        for key in ("images_per_s_direct", "images_per_s_ours", "images_per_s_ours_weighted_prompt",
                    "overhead_ratio", "seconds_measured"):
            assert _positive(r[key]), (key, r)

    ins = report["sections"]["inspection"]
    assert "error" not in ins, ins.get("error")
    assert [r["batch"] for r in ins["results"]] == [1, 2] and ins["skipped"] == []
    for r in ins["results"]:
        for key in ("images_per_s_computed_maps", "images_per_s_cached_maps", "seconds_measured"):
            assert _positive(r[key]), (key, r)
        assert r["peak_mem_gib"] is None  # CPU: no GPU memory to report
    for sec in report["sections"].values():
        assert _positive(sec["budget_s"]) and sec["elapsed_s"] >= 0


def test_gpu_check_budget_skips_with_a_note(tmp_path):
    """A spent budget skips the remaining measurements and says so, instead of running past it."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out),
                           "--generation-budget", "0.001", "--inspection-budget", "0.001"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for sec in report["sections"].values():
        assert sec["results"] == [] and [s["batch"] for s in sec["skipped"]] == [1, 2]
        assert all("budget" in s["why"] for s in sec["skipped"])
    assert "skipped" in proc.stdout
