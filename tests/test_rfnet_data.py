"""RFNet data: RF1M, manifest and annotation readers on synthetic files, splits, the lazy dataset."""

from __future__ import annotations

import json
import logging
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliable_ad.data.readers import CLASS_NAMES, Sample, parse_label, policy_class_names, read_annotation_export, read_manifest, read_rf1m
from reliable_ad.data.tensors import ImageLoadError
from reliable_ad.rfnet.dataset import RFDataset, collate_rf
from reliable_ad.data.splits import class_counts, class_weights, split_by_product


def _png(path: Path, size=(8, 8), color=(200, 10, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


# integer labels are the release README's codes (label_codes "rf1m": 1 Available, 2 Unsuitable, 3 Space
# Mismatch, 4 Size Mismatch, 5 Indistinctiveness, 6 Shape Hallucination); names need no mapping
LABEL_LINES = [
    "image label",  # 1: header, skipped silently
    "images/p1_1.png 1",  # 2: Available
    "images/p1_2.png,Space Mismatch",  # 3
    "p2_1.png\tsize_mismatch",  # 4: relative to images/
    "images/p3.png   SHAPE HALLUCINATION",  # 5
    "# a comment",  # 6
    "",  # 7
    "images/sub/p4_1.png 2",  # 8: Unsuitable
    "images/p5_1.png 4",  # 9: missing file
    "images/p2_2.png purple",  # 10: unknown class name
    "justonetoken",  # 11: malformed
    "images/p1_1.png 3",  # 12: duplicate
    "images/p2_3.png unsuitable",  # 13: Unsuitable by name
    "images/p6_1.png indistinctiveness",  # 14: no product image
]


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    root = tmp_path / "rf1m"
    for name in ("p1_1", "p1_2", "p2_1", "p2_2", "p2_3", "p3", "sub/p4_1", "p6_1"):
        _png(root / "images" / f"{name}.png")
    _png(root / "products" / "p1.png", mode="RGBA", color=(0, 0, 255, 255))
    _png(root / "products" / "p2.jpg")
    _png(root / "products" / "p3.png")
    _png(root / "products" / "p4.png")
    (root / "labels.txt").write_text("\n".join(LABEL_LINES) + "\n", encoding="utf-8")
    (root / "captions.tsv").write_text("product_id\tcaption\np1\tred mug\np2\tblue vase\n", encoding="utf-8")
    return root


def test_read_rf1m_parses_names_ints_and_separators(release: Path) -> None:
    samples, problems = read_rf1m(release)
    by_name = {Path(s.image).name: s for s in samples}
    assert sorted(by_name) == ["p1_1.png", "p1_2.png", "p2_1.png", "p3.png", "p6_1.png"]
    assert [by_name[n].label for n in ("p1_1.png", "p1_2.png", "p2_1.png", "p3.png", "p6_1.png")] == [0, 1, 2, 4, 3]
    assert by_name["p1_2.png"].product == str(release / "products" / "p1.png")
    assert by_name["p2_1.png"].product == str(release / "products" / "p2.jpg")
    assert by_name["p3.png"].product_id == "p3" and by_name["p3.png"].product.endswith("p3.png")
    assert by_name["p6_1.png"].product is None
    assert by_name["p1_1.png"].caption == "red mug" and by_name["p3.png"].caption == ""
    assert by_name["p2_1.png"].image == str(release / "images" / "p2_1.png")
    assert by_name["p1_1.png"].source == "labels.txt:2"
    assert by_name["p1_1.png"].product_id is by_name["p1_2.png"].product_id  # shared, not copied


def test_read_rf1m_records_problems_without_failing(release: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="reliable_ad.data.readers"):
        _, problems = read_rf1m(release)
    lines = {p.line: p.message for p in problems}
    assert sorted(lines) == [9, 10, 11, 12]
    assert "not found" in lines[9] and "p5_1.png" in lines[9]
    assert "class name" in lines[10] and "p2_2.png purple" in lines[10]
    assert "justonetoken" in lines[11]
    assert "duplicate" in lines[12]
    assert all(p.file == str(release / "labels.txt") for p in problems)
    assert "4 lines skipped" in caplog.text


def test_read_rf1m_unsuitable_policies(release: Path) -> None:
    def labels(policy):
        return {Path(s.image).name: s.label for s in read_rf1m(release, unsuitable=policy).samples}

    assert "p4_1.png" not in labels("drop") and "p2_3.png" not in labels("drop")
    kept = labels("keep")
    assert kept["p4_1.png"] == 5 and kept["p2_3.png"] == 5
    merged = labels("merge:space_mismatch")
    assert merged["p4_1.png"] == 1 and merged["p2_3.png"] == 1 and merged["p1_1.png"] == 0
    assert policy_class_names("keep")[-1] == "Unsuitable" and policy_class_names("drop") == CLASS_NAMES
    for bad in ("ignore", "merge:Unsuitable", "merge:nothing"):
        with pytest.raises(ValueError, match="Space Mismatch") as err:
            read_rf1m(release, unsuitable=bad)
        assert repr(bad) in str(err.value)


def test_read_rf1m_captions_json_and_missing_files(release: Path) -> None:
    (release / "caps.json").write_text(json.dumps({"p1": "mug", "p3": 7}), encoding="utf-8")
    samples, problems = read_rf1m(release, captions="caps.json", check_files=False)
    by_name = {Path(s.image).name: s for s in samples}
    assert by_name["p1_2.png"].caption == "mug"
    assert "p5_1.png" in by_name  # kept without the file check
    assert any("caps.json" in p.file and "'p3'" in p.message for p in problems)
    with pytest.raises(FileNotFoundError, match="labels.txt"):
        read_rf1m(release / "images")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_rf1m(release, label_file="nope.txt")


def test_parse_label_is_tolerant_but_strict_about_unknowns() -> None:
    assert [parse_label(v) for v in ("0", 4, "space mismatch", "SIZE_MISMATCH", "Shape-Hallucination",
                                     " indistinctiveness ", "Unsuitable", "5")] == [0, 4, 1, 2, 4, 3, 5, 5]
    for bad in ("6", -1, "avail", True, 1.0, None):
        with pytest.raises(ValueError):
            parse_label(bad)


def test_read_rf1m_scales_to_many_lines(tmp_path: Path) -> None:
    n, n_traced = 200_000, 20_000
    names = ["Available", "space_mismatch", "5", "Shape Hallucination", "4"]  # rf1m codes: 5 Indist., 4 Size
    lines = [f"images/{i // 4:06d}_{i % 4}.png {names[i % 5]}\n" for i in range(n)]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "labels.txt").write_text("".join(lines))
    start = time.perf_counter()
    samples, problems = read_rf1m(tmp_path / "full", check_files=False)
    elapsed = time.perf_counter() - start
    assert len(samples) == n and not problems
    assert samples[-1].product_id == f"{(n - 1) // 4:06d}" and samples[-1].label == 2
    assert elapsed < 10, f"reading {n} lines took {elapsed:.1f} s"
    del samples
    # Memory per sample does not depend on n; tracing slows allocation ~10x, so trace a slice.
    (tmp_path / "slice").mkdir()
    (tmp_path / "slice" / "labels.txt").write_text("".join(lines[:n_traced]))
    tracemalloc.start()
    try:
        samples, _ = read_rf1m(tmp_path / "slice", check_files=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(samples) == n_traced
    assert peak / n_traced < 1024, f"{peak / n_traced:.0f} bytes per sample"


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def test_read_manifest(tmp_path: Path) -> None:
    for name in ("a_0.png", "a_1.png", "b_0.png", "c_0.png", "e_0.png"):
        _png(tmp_path / "out" / name)
    _png(tmp_path / "products" / "a.png")
    np.save(tmp_path / "out" / "a_0_depth.npy", np.zeros((4, 4)))
    common = {"product": "products/a.png", "product_hash": "h-a", "caption": "cup"}
    manifest = _write_jsonl(tmp_path / "manifest.jsonl", [
        {"image": "out/a_0.png", **common, "label": "Size Mismatch", "depth": "out/a_0_depth.npy"},
        {"image": "out/a_1.png", **common, "verdict": {"label": 0, "probs": [0.9, 0.1]}},
        {"image": "out/b_0.png", **common},  # unlabelled
        {"image": "out/c_0.png", **common, "label": 3, "error": "CUDA out of memory"},
        "{not json",
        {"image": "out/gone.png", **common, "label": 0},
        {"image": "out/e_0.png", **common, "label": "purple"},
        {"image": "out/e_0.png", "product": "products/gone.png", "label": 1},
    ])
    human_only, _ = read_manifest(manifest)
    assert [(Path(s.image).name, s.label) for s in human_only] == [("a_0.png", 2)]  # a verdict is no label
    samples, problems = read_manifest(manifest, use_verdicts=True)
    assert [(Path(s.image).name, s.label) for s in samples] == [("a_0.png", 2), ("a_1.png", 0)]
    assert samples[0].product_id == "h-a" and samples[0].caption == "cup"
    assert samples[0].depth == str(tmp_path / "out" / "a_0_depth.npy") and samples[1].depth is None
    assert samples[1].source == "manifest.jsonl:2"
    assert [p.line for p in problems] == [5, 6, 7, 8]
    assert "JSON" in problems[0].message and "gone.png" in problems[1].message and "purple" in problems[2].message
    unlabelled, _ = read_manifest(manifest, require_label=False, use_verdicts=True)
    assert [s.label for s in unlabelled] == [2, 0, -1]


def test_read_annotation_export_majority_votes(tmp_path: Path) -> None:
    for name in ("x_0.png", "y_0.png", "z_0.png", "w_0.png"):
        _png(tmp_path / name)
    export = _write_jsonl(tmp_path / "export.jsonl", [
        {"image": "x_0.png", "caption": "lamp", "votes": ["Available", 1, 1]},
        {"image": "y_0.png", "caption": "lamp", "votes": [3, 2, 2, 3]},  # tie: lowest index wins
        {"image": "z_0.png", "caption": "lamp", "label": "available", "votes": [0, 4, 4]},
        {"image": "w_0.png", "votes": [5, 5, 0]},  # Unsuitable majority
        {"image": "w_0.png", "votes": []},
        {"image": "w_0.png"},
    ])
    samples, problems = read_annotation_export(export)
    assert [(s.label, s.agreement) for s in samples] == [(1, pytest.approx(2 / 3)), (2, 0.5), (0, pytest.approx(1 / 3))]
    assert [s.product_id for s in samples] == ["x", "y", "z"]
    assert [p.line for p in problems] == [5, 6]
    kept, _ = read_annotation_export(export, unsuitable="keep")
    assert kept[-1].label == 5 and kept[-1].agreement == pytest.approx(2 / 3)


def _samples(n_products: int, per_product: int = 3) -> list[Sample]:
    return [Sample(f"{p}_{k}.png", None, "", (p + k) % 5, f"prod{p}", "t:0")
            for p in range(n_products) for k in range(per_product)]


def test_split_by_product_has_no_leaks_and_is_deterministic() -> None:
    samples = _samples(3000)
    splits = split_by_product(samples, (0.8, 0.1, 0.1), seed=0)
    assert sorted(i for idx in splits.values() for i in idx) == list(range(len(samples)))
    products = {name: {samples[i].product_id for i in idx} for name, idx in splits.items()}
    assert not (products["train"] & products["val"] or products["train"] & products["test"]
                or products["val"] & products["test"])
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(products[name]) / 3000 - share) < 0.03
    assert split_by_product(samples, seed=0) == splits
    assert split_by_product(samples, seed=1) != splits
    # stable when samples are added: old products keep their split
    grown = samples + _samples(4000)[len(samples):]
    grown_splits = split_by_product([s.product_id for s in grown], seed=0)
    for name in splits:
        assert grown_splits[name][: len(splits[name])] == splits[name]
    for bad in ((0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)):
        with pytest.raises(ValueError, match="fractions"):
            split_by_product(samples, bad)


def test_class_counts_and_weights_match_hand_values() -> None:
    counts = class_counts([0] * 6 + [1] * 3 + [2] + [4] * 2)
    assert counts.tolist() == [6, 3, 1, 0, 2]
    np.testing.assert_allclose(class_weights(counts, "inverse"), [0.5, 1.0, 3.0, 0.0, 1.5])
    root_sum = np.sqrt(6) + np.sqrt(3) + 1 + np.sqrt(2)
    expected = [12 / root_sum / np.sqrt(n) if n else 0.0 for n in (6, 3, 1, 0, 2)]
    np.testing.assert_allclose(class_weights(counts, "sqrt_inverse"), expected)
    assert class_weights(counts, "none").tolist() == [1.0] * 5
    assert class_counts(_samples(2, 1)).tolist() == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="scheme"):
        class_weights(counts, "focal")


