"""The prepared GPU check (benchmarks/gpu.py) in --smoke mode: the same code path on CPU with the tiny
generator, inspector and RFFT models. It must finish and write a well-formed JSON and its Markdown table:
every section present, every measured rate and time positive and finite. The values themselves are not
checked (random tiny models). The budget is raised from the smoke default (90 s) so that a busy CI
machine still measures the first batch of every section."""

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
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out),
                           "--budget-s", "300"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "images/s" in proc.stdout and "AdGenerator" in proc.stdout  # the table
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["device"] == "cpu" and report["card"] is None
    for key in ("torch", "diffusers", "transformers"):
        assert isinstance(report[key], str) and report[key]
    assert _positive(report["total_s"])
    assert list(report["sections"]) == ["generation", "inspection", "run", "rfft"]
    md = out.with_suffix(".md").read_text()
    assert "| section | batch | case |" in md and "AdGenerator + speed options" in md and "cpu" in md.splitlines()[0]
    for name in report["sections"]:
        assert f"| {name} |" in md

    gen = report["sections"]["generation"]
    assert "error" not in gen, gen.get("error")
    assert gen["size"] == 64 and gen["steps"] == 2 and gen["guidance_scale"] == 7.5 and _positive(gen["unet_params_m"])
    assert [r["batch"] for r in gen["results"]] == [1, 2] and gen["skipped"] == []
    for r in gen["results"]:
        for key in ("images_per_s_direct", "images_per_s_ours", "images_per_s_ours_weighted_prompt",
                    "images_per_s_fast", "speedup_fast_vs_direct", "overhead_ratio", "seconds_measured"):
            assert _positive(r[key]), (key, r)

    ins = report["sections"]["inspection"]
    assert "error" not in ins, ins.get("error")
    assert [r["batch"] for r in ins["results"]] == [1, 2] and ins["skipped"] == []
    for r in ins["results"]:
        for key in ("images_per_s_computed_maps", "images_per_s_cached_maps", "seconds_measured"):
            assert _positive(r[key]), (key, r)
        assert r["peak_mem_gib"] is None  # CPU: no GPU memory to report
    assert gen["speed_options"]["channels_last"] and gen["speed_options"]["reuse_control_embedding"]

    run = report["sections"]["run"]  # the whole `run` job: the first (sequential) run always fits
    assert "error" not in run, run.get("error")
    first = run["results"][0]
    assert first["overlap_inspection"] is False and first["products_done"] == 4 and first["stopped"] is None
    assert first["attempts"] >= 4 and 0 < first["inspection_share"] < 1
    assert first["loop_s"]["batches"] >= 2 and _positive(first["loop_s"]["generate"])
    assert first["available"] == 0 or _positive(first["seconds_per_available_image"])

    rfft = report["sections"]["rfft"]
    assert "error" not in rfft, rfft.get("error")
    assert rfft["results"][0]["batch"] == 1 and rfft["gradient_checkpointing"] is True
    assert _positive(rfft["results"][0]["step_s"]) and _positive(rfft["results"][0]["trainable_params_m"])
    for sec in report["sections"].values():
        assert _positive(sec["budget_s"]) and sec["elapsed_s"] >= 0
        assert len(sec["results"]) + len(sec["skipped"]) == 2  # every measurement is either made or listed


def test_gpu_check_budget_skips_with_a_note(tmp_path):
    """A spent budget skips the remaining measurements and says so, instead of running past it."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(out),
                           "--generation-budget", "0.001", "--inspection-budget", "0.001", "--run-budget", "0",
                           "--rfft-budget", "0.001"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for name, sec in report["sections"].items():
        assert sec["results"] == [] and len(sec["skipped"]) == 2, name
        assert all("budget" in s["why"] for s in sec["skipped"])
    assert "skipped" in proc.stdout
