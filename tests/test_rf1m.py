"""RF1M as released: label codes as a named mapping, images read inside zip archives (zip-slip refused),
the compact index, and the modality cache split across processes with its throughput recorded."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliable_ad.data.archives import read_bytes
from reliable_ad.data.label_codes import resolve_label_codes
from reliable_ad.data.rf1m import build_index, read_rf1m
from reliable_ad.modalities.cache import build_cache
from reliable_ad.rfnet.dataset import RFDataset
from reliable_ad.rfnet.trainer_data import RobustDataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RF1M_CODE = {0: 1, 1: 3, 2: 4, 3: 5, 4: 6}  # class index -> the release README's code (2 is Unsuitable)


def _png(color, size=16, noise: int = 0) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (size, size), color)
    if noise:  # a much larger file, so shards of one byte budget hold different numbers of samples
        image = Image.fromarray(np.random.default_rng(noise).integers(0, 255, (size, size, 3), dtype=np.uint8))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def make_release(root: Path, n: int = 24, archives: int = 2, products: bool = True, noisy_every: int = 0) -> Path:
    """An RF1M-shaped release: label.txt with README codes, images in `archives` zips (none: a folder),
    products/<id>.png for even products, captions.json. Image i has red = 10 * i (or is noise, every
    `noisy_every`-th), its class is i % 5."""
    root.mkdir(parents=True)
    zips = [zipfile.ZipFile(root / f"images_{k:02d}.zip", "w") for k in range(archives)]
    lines, captions = ["image label"], {}
    for i in range(n):
        pid, rel = f"{i // 2:05d}", f"images/{i // 2:05d}_{i % 2}.png"
        image = _png((10 * i, 0, 0), noise=i + 1 if noisy_every and i % noisy_every == 0 else 0)
        if zips:
            zips[i % archives].writestr(rel, image)
        else:
            (root / rel).parent.mkdir(exist_ok=True)
            (root / rel).write_bytes(image)
        lines.append(f"{rel} {RF1M_CODE[i % 5]}")
        captions[pid] = f"product {pid}"
        if products and (i // 2) % 2 == 0:
            (root / "products").mkdir(exist_ok=True)
            (root / "products" / f"{pid}.png").write_bytes(_png((0, 0, 200), 12))
    for zf in zips:
        zf.close()
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    (root / "captions.json").write_text(json.dumps(captions))
    return root


def test_label_codes_are_named_mappings_or_files(tmp_path):
    rf1m, paper0 = resolve_label_codes("rf1m"), resolve_label_codes("paper0")
    assert resolve_label_codes(None) is rf1m
    assert [rf1m.raw(c) for c in range(1, 7)] == [0, 5, 1, 2, 3, 4]  # README: 1 Available, 2 Unsuitable, 3 Space ...
    assert [paper0.raw(c) for c in range(6)] == [0, 1, 2, 3, 4, 5] and rf1m.raw(0) is None
    (tmp_path / "codes.yaml").write_text("10: Available\n20: space_mismatch\n30: unsuitable\n")
    mine = resolve_label_codes(tmp_path / "codes.yaml")
    assert mine.codes == {10: 0, 20: 1, 30: 5}
    (tmp_path / "bad.json").write_text(json.dumps({"1": "Availble"}))
    with pytest.raises(ValueError, match="Availble"):
        resolve_label_codes(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'rf2m'.*rf1m, paper0"):
        resolve_label_codes("rf2m")


def test_numeric_codes_follow_the_mapping_and_a_misfit_file_is_refused(tmp_path, caplog):
    root = tmp_path / "r"
    (root / "images").mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        (root / "images" / f"{name}.png").write_bytes(_png((1, 2, 3)))
    (root / "label.txt").write_text("images/a.png 1\nimages/b.png 2\nimages/c.png 6\nimages/d.png Size Mismatch\n")
    with caplog.at_level(logging.INFO, logger="reliable_ad.data.label_codes"):
        samples, problems = read_rf1m(root, unsuitable="keep")
    assert [s.label for s in samples] == [0, 5, 4, 2] and not problems  # README codes; names need no mapping
    assert "label codes 'rf1m'" in caplog.text and "Available 1 (25.0%)" in caplog.text  # histogram every read
    with pytest.raises(ValueError, match="label.txt:3: label code 6 .* 'paper0'.*--label-codes rf1m"):
        read_rf1m(root, label_codes="paper0")  # a 1..6 file read as 0..5: refused, not shifted by one
    (root / "label.txt").write_text("images/a.png 1\nimages/b.png 0\n")  # 0..5 numbering read as README codes
    with pytest.raises(ValueError) as err:
        read_rf1m(root)
    message = str(err.value)
    assert "label.txt:2" in message and "label code 0" in message and "'rf1m'" in message
    assert "--label-codes paper0" in message


def test_zipped_release_is_read_in_place_and_unsafe_members_refused(tmp_path):
    root = make_release(tmp_path / "rf1m", n=10)
    with zipfile.ZipFile(root / "images_00.zip", "a") as zf:
        zf.writestr("../escape.png", _png((9, 9, 9)))
        zf.writestr("/abs/absolute.png", _png((9, 9, 9)))
        link = zipfile.ZipInfo("images/link.png")
        link.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(link, "/etc/passwd")
    with open(root / "label.txt", "a") as f:
        f.write("escape.png 1\nimages/link.png 1\n")
    samples, problems = read_rf1m(root, unsuitable="keep")
    refused = [p.message for p in problems if "refused" in p.message]
    assert len(refused) == 3 and any("'..'" in m for m in refused) and any("symbolic link" in m for m in refused)
    assert any("absolute" in m for m in refused)
    assert sum("not found" in p.message for p in problems) == 2  # the rows naming unsafe members
    with pytest.raises(ValueError, match="refused: '..'"):  # and reading one by its path is refused too
        read_bytes(str(root / "images_00.zip") + "/../escape.png")
    assert len(samples) == 10 and all(".zip/images/" in s.image for s in samples)
    assert samples[3].product_id == "00001" and samples[3].caption == "product 00001"
    assert samples[4].product.endswith("products/00002.png") and samples[3].product is None
    # RFNet's dataset reads the members in place: image i has red 10 * i
    ds = RobustDataset(RFDataset(samples, image_size=8))
    items = [ds[i] for i in range(len(ds))]
    assert all(item["valid"] for item in items)
    assert [round(float(item["image"][0].mean()) * 255) for item in items] == [10 * i for i in range(10)]
    assert [item["label"] for item in items] == [i % 5 for i in range(10)]


def test_index_is_compact_and_matches_exact_then_unique_file_names(tmp_path):
    root = make_release(tmp_path / "rf1m", n=8, products=False)
    with zipfile.ZipFile(root / "images_01.zip", "a") as zf:  # a file name in two archives is ambiguous
        zf.writestr("other/00000_0.png", _png((1, 1, 1)))
    (root / "label.txt").write_text("images/00001_1.png 1\n00002_0.png 3\n00000_0.png 4\nnowhere.png 5\n")
    index = build_index(root)
    assert index.rows.paths.dtype.kind == "S" and index.rows.raw.dtype == np.int8
    assert index.members.names.dtype.kind == "S" and len(index.members.names) == 9
    assert index.archived(0).endswith("images_01.zip/images/00001_1.png")  # exact member name
    assert index.archived(1).endswith("images_00.zip/images/00002_0.png")  # unique file name
    assert index.archived(2) is None and index.archived(3) is None  # ambiguous; absent
    assert index.histogram["Available"] == 1 and index.histogram["Indistinctiveness"] == 1


def _read_in_child(path, queue):
    queue.put(read_bytes(path))


def test_archive_handles_are_reopened_after_fork(tmp_path):
    root = make_release(tmp_path / "rf1m", n=4, products=False)
    member = str(root / "images_00.zip") + "/images/00001_0.png"
    assert read_bytes(member) == _png((20, 0, 0))  # the parent now holds the archive open
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(str(root / "images_00.zip") + "/images/00000_0.png", queue))
    child.start()
    assert queue.get(timeout=60) == _png((0, 0, 0))
    child.join(60)
    assert read_bytes(member) == _png((20, 0, 0))  # the parent's handle is untouched
    with pytest.raises(FileNotFoundError, match="no member"):
        read_bytes(str(root / "images_00.zip") + "/images/missing.png")


def test_cli_data_index_shows_the_histogram_and_refuses_a_wrong_mapping(tmp_path):
    root = make_release(tmp_path / "rf1m", n=10, products=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "reliable_ad.cli.main", "data", "index", str(root)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "10 rows" in r.stderr and "2 zip archive(s) with 10 image members, 10 rows found" in r.stderr
    assert "classes with label codes 'rf1m'" in r.stderr  # INFO, shown at the default verbosity
    r = subprocess.run(cmd + ["--label-codes", "paper0"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "label code 6 is not in the label-code mapping 'paper0'" in r.stderr


def test_modality_cache_split_across_processes_records_throughput(tmp_path):
    root = make_release(tmp_path / "rf1m", n=6, products=False)
    tiny = {"depth": "tiny", "salience": "fine-grained", "size": 16, "progress": False}
    first = build_cache(root, rank=0, world_size=2, **tiny)
    second = build_cache(root, rank=1, world_size=2, **tiny)
    assert first.images == second.images == 3 and first.written == second.written == {"depth": 3, "salience": 3}
    maps = sorted(p.relative_to(root / "modalities" / "depth").as_posix() for p in (root / "modalities" / "depth")
                  .rglob("*.npy"))
    assert maps == sorted(f"images_0{i % 2}.zip/images/{i // 2:05d}_{i % 2}.png.npy" for i in range(6))
    for rank in (0, 1):
        record = json.loads((root / "modalities" / "throughput" / f"rank-{rank}-of-2.json").read_text())
        assert record["images"] == 3 and record["images_per_second"] > 0
        assert record["bytes_per_image"] == pytest.approx(2 * (128 + 16 * 16 * 2), abs=64)  # two float16 maps
    again = build_cache(root, rank=1, world_size=2, **tiny)  # resumable: nothing left to do
    assert again.written == {"depth": 0, "salience": 0} and again.skipped == {"depth": 3, "salience": 3}
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        build_cache(root, rank=2, world_size=2, **tiny)


def test_central_directory_reader_agrees_with_zipfile_on_zip64(tmp_path):
    from reliable_ad.data.archives import _members, scan_archives

    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:  # more than 65,535 entries: zip64 end records
        for i in range(66_000):
            zf.writestr(f"images/{i:06d}.png", b"")
        zf.writestr(zipfile.ZipInfo("images/caf\xe9.png"), _png((1, 1, 1)))  # a non-ASCII (UTF-8 flagged) name
        zf.writestr("images/../../up.png", b"")
    with zipfile.ZipFile(path) as zf:
        expected = [(i.filename.encode(), i.file_size, i.compress_size, i.header_offset, i.CRC) for i in zf.infolist()]
    listed = list(_members(str(path)))
    assert [(e.name, e.size, e.compressed, e.offset, e.crc) for e in listed] == expected
    assert [e.name for e in listed if e.unsafe] == [b"images/../../up.png"]
    problems = []
    members = scan_archives([str(path)], problems)
    assert len(members.names) == 66_001 and len(problems) == 1
    assert read_bytes(str(path) + "/images/caf\xe9.png") == _png((1, 1, 1))
    with zipfile.ZipFile(tmp_path / "deflated.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", _png((5, 5, 5)) * 3)
    assert read_bytes(str(tmp_path / "deflated.zip") + "/a.png") == _png((5, 5, 5)) * 3
    data = bytearray((tmp_path / "deflated.zip").read_bytes())
    data[40] ^= 0xFF  # a flipped byte inside the compressed member
    (tmp_path / "corrupt.zip").write_bytes(bytes(data))
    with pytest.raises(OSError, match="corrupt|Error"):
        read_bytes(str(tmp_path / "corrupt.zip") + "/a.png")