@pytest.fixture()
def dataset_samples(tmp_path: Path) -> list[Sample]:
    image = _png(tmp_path / "g_0.png", size=(32, 32), color=(255, 0, 0))
    product = _png(tmp_path / "p.png", size=(20, 10), mode="RGBA", color=(0, 0, 0, 0))
    depth = tmp_path / "d.npy"
    np.save(depth, np.arange(64, dtype=np.float32).reshape(8, 8))
    salience = _png(tmp_path / "s.png", size=(16, 16), color=128, mode="L")
    return [
        Sample(str(image), str(product), "red cup", 2, "p", "m:1", str(depth), str(salience)),
        Sample(str(image), None, "", 0, "q", "m:2"),
    ]


def test_dataset_items_have_the_right_shapes(dataset_samples: list[Sample]) -> None:
    ds = RFDataset(dataset_samples, image_size=24)
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert torch.allclose(item["image"][:, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert item["product"].shape == (3, 24, 24) and torch.all(item["product"] == 1.0)  # transparent -> white
    assert item["depth"].shape == (1, 24, 24) and item["depth"].min() >= 0 and item["depth"].max() <= 1
    assert torch.allclose(item["salience"], torch.full((1, 24, 24), 128 / 255))
    assert (item["caption"], item["label"], item["index"]) == ("red cup", 2, 0)
    assert ds[-1]["product"] is None and ds[1]["depth"] is None

    batch = collate_rf([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 24, 24) and batch["label"].tolist() == [2, 0]
    assert batch["product_mask"].tolist() == [True, False] and batch["product"][1].abs().sum() == 0
    assert batch["caption"] == ["red cup", ""]
    plain = collate_rf([ds[1], ds[1]])
    assert "depth" not in plain and "product" not in plain and "product_mask" not in plain

    loader = torch.utils.data.DataLoader(ds.subset([1, 1, 1]), batch_size=2, collate_fn=collate_rf)
    assert [b["image"].shape[0] for b in loader] == [2, 1]
    assert ds.labels.dtype == np.int64 and ds.depths is not None and ds.subset([1]).depths == [None]


def test_dataset_names_an_unreadable_image(tmp_path: Path, dataset_samples: list[Sample]) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    ds = RFDataset([Sample(str(broken), None, "", 0, "b", "m:1")], image_size=8)
    with pytest.raises(ImageLoadError, match="broken.png") as err:
        ds[0]
    assert err.value.path == str(broken)
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(ValueError, match="image_size"):
        RFDataset(dataset_samples, image_size=0)
