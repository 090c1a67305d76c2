"""The NSFW safety checker, offline: a tiny `StableDiffusionSafetyChecker` (thresholds set so that it flags
every image, or none) in a base-model folder laid out as a real one ships it. A flagged image is recorded
as such, never accepted or kept by `run`, and shown only blurred in the report and the annotation app."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_product_rgba
from reliable_ad.core.labels import CLASS_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SAMPLING = dict(size=64, num_inference_steps=2, batch_size=2)


class Verdict:
    """Available, with high confidence: a judge that accepts everything."""

    label, label_index, p_available = CLASS_NAMES[0], 0, 0.95
    probs = {n: (0.95 if i == 0 else 0.0125) for i, n in enumerate(CLASS_NAMES)}


def accept_all(products, generated, captions):
    return [Verdict() for _ in generated]


def _base_with_checker(tiny_checkpoint, root: Path, flag: bool) -> Path:
    from reliable_ad.generation.tiny import write_tiny_safety_checker

    base = root / ("flagging" if flag else "passing")
    if not base.exists():
        shutil.copytree(tiny_checkpoint[0], base)
        write_tiny_safety_checker(base, flag)
    return base


def _generator(tiny_checkpoint, root: Path, flag: bool, **model):
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator

    base = _base_with_checker(tiny_checkpoint, root, flag)
    cfg = ModelConfig(model=str(base), controlnet=str(tiny_checkpoint[1]), **model)
    return AdGenerator.from_config(cfg, SamplingConfig(**SAMPLING))


def _products(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, color in enumerate([(200, 40, 40), (40, 90, 200)]):
        p = folder / f"prod_{i}.png"
        Image.fromarray(make_product_rgba(96, color, seed=i), "RGBA").save(p)
        p.with_suffix(".txt").write_text(f"a {['red', 'blue'][i]} bottle", encoding="utf-8")
        paths.append(p)
    return paths


def _run(generator, products: list[Path], out: Path) -> dict:
    from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.recurrent.config import JudgeConfig, RecurrentConfig, RunConfig
    from reliable_ad.recurrent.run import run_recurrent_job

    inputs, _ = read_product_inputs([str(p) for p in products])
    gen = GenerateConfig(model=ModelConfig(model="tiny"), sampling=SamplingConfig(**SAMPLING))
    cfg = RunConfig(generation=gen, recurrent=RecurrentConfig(max_attempts=2), judge=JudgeConfig(rfnet="tiny"))
    return run_recurrent_job(inputs, cfg, out, generator=generator, judge=accept_all, progress=False)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory) -> dict:
    """The same `run` (judge accepting everything) with the flagging and the passing checker."""
    root = tmp_path_factory.mktemp("safety")
    products = _products(root / "products")
    out = {}
    for flag in (True, False):
        generator = _generator(tiny_checkpoint, root / "models", flag)
        folder = root / ("flagged-run" if flag else "clean-run")
        out[flag] = (folder, _run(generator, products, folder), generator)
    return out


def _high_freq(im: Image.Image) -> float:
    """Mean squared difference of neighbouring pixels (grey): what a blur takes away."""
    a = np.asarray(im.convert("L"), np.float32)
    return float((np.diff(a, axis=0) ** 2).mean() + (np.diff(a, axis=1) ** 2).mean())


def _report_thumbs(folder: Path) -> list[Image.Image]:
    page = (folder / "report.html").read_text(encoding="utf-8")
    uris = re.findall(r'<img alt="attempt \d+" src="data:image/jpeg;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def _records(folder: Path) -> list[dict]:
    from reliable_ad.core.io import read_jsonl

    return [r for r in read_jsonl(folder / "manifest.jsonl") if r.get("image")]


def test_the_loader_keeps_the_checker_a_model_folder_ships_and_flagged_images_are_recorded(runs, tiny_checkpoint, tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from reliable_ad.data.product import load_product, prepare_product
    from reliable_ad.generation.generator import GenerationJob

    flagging, passing = runs[True][2], runs[False][2]
    for gen in (flagging, passing):  # safety_checker/ and feature_extractor/ reach the pipeline, as with real weights
        assert isinstance(gen.pipe.safety_checker, StableDiffusionSafetyChecker)
        assert gen.pipe.feature_extractor is not None and gen.info["safety_checker"] is True
    off = _generator(tiny_checkpoint, tmp_path.parent / "models", True, safety_checker=False)  # --no-safety-checker
    assert off.pipe.safety_checker is None and off.info["safety_checker"] is False

    product_path = _products(tmp_path / "p")[0]
    prepared = prepare_product(load_product(str(product_path)), size=64)
    job = GenerationJob(prepared, "a bottle on a table", "", seed=3)
    flagged, = flagging.generate([job])
    clean, = passing.generate([job])
    unchecked, = off.generate([job])
    assert flagged.nsfw is True and clean.nsfw is False and unchecked.nsfw is None
    assert flagged.raw.max() == 0.0  # diffusers blacks a flagged image out
    assert clean.raw.max() > 0.0 and np.allclose(clean.raw, unchecked.raw, atol=1e-5)


def test_run_never_accepts_or_keeps_a_flagged_image_and_regenerates_it(runs):
    folder, summary, _ = runs[True]
    records = _records(folder)
    assert len(records) == 4  # 2 products x 2 attempts: each flagged attempt was regenerated like a rejected one
    assert all(r["nsfw"] is True and r["accepted"] is False for r in records)
    assert all(r["verdict"]["label"] == "Available" for r in records)  # the judge said yes; the checker overrules
    assert not (folder / "accepted").exists() and not (folder / "flagged").exists()
    assert summary["available"] == 0 and summary["none_available"] == 2 and summary["nsfw"] == 4
    assert summary["rejections_per_class"] == {}


def test_without_a_flag_the_same_run_accepts_as_usual(runs):
    folder, summary, _ = runs[False]
    records = _records(folder)
    assert len(records) == 2 and all(r["nsfw"] is False and r["accepted"] is True for r in records)
    assert len(list((folder / "accepted").glob("*.png"))) == 2
    assert summary["available"] == 2 and summary["nsfw"] == 0
    assert "flagged by the safety checker" not in (folder / "report.html").read_text(encoding="utf-8")


def _thumb_of(path: Path, size: int) -> Image.Image:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        return im


@pytest.mark.parametrize("flag", [True, False])
def test_the_report_blurs_flagged_images_only(runs, flag):
    folder, _, _ = runs[flag]
    thumbs = _report_thumbs(folder)
    records = _records(folder)
    assert len(thumbs) == len(records)
    for thumb, rec in zip(thumbs, records):
        original = _thumb_of(folder / rec["image"], thumb.size[0])
        ratio = _high_freq(thumb) / _high_freq(original)
        if flag:
            assert ratio < 0.05, ratio
        else:
            assert ratio > 0.5, ratio
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert ("flagged by the safety checker" in page) is flag


def test_the_annotation_app_serves_flagged_images_blurred(runs, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from annotation_helpers import Annotator
    from reliable_ad.annotation import security
    from reliable_ad.annotation.app import create_app
    from reliable_ad.annotation.config import AnnotationConfig
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability
    from reliable_ad.annotation.models import Task

    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)
    db = Database(tmp_path / "annotation.db")
    try:
        flagged = import_availability(db, runs[True][0], name="flagged", k=1).batch_id
        clean = import_availability(db, runs[False][0], name="clean", k=1).batch_id
        with db.write() as s:
            security.create_user(s, "alice", password="correct horse battery")
        with db.read() as s:
            tasks = {t.id: (t.batch_id, dict(t.meta or {}), t.image_path) for t in s.query(Task).all()}
        assert all(meta.get("nsfw") is True for b, meta, _ in tasks.values() if b == flagged)
        assert not any(meta.get("nsfw") for b, meta, _ in tasks.values() if b == clean)
        alice = Annotator(TestClient(create_app(AnnotationConfig(db=db.url), db)), "alice", "correct horse battery")
        for batch, blurred in ((flagged, True), (clean, False)):
            item, = alice.next(batch)
            response = alice.get(item["image_url"])
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            on_disk = Path(tasks[item["task"]][2])
            if not blurred:
                assert response.content == on_disk.read_bytes()
                continue
            assert response.content != on_disk.read_bytes()
            served = Image.open(io.BytesIO(response.content))
            original = _thumb_of(on_disk, max(served.size))
            assert served.size == original.size
            assert _high_freq(served) < 0.05 * _high_freq(original)
    finally:
        db.dispose()


def test_generate_records_flagged_images_with_the_checker_attached_to_the_tiny_model(tiny_checkpoint, tmp_path):
    from reliable_ad.core.io import read_jsonl
    from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.generation.run import run_generate
    from reliable_ad.generation.tiny import attach_tiny_safety_checker

    generator = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(**SAMPLING))
    assert generator.pipe.safety_checker is None  # the tiny model ships none
    attach_tiny_safety_checker(generator.pipe, flag=True)
    inputs, _ = read_product_inputs([str(p) for p in _products(tmp_path / "products")])
    cfg = GenerateConfig(model=ModelConfig(model="tiny"), sampling=SamplingConfig(**SAMPLING), num_per_product=1)
    summary = run_generate(inputs, cfg, tmp_path / "out", generator=generator, progress=False)
    records = [r for r in read_jsonl(tmp_path / "out" / "manifest.jsonl") if r.get("image")]
    assert summary.written == 2 and summary.nsfw == 2
    assert len(records) == 2 and all(r["nsfw"] is True for r in records)


def test_a_single_file_base_takes_the_checker_from_its_config_folder(runs, tiny_checkpoint, tmp_path, caplog):
    import ldm_checkpoint as ldm
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    from reliable_ad.generation.config import ModelConfig
    from reliable_ad.generation.models import load_pipeline

    single = ldm.write_base_checkpoint(tiny_checkpoint[0], tmp_path / "tinymix.safetensors")
    with_checker = _base_with_checker(tiny_checkpoint, tmp_path, True)  # SD1.5-like folder, checker weights included
    cfg = dict(model=str(single), controlnet=str(tiny_checkpoint[1]), device="cpu")
    pipe, info = load_pipeline(ModelConfig(**cfg, base_config=str(with_checker)))
    assert isinstance(pipe.safety_checker, StableDiffusionSafetyChecker) and info["safety_checker"] is True
    with caplog.at_level("WARNING"):
        pipe, info = load_pipeline(ModelConfig(**cfg, base_config=str(ldm.config_only_copy(with_checker, tmp_path / "cfg"))))
    assert pipe.safety_checker is None and info["safety_checker"] is False
    assert "WITHOUT the NSFW safety checker" in caplog.text
