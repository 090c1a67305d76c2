"""Generation runs: manifest, provenance, resume, crash safety, bad inputs, and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig
from reliable_ad.generation.inputs import read_product_inputs
from reliable_ad.generation.provenance import read_label
from reliable_ad.generation.run import run_generate
from reliable_ad.core.io import read_jsonl

FAST = SamplingConfig(size=64, num_inference_steps=3, batch_size=2)


def _cfg(**kw) -> GenerateConfig:
    return GenerateConfig(model=ModelConfig(model="tiny"), sampling=FAST, **kw)


def _images(out: Path) -> list[Path]:
    return sorted((out / "images").glob("*.png"))


def test_run_writes_images_manifest_and_labels(tiny_checkpoint, product_files, tmp_path):
    inputs, problems = read_product_inputs([str(p) for p in product_files])
    assert not problems and inputs[0].caption == "a red bottle"
    out = tmp_path / "run"
    s = run_generate(inputs, _cfg(num_per_product=2), out, progress=False)
    assert s.ok and s.written == 6
    records = read_jsonl(out / "manifest.jsonl")
    assert len(records) == 6 and len(_images(out)) == 6
    assert len({(r["product_hash"], r["attempt"]) for r in records}) == 6
    for r in records:
        assert (out / r["image"]).is_file()
        assert r["caption"] and r["seed"] >= 0 and r["model"]["hashes"]["base"].startswith("sha256:")
        assert r["placement"]["size"] == 64 and r["sampling"]["scheduler"] == "ddim"
        label = read_label(out / r["image"])
        assert label["AI-Generated"] == "true" and "trainedAlgorithmicMedia" in label["XML:com.adobe.xmp"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_per_product"] == 2 and cfg["sampling"]["num_inference_steps"] == 3
    # the same command again adds nothing
    again = run_generate(inputs, _cfg(num_per_product=2), out, progress=False)
    assert again.written == 0 and again.skipped == 6
    assert len(read_jsonl(out / "manifest.jsonl")) == 6


def test_any_image_can_be_regenerated_from_its_record(tiny_checkpoint, product_files, tmp_path):
    import numpy as np
    from PIL import Image

    inputs, _ = read_product_inputs([str(product_files[0])])
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    run_generate(inputs, _cfg(num_per_product=3), out_a, progress=False)
    run_generate(inputs, _cfg(num_per_product=3, seed=0), out_b, progress=False)
    ra, rb = read_jsonl(out_a / "manifest.jsonl"), read_jsonl(out_b / "manifest.jsonl")
    assert [r["seed"] for r in ra] == [r["seed"] for r in rb] and len({r["seed"] for r in ra}) == 3
    for x, y in zip(ra, rb):
        assert np.array_equal(np.asarray(Image.open(out_a / x["image"])), np.asarray(Image.open(out_b / y["image"])))


def test_resume_after_crash_leaves_no_duplicates(tiny_checkpoint, product_files, tmp_path):
    inputs, _ = read_product_inputs([str(p) for p in product_files])
    out = tmp_path / "run"
    seen = []

    def crash(rec):
        seen.append(rec)
        if len(seen) == 3:
            raise KeyboardInterrupt  # as if killed right after the third image

    with pytest.raises(KeyboardInterrupt):
        run_generate(inputs, _cfg(num_per_product=2), out, progress=False, on_image=crash)
    assert len(read_jsonl(out / "manifest.jsonl")) == 3
    with open(out / "manifest.jsonl", "a") as f:  # a line torn by the kill
        f.write('{"image": "images/x.png", "prod')
    s = run_generate(inputs, _cfg(num_per_product=2), out, progress=False)
    records = read_jsonl(out / "manifest.jsonl")
    assert s.written == 3 and s.skipped == 3 and len(records) == 6
    assert len({r["image"] for r in records}) == 6 and len(_images(out)) == 6
    assert not list((out / "images").glob(".*.tmp"))


def test_resume_with_other_settings_is_refused(tiny_checkpoint, product_files, tmp_path):
    inputs, _ = read_product_inputs([str(product_files[0])])
    run_generate(inputs, _cfg(), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="different config.*seed"):
        run_generate(inputs, _cfg(seed=5), tmp_path / "r", progress=False)
    from reliable_ad.generation.config import ProvenanceConfig

    with pytest.raises(ValueError, match="different config.*provenance"):  # a run's images are all marked alike
        run_generate(inputs, _cfg(provenance=ProvenanceConfig(watermark=False)), tmp_path / "r", progress=False)


def test_bad_products_are_recorded_and_the_batch_goes_on(tiny_checkpoint, product_files, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    empty = tmp_path / "empty.png"
    from PIL import Image

    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(empty)
    paths = [str(product_files[0]), str(bad), str(tmp_path / "missing.png"), str(empty)]
    inputs, _ = read_product_inputs(paths)
    out = tmp_path / "run"
    s = run_generate(inputs, _cfg(), out, progress=False)
    assert s.written == 1 and set(s.failed_products) == set(paths[1:])
    errors = [r for r in read_jsonl(out / "manifest.jsonl") if r.get("error")]
    assert {r["product_source"] for r in errors} == {os.path.abspath(p) for p in paths[1:]}
    run_generate(inputs, _cfg(), out, progress=False)  # the same failures are not recorded twice
    assert len([r for r in read_jsonl(out / "manifest.jsonl") if r.get("error")]) == 3


def test_a_product_its_preset_cannot_name_is_recorded_and_the_others_go_on(tiny_checkpoint, product_files, tmp_path):
    """A preset with {caption} needs each product's caption: one without is a failure before any
    generation, naming the fix; the captioned product is generated with its caption in the prompt."""
    presets = tmp_path / "presets.yaml"
    presets.write_text('presets:\n  named:\n    prompt: "{caption} on a wooden table"\n    negative_prompt: ""\n'
                       "    image_scale: 0.5\n", encoding="utf-8")
    product_files[1].with_suffix(".txt").unlink()  # no caption file beside it either
    listing = tmp_path / "products.csv"
    listing.write_text(f"image,caption\n{product_files[0]},a red mug\n{product_files[1]},\n", encoding="utf-8")
    inputs, problems = read_product_inputs([str(listing)])
    assert not problems
    out = tmp_path / "run"
    s = run_generate(inputs, _cfg(preset="named", presets_file=str(presets)), out, progress=False)
    assert s.written == 1 and set(s.failed_products) == {str(product_files[1])}
    records = read_jsonl(out / "manifest.jsonl")
    assert [r["prompt"] for r in records if not r.get("error")] == ["a red mug on a wooden table"]
    (error,) = [r["error"] for r in records if r.get("error")]
    assert "give each product a caption" in error


def test_products_file_inputs(tmp_path, product_files):
    csv = tmp_path / "products.csv"
    csv.write_text("image,caption,preset\nproducts/prod_0.png,a red bottle,\nproducts/prod_1.png,,minimal-wall-color\n,,\n")
    jl = tmp_path / "products.jsonl"
    jl.write_text(json.dumps({"image": "products/prod_2.png", "caption": "green"}) + "\nnot json\n")
    items, problems = read_product_inputs([str(csv), str(jl)])
    assert [Path(i.path).name for i in items] == ["prod_0.png", "prod_1.png", "prod_2.png"]
    assert items[0].caption == "a red bottle" and items[1].caption == "a blue bottle"  # sidecar fallback
    assert items[1].preset == "minimal-wall-color" and len(problems) == 2


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "reliable_ad.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def test_cli_generate_and_rerun(tiny_checkpoint, product_files, tmp_path):
    out = tmp_path / "cli"
    args = ["generate", *map(str, product_files), "--model", "tiny", "-n", "2", "--out", str(out),
            "--size", "64", "--steps", "3", "--no-progress"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert len(_images(out)) == 6 and len(read_jsonl(out / "manifest.jsonl")) == 6
    r2 = _cli(*args)
    assert r2.returncode == 0 and "0 image(s) written" in r2.stderr
    r3 = _cli("generate", str(tmp_path / "nope.png"), "--out", str(tmp_path / "x"), "--size", "64", "--no-progress")
    assert r3.returncode == 1 and "nope.png" in r3.stderr
    r4 = _cli("generate", str(product_files[0]), "--out", str(tmp_path / "y"), "--steps", "0")
    assert r4.returncode == 2 and "num_inference_steps=0" in r4.stderr


def test_cli_killed_mid_run_then_rerun_completes(tiny_checkpoint, product_files, tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "reliable_ad.cli.main", "generate", *map(str, product_files), "-n", "3",
            "--out", str(out), "--size", "64", "--steps", "8", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_jsonl(manifest))
    assert n_before < 9, "the run finished before it could be killed"
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    records = read_jsonl(manifest)
    assert len(records) == 9 and len({r["image"] for r in records}) == 9 and len(_images(out)) == 9
