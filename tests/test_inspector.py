"""RFNet inference: the Inspector on the tiny model, and `reliable-ad inspect` on a tiny generation run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from reliable_ad.generation.config import GenerateConfig, ModelConfig, SamplingConfig
from reliable_ad.generation.inputs import read_product_inputs
from reliable_ad.generation.run import run_generate
from reliable_ad.core.labels import CLASS_NAMES
from reliable_ad.rfnet import load_rfnet
from reliable_ad.rfnet.dataset import RFDataset
from reliable_ad.data.readers import Sample
from reliable_ad.rfnet.inspect_run import VERDICTS, inspect_run
from reliable_ad.rfnet.inspector import Inspector, Verdict
from reliable_ad.rfnet.modality_spec import MODALITIES_FILE, ModalitySpec, save_rfnet
from reliable_ad.core.io import read_jsonl

from conftest import make_product_rgba


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector.from_pretrained("tiny", device="cpu")


def _inputs(n: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    products = [make_product_rgba(60 + 8 * i, seed=i) if i % 2 == 0 else
                rng.integers(0, 256, (40 + i, 70, 3), dtype=np.uint8) for i in range(n)]
    generated = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    captions = ["红色手机壳", "a blue bottle", "", "按摩椅 massage chair", "cup"][:n] + ["x"] * max(0, n - 5)
    return products, generated, captions


def test_verdicts_are_probabilities_and_batch_size_does_not_matter(inspector):
    products, generated, captions = _inputs(5)
    verdicts = inspector.inspect(products, generated, captions)
    assert len(verdicts) == 5 and inspector.timings["images"] == 5
    assert inspector.timings["modalities"] > 0 and inspector.timings["classifier"] > 0
    for v in verdicts:
        assert isinstance(v, Verdict) and v.label in CLASS_NAMES and CLASS_NAMES[v.label_index] == v.label
        assert list(v.probs) == list(CLASS_NAMES) and abs(sum(v.probs.values()) - 1) < 1e-5
        assert v.probs[v.label] == max(v.probs.values()) and v.p_available == v.probs["Available"]
        assert json.loads(json.dumps(v.to_dict())) == v.to_dict()
    one_by_one = Inspector(inspector.model, inspector.processor, inspector.spec, estimators=inspector.estimators,
                           device="cpu", batch_size=1).inspect(products, generated, captions)
    for a, b in zip(verdicts, one_by_one):
        np.testing.assert_allclose(list(a.probs.values()), list(b.probs.values()), atol=1e-5)


def test_cached_maps_give_the_computed_verdicts(inspector, tmp_path):
    products, generated, captions = _inputs(4)
    computed = inspector.inspect(products, generated, captions)
    depth = [inspector.estimators["depth"]([g])[0, 0].numpy() for g in generated]
    salience = [inspector.estimators["salience"]([g])[0, 0].numpy() for g in generated]
    paths = []
    for i, m in enumerate(salience):  # cached files as the modality cache writes them
        paths.append(tmp_path / f"s{i}.npy")
        np.save(paths[-1], m.astype(np.float16))
    cached = inspector.inspect(products, generated, captions, depth=depth, salience=[str(p) for p in paths])
    partly = inspector.inspect(products, generated, captions, depth=[depth[0], None, None, depth[3]])
    for a, b, c in zip(computed, cached, partly):
        np.testing.assert_allclose(list(a.probs.values()), list(b.probs.values()), atol=2e-3)
        np.testing.assert_allclose(list(a.probs.values()), list(c.probs.values()), atol=1e-5)


def test_inspector_sees_the_pixels_training_sees(inspector, tmp_path):
    """Products are composited on white and padded square by the same code RFDataset uses."""
    product = make_product_rgba(90, seed=3)[:, 10:70]  # a tall RGBA cut-out
    generated = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(product, "RGBA").save(tmp_path / "p.png")
    Image.fromarray(generated).save(tmp_path / "g.png")
    item = RFDataset([Sample(str(tmp_path / "g.png"), str(tmp_path / "p.png"), "c", 0, "p", "t")], image_size=64)[0]
    seen = {}
    hook = inspector.model.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    try:
        inspector.inspect([product], [generated], ["c"])
    finally:
        hook.remove()
    assert torch.equal(seen["product"][0], item["product"]) and torch.equal(seen["generated"][0], item["image"])
    assert seen["product"][0, :, 32, 2].tolist() == [1.0, 1.0, 1.0]  # white padding left of the tall product


def test_bad_inputs_name_the_item(inspector):
    products, generated, captions = _inputs(2)
    with pytest.raises(ValueError, match=r"generated\[1\] must be a uint8 \(H, W, 3\)"):
        inspector.inspect(products, [generated[0], generated[1].astype(np.float32)], captions)
    with pytest.raises(ValueError, match="2 products, 2 generated images, 1 captions"):
        inspector.inspect(products, generated, captions[:1])
    with pytest.raises(ValueError, match="depth has 1 maps for 2 images"):
        inspector.inspect(products, generated, captions, depth=[None])


def test_saved_model_keeps_its_estimators_and_temperature(tmp_path, inspector):
    model, processor = load_rfnet("tiny")
    model.set_temperature(2.5)
    folder = save_rfnet(model, tmp_path / "m", ModalitySpec("tiny", "fine-grained", 48), processor=processor)
    assert json.loads((folder / MODALITIES_FILE).read_text()) == {"depth": "tiny", "salience": "fine-grained",
                                                                   "size": 48}
    loaded = Inspector.from_pretrained(str(folder), device="cpu")
    assert loaded.spec == ModalitySpec("tiny", "fine-grained", 48) and loaded.model.config.temperature == 2.5
    assert loaded.fingerprint != inspector.fingerprint and "size=48" in loaded.fingerprint
    products, generated, captions = _inputs(3)
    hot = loaded.inspect(products, generated, captions)
    base = inspector.inspect(products, generated, captions)
    for a, b in zip(hot, base):  # same weights, T = 2.5: probabilities flatter, same ranking
        assert a.label == b.label and max(a.probs.values()) < max(b.probs.values())
    other = Inspector.from_pretrained(str(folder), salience="tiny", device="cpu")
    assert other.spec.salience == "tiny" and other.fingerprint != loaded.fingerprint


def _tiny_run(tmp_path, product_files):
    inputs, _ = read_product_inputs([str(p) for p in product_files])
    cfg = GenerateConfig(model=ModelConfig(model="tiny"), num_per_product=2,
                         sampling=SamplingConfig(size=64, num_inference_steps=2, batch_size=3))
    out = tmp_path / "run"
    assert run_generate(inputs, cfg, out, progress=False).written == 6
    return out


def test_inspect_writes_verdicts_into_a_generation_run(tiny_checkpoint, product_files, tmp_path, inspector):
    run = _tiny_run(tmp_path, product_files)
    before = read_jsonl(run / "manifest.jsonl")
    s = inspect_run(run, inspector, progress=False)
    assert s.ok and s.inspected == 6 and s.skipped == 0 and sum(s.counts.values()) == 6
    after = read_jsonl(run / "manifest.jsonl")
    assert [r["image"] for r in after] == [r["image"] for r in before]
    for old, new in zip(before, after):
        new = dict(new)
        verdict = new.pop("verdict")
        assert new == old  # nothing else in the record changed
        assert verdict["model"] == inspector.fingerprint and verdict["label"] in CLASS_NAMES
        assert set(verdict) == {"label", "label_index", "probs", "p_available", "model"}
    assert len(read_jsonl(run / VERDICTS)) == 6
    # rerun: nothing to do; a crash between journal and merge is healed from verdicts.jsonl
    (run / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in before))
    again = inspect_run(run, inspector, progress=False)
    assert again.inspected == 0 and again.skipped == 6
    assert [r["verdict"] for r in read_jsonl(run / "manifest.jsonl")] == [r["verdict"] for r in after]
    # another model's verdicts are redone; an unreadable image is recorded and the rest go on
    (run / after[0]["image"]).write_bytes(b"broken")
    other = Inspector(inspector.model, inspector.processor, inspector.spec, estimators=inspector.estimators,
                      device="cpu", fingerprint="other-model")
    s = inspect_run(run, other, progress=False)
    assert s.inspected == 5 and list(s.failed) == [after[0]["image"]] and sum(s.counts.values()) == 5
    final = read_jsonl(run / "manifest.jsonl")
    assert [r["verdict"]["model"] for r in final] == [inspector.fingerprint] + ["other-model"] * 5


def test_cli_inspect(tiny_checkpoint, product_files, tmp_path):
    run = _tiny_run(tmp_path, product_files)
    cmd = [sys.executable, "-m", "reliable_ad.cli.main", "inspect", str(run), "--rfnet", "tiny", "--batch-size", "4",
           "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "6 image(s) inspected, 0 already done, 0 failed" in r.stderr and "Shape Hallucination" in r.stderr
    assert all(rec["verdict"]["label"] in CLASS_NAMES for rec in read_jsonl(run / "manifest.jsonl"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "0 image(s) inspected, 6 already done" in r.stderr
    r = subprocess.run(cmd[:4] + [str(tmp_path / "nowhere")], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "manifest.jsonl" in r.stderr
