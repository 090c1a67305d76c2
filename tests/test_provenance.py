"""Provenance of every written image: the signed C2PA manifest, the PNG label, the invisible watermark,
and `reliable-ad verify` reading them back (valid, tampered, re-saved)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliable_ad.cli.main import main
from reliable_ad.data.product import load_product, prepare_product
from reliable_ad.data.records import MANIFEST, read_records
from reliable_ad.generation import watermark
from reliable_ad.generation.c2pa_sign import create_development_identity, development_identity
from reliable_ad.generation.config import GenerateConfig, ModelConfig, ProvenanceConfig, SamplingConfig
from reliable_ad.generation.generator import AdGenerator
from reliable_ad.generation.inputs import ProductInput
from reliable_ad.generation.prompts import get_preset
from reliable_ad.generation.provenance import placed_alpha
from reliable_ad.generation.run import run_generate, save_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--model", "tiny", "--size", "64", "--steps", "2", "--no-progress"]
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def _verify(capsys, *paths) -> tuple[int, list[dict]]:
    capsys.readouterr()
    rc = main(["verify", "--json", *map(str, paths)])
    return rc, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory, model_home):
    """A `generate` run through the command line (tiny model, 64 px), with every layer on."""
    from tests.conftest import make_product_rgba

    root = tmp_path_factory.mktemp("signed")
    product = root / "bottle.png"
    Image.fromarray(make_product_rgba(96), "RGBA").save(product)
    assert main(["generate", str(product), "--out", str(root / "run"), "-n", "2", *FAST]) == 0
    return root / "run", product


def _prepared(product: Path, size: int):
    """The product as `generate` places it with the default settings."""
    cfg = GenerateConfig()
    return prepare_product(load_product(product), size=size, image_scale=get_preset(cfg.prompt_preset).image_scale)


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        out.append((png[i + 4:i + 8], png[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def _png(chunks) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)


def test_generated_images_carry_a_valid_manifest_label_and_watermark(signed_run, capsys):
    run, _ = signed_run
    records = [r for r in read_records(run / MANIFEST) if r.is_image]
    images = [run / r.image for r in records]
    rc, found = _verify(capsys, *images)
    assert rc == 0
    for rec, r in zip(records, found):
        assert r["status"] == "signed"
        c = r["c2pa"]
        assert c["status"] == "valid" and c["errors"] == [] and not c["trusted"]  # the development identity
        assert c["digital_source_type"] == IPTC
        assert c["generator"].startswith("reliable-ad")
        gen = c["generation"]
        assert gen["seed"] == rec.seed and gen["prompt"] == rec.prompt
        assert gen["model"]["hashes"] == rec.model["hashes"] and gen["sampling"] == rec.sampling
        assert "product_source" not in gen  # no local paths of the user's files
        assert r["label"] == {"ai_generated": True, "digital_source_type": IPTC}
        assert r["watermark"]["found"]
    assert main(["verify", str(images[0])]) == 0
    assert "SIGNED" in capsys.readouterr().out


def test_changed_pixels_under_the_same_manifest_fail_verification(signed_run, tmp_path, capsys):
    run, _ = signed_run
    signed = next((run / "images").glob("*.png")).read_bytes()
    pixels = np.asarray(Image.open(io.BytesIO(signed)).convert("RGB")).copy()
    pixels[:4, :4] = 255 - pixels[:4, :4]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    new_idat = [c for c in _chunks(buf.getvalue()) if c[0] == b"IDAT"]
    kept = [c for c in _chunks(signed) if c[0] != b"IDAT"]  # IHDR, the manifest (caBX), the labels, IEND
    at = next(i for i, c in enumerate(kept) if c[0] == b"IEND")
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(_png(kept[:at] + new_idat + kept[at:]))
    rc, [r] = _verify(capsys, tampered)
    assert rc == 1 and r["status"] == "invalid"
    assert any("dataHash.mismatch" in e for e in r["c2pa"]["errors"]), r["c2pa"]["errors"]
    assert main(["verify", str(tampered)]) == 1
    assert "INVALID" in capsys.readouterr().out


def test_a_resaved_image_is_unmarked_but_keeps_its_watermark(signed_run, tmp_path, capsys):
    run, _ = signed_run
    image = next((run / "images").glob("*.png"))
    resaved, jpeg = tmp_path / "resaved.png", tmp_path / "copy.jpg"
    with Image.open(image) as im:
        im.save(resaved)  # PIL writes no manifest and no text chunks
        im.convert("RGB").save(jpeg, quality=90)
    rc, found = _verify(capsys, resaved, jpeg)
    assert rc == 1
    for r in found:
        assert r["status"] == "unmarked" and r["c2pa"]["status"] == "none"
        assert not r["label"]["ai_generated"]
        assert r["watermark"]["found"], r["watermark"]


def test_watermark_leaves_product_pixels_exact_and_the_flag_marks_them(tiny_checkpoint, product_files, tmp_path):
    gen = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(size=64, num_inference_steps=2))
    inputs = [ProductInput(str(product_files[0]))]

    def images(name: str, **provenance) -> np.ndarray:
        cfg = GenerateConfig(provenance=ProvenanceConfig(c2pa=False, **provenance))
        run_generate(inputs, cfg, tmp_path / name, generator=gen, progress=False)
        [rec] = [r for r in read_records(tmp_path / name / MANIFEST) if r.is_image]
        return np.asarray(Image.open(tmp_path / name / rec.image).convert("RGB"))

    plain, marked, all_marked = images("plain", watermark=False), images("marked"), images(
        "all", watermark_product=True)
    product = _prepared(product_files[0], 64).alpha > 0
    assert product.any() and (~product).any()
    assert np.array_equal(marked[product], plain[product])  # byte-exact product
    assert not np.array_equal(marked[~product], plain[~product])  # the background carries the mark
    assert not np.array_equal(all_marked[product], plain[product])  # --watermark-product marks it too
    assert watermark.detect(marked).found and not watermark.detect(plain).found


def test_writers_without_a_mask_place_the_product_again_exactly(signed_run):
    """`run` calls save_image without the product mask: it is placed again from the record."""
    run, product = signed_run
    for rec in (r for r in read_records(run / MANIFEST) if r.is_image):
        prepared = _prepared(product, rec.size)
        assert rec.placement == prepared.placement.to_dict()
        assert np.array_equal(placed_alpha(run, rec), prepared.alpha)
    defaults = ProvenanceConfig()
    assert defaults.watermark and not defaults.watermark_product  # by default the product is spared


def test_bad_signing_files_are_refused_before_anything_is_written(product_files, tmp_path, capsys):
    good = create_development_identity(tmp_path / "id")
    cert, key = tmp_path / "id" / "dev-chain.pem", tmp_path / "id" / "dev-key.pem"
    other = create_development_identity(tmp_path / "other")
    assert good.chain != other.chain
    out = tmp_path / "run"
    base = ["generate", str(product_files[0]), "--out", str(out), *FAST]
    cases = [
        (["--c2pa-cert", str(tmp_path / "absent.pem"), "--c2pa-key", str(key)], "absent.pem"),
        (["--c2pa-cert", str(cert)], "--c2pa-key"),
        (["--c2pa-cert", str(cert), "--c2pa-key", str(tmp_path / "other" / "dev-key.pem")], "does not belong"),
        (["--c2pa-cert", str(product_files[0]), "--c2pa-key", str(key)], "not a PEM file"),
        (["--no-c2pa", "--c2pa-cert", str(cert), "--c2pa-key", str(key)], "--no-c2pa"),
    ]
    for flags, named in cases:
        capsys.readouterr()
        assert main([*base, *flags]) == 2, flags
        assert named in capsys.readouterr().err, flags
        assert not out.exists()


def test_a_user_identity_signs_and_verify_names_it(tiny_checkpoint, product_files, tmp_path, capsys):
    create_development_identity(tmp_path / "id")
    out = tmp_path / "run"
    assert main(["generate", str(product_files[1]), "--out", str(out), *FAST, "--no-watermark",
                 "--c2pa-cert", str(tmp_path / "id" / "dev-chain.pem"),
                 "--c2pa-key", str(tmp_path / "id" / "dev-key.pem")]) == 0
    rc, [r] = _verify(capsys, *(out / "images").glob("*.png"))
    assert rc == 0 and r["c2pa"]["status"] == "valid" and not r["watermark"]["found"]


def test_no_c2pa_images_are_labelled_but_unsigned(tiny_checkpoint, product_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["generate", str(product_files[2]), "--out", str(out), *FAST, "--no-c2pa"]) == 0
    rc, [r] = _verify(capsys, *(out / "images").glob("*.png"))
    assert rc == 1 and r["status"] == "unmarked"
    assert r["label"]["ai_generated"] and r["watermark"]["found"]


def test_development_identity_is_made_once_with_a_private_key(tmp_path):
    first = development_identity(tmp_path / "c2pa")
    assert first.development
    assert (os.stat(tmp_path / "c2pa" / "dev-key.pem").st_mode & 0o777) == 0o600
    assert development_identity(tmp_path / "c2pa").chain == first.chain  # reused, not replaced


def _scene(size: int) -> np.ndarray:
    """A smooth background with mild texture, like an ad's wall (no product)."""
    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([170 + 50 * yy, 160 + 40 * xx, 140 + 30 * xx * yy], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [512, 64])
