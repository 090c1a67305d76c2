"""The modality cache (reliable_ad.modalities.cache) and `reliable-ad modalities`: offline, tiny estimators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliable_ad.modalities import build_depth, build_salience
from reliable_ad.modalities.cache import attach_cached_maps, build_cache, list_images, map_path, read_meta
from reliable_ad.data.readers import read_manifest, read_rf1m

TINY = {"depth": "tiny", "salience": "fine-grained", "size": 32}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(seed: int, size: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    img[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = (220, 60, 60)  # a salient block
    return img


def make_run(root: Path, n: int = 5) -> Path:
    """A generation-run-shaped folder: manifest.jsonl, images/, one failed-product record."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(_image(99, 24)).save(root / "x.png")
    lines = []
    for i in range(n):
        Image.fromarray(_image(i)).save(root / "images" / f"p{i}_000.png")
        lines.append({"image": f"images/p{i}_000.png", "product": "x.png", "product_hash": f"h{i}", "caption": "cup",
                      "attempt": 0, "error": None, "label": i % 5})
    lines.append({"product": "broken.png", "error": "not an image"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


def make_rf1m(root: Path, n: int = 4) -> Path:
    (root / "images" / "sub").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_image(10 + i, 40)).save(root / "images" / "sub" / f"{100 + i}_0.png")
    # classes 0..4 in the release README's codes (label codes "rf1m": 1, 3, 4, 5, 6; 2 is Unsuitable)
    (root / "labels.txt").write_text("".join(f"images/sub/{100 + i}_0.png {(1, 3, 4, 5, 6)[i % 5]}\n" for i in range(n)))
    return root


def test_cache_writes_float16_maps_equal_to_the_estimators(tmp_path):
    run = make_run(tmp_path / "run")
    s = build_cache(run, progress=False, batch_size=2, **TINY)
    assert s.ok and s.images == 5 and s.written == {"depth": 5, "salience": 5}
    meta = read_meta(run)
    assert (meta["depth"], meta["salience"], meta["size"]) == ("tiny", "fine-grained", 32)
    depth, salience = build_depth("tiny", size=32), build_salience("fine-grained", size=32)
    for i in range(5):
        for kind, est in (("depth", depth), ("salience", salience)):
            cached = np.load(map_path(run, kind, f"images/p{i}_000.png"))
            assert cached.dtype == np.float16 and cached.shape == (32, 32)
            assert 0.0 <= cached.min() and cached.max() <= 1.0 and cached.max() > cached.min()
            expected = est([_image(i)])[0, 0].numpy()
            np.testing.assert_allclose(cached.astype(np.float32), expected, atol=1e-3)


def test_cache_resumes_and_refuses_other_estimators(tmp_path):
    run = make_run(tmp_path / "run")
    build_cache(run, progress=False, **TINY)
    kept = map_path(run, "depth", "images/p1_000.png")
    stamp = kept.stat().st_mtime_ns
    map_path(run, "salience", "images/p3_000.png").unlink()  # as if killed before this map
    s = build_cache(run, progress=False, **TINY)
    assert s.written == {"depth": 0, "salience": 1} and s.skipped == {"depth": 5, "salience": 4}
    assert kept.stat().st_mtime_ns == stamp
    assert not list((run / "modalities").rglob("*.tmp"))
    with pytest.raises(ValueError, match="computed with depth estimator 'tiny'.*--depth tiny"):
        build_cache(run, depth="dpt-hybrid", salience=None, size=32, progress=False)
    with pytest.raises(ValueError, match="size 32, not 64"):
        build_cache(run, progress=False, **{**TINY, "size": 64})


def test_bad_image_is_recorded_and_the_job_goes_on(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "images" / "p2_000.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    s = build_cache(run, progress=False, **TINY)
    assert set(s.failed) == {"images/p2_000.png"} and s.written == {"depth": 4, "salience": 4}


def test_rf1m_folder_and_attaching_cached_paths(tmp_path, caplog):
    root = make_rf1m(tmp_path / "rf1m")
    images, problems = list_images(root)
    assert sorted(images) == [f"images/sub/{100 + i}_0.png" for i in range(4)] and not problems
    build_cache(root, progress=False, **TINY)
    samples, _ = read_rf1m(root)
    attached, counts = attach_cached_maps(samples, root, depth="tiny", salience="fine-grained")
    assert counts == {"depth": 4, "salience": 4}
    for s in attached:
        assert Path(s.depth).is_file() and s.depth.endswith(".png.npy") and "modalities/depth/images/sub" in s.depth
    # a model trained with other estimators must not get these maps
    other, counts = attach_cached_maps(samples, root, depth="dpt-hybrid", salience="fine-grained")
    assert counts == {"depth": 0, "salience": 4} and all(s.depth is None for s in other)
    assert "computing them instead" in caplog.text
    # a run folder works the same through its manifest
    run = make_run(tmp_path / "run")
    build_cache(run, depth=None, salience="fine-grained", size=32, progress=False)
    samples, _ = read_manifest(run / "manifest.jsonl")
    attached, counts = attach_cached_maps(samples, run, salience="fine-grained")
    assert counts == {"depth": 0, "salience": 5} and all(s.salience and s.depth is None for s in attached)


def test_cli_modalities(tmp_path):
    run = make_run(tmp_path / "run")
    cmd = [sys.executable, "-m", "reliable_ad.cli.main", "modalities", str(run), "--rfnet", "tiny", "--size", "32",
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "written depth 5, salience 5" in r.stderr and read_meta(run)["depth"] == "tiny"
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and "written depth 0, salience 0; already cached depth 5, salience 5" in r.stderr
    r = subprocess.run(cmd[:5] + ["--depth", "tiny", "--salience", "none", "--size", "64"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--size 32" in r.stderr