def test_watermark_survives_jpeg_resize_and_crop(size):
    original = _scene(size)
    marked = watermark.embed(original)
    psnr = 10 * np.log10(255 ** 2 / np.mean((marked.astype(float) - original) ** 2))
    assert psnr > 40
    jpeg = io.BytesIO()
    Image.fromarray(marked).save(jpeg, format="JPEG", quality=75)
    half = Image.fromarray(marked).resize((size // 2, size // 2), Image.BICUBIC).resize((size, size), Image.BICUBIC)
    c = size // 20 + 1
    attacked = {"none": marked, "jpeg75": np.asarray(Image.open(jpeg).convert("RGB")), "resize": np.asarray(half),
                "crop10": marked[c: size - (size // 10 - c), c + 1: size - (size // 10 - c - 1)]}
    for name, img in attacked.items():
        assert watermark.detect(img).found, (size, name, watermark.detect(img))
    assert not watermark.detect(original).found
    assert watermark.detect(original).matched < watermark.DETECT_MIN_BITS


def test_watermark_refuses_bad_input_with_the_fix():
    with pytest.raises(ValueError, match="no-watermark"):
        watermark.embed(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        watermark.embed(np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32), np.uint8))


def test_save_image_without_marker_or_mask_follows_the_run_config(signed_run, tmp_path, capsys):
    """What `run`'s writer does: the marker from the run's config.json, the mask placed again."""
    run, _ = signed_run
    rec = next(r for r in read_records(run / MANIFEST) if r.is_image)
    marked = np.asarray(Image.open(run / rec.image).convert("RGB")).astype(int)
    noise = np.random.default_rng(0).integers(-3, 4, marked.shape)  # off the watermark's lattice again
    pixels = np.clip(marked + noise, 0, 255).astype(np.uint8)
    rec.image = rec.image.replace(".png", "_again.png")
    save_image(run, tmp_path / MANIFEST, rec, pixels)
    again = np.asarray(Image.open(run / rec.image).convert("RGB"))
    product = placed_alpha(run, rec) > 0
    assert np.array_equal(again[product], pixels[product])
    rc, [r] = _verify(capsys, run / rec.image)
    assert rc == 0 and r["c2pa"]["generation"]["seed"] == rec.seed and r["watermark"]["found"]
    (run / rec.image).unlink()


@pytest.mark.slow  # about a minute on a busy 2-core machine: generation and RFNet inspection
def test_recurrent_run_images_verify(tiny_checkpoint, product_files, tmp_path, capsys):
    out = tmp_path / "run"
    main(["run", str(product_files[0]), "--out", str(out), "-k", "2", *FAST])
    images = sorted((out / "images").glob("*.png"))
    rc, found = _verify(capsys, *images)
    assert images and rc == 0
    assert all(r["c2pa"]["generation"].get("verdict") and r["watermark"]["found"] for r in found)


def test_runs_made_before_provenance_existed_still_resume(tmp_path):
    from reliable_ad.core.config import to_dict
    from reliable_ad.recurrent.config import RunConfig, upgrade_stored_run_config
    from reliable_ad.training.resume import check_resume_config

    old = to_dict(RunConfig())
    del old["generation"]["provenance"]
    (tmp_path / "config.json").write_text(json.dumps(old), encoding="utf-8")
    identity = ("generation", "recurrent", "judge")
    check_resume_config(tmp_path, to_dict(RunConfig()), identity, upgrade=upgrade_stored_run_config, write=False)


def test_verify_reports_an_unreadable_file_and_goes_on(signed_run, tmp_path, capsys):
    run, _ = signed_run
    bad = tmp_path / "notes.png"
    bad.write_text("not an image", encoding="utf-8")
    rc, found = _verify(capsys, bad, tmp_path / "absent.png", next((run / "images").glob("*.png")))
    assert rc == 1 and [r["status"] for r in found] == ["unreadable", "unreadable", "signed"]
