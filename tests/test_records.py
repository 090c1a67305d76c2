"""The manifest record and its seams: what `generate` and `run` write is what every reader reads
(the annotation importer, RFNet's reader, inspect, summary, report), from any working directory;
a product's identity; records of the older schema; and what the importer refuses."""

from __future__ import annotations

import json
import re
import os
import shutil
import stat
from pathlib import Path

import pytest

from reliable_ad.cli.main import main
from reliable_ad.data.records import SCHEMA_VERSION, ManifestRecord, RecordError, VerdictRecord, read_records

TINY = ["--model", "tiny", "--size", "64", "--steps", "2", "--batch-size", "2", "--no-progress"]


def _run(products: list[Path], out: Path, *extra: str) -> int:
    return main(["run", *map(str, products), "--out", str(out), "--rfnet", "tiny", "-k", "2", *TINY, *extra])


def _images(out: Path) -> list[ManifestRecord]:
    return [r for r in read_records(out / "manifest.jsonl") if r.is_image]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `reliable-ad run` on the tiny models, started from a working directory of its own."""
    from conftest import make_product_rgba

    from PIL import Image

    root = tmp_path_factory.mktemp("records")
    products = []
    for i, color in enumerate([(200, 40, 40), (40, 90, 200)]):
        p = root / "in" / f"prod_{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(make_product_rgba(96, color, seed=i), "RGBA").save(p)
        p.with_suffix(".txt").write_text(f"bottle {i}", encoding="utf-8")
        products.append(p)
    cwd = os.getcwd()
    os.chdir(root / "in")
    try:
        assert _run([Path(p.name) for p in products], root / "run") == 0  # relative product paths
    finally:
        os.chdir(cwd)
    return root / "run"


# ---------------------------------------------------------------------------------------------
# The record


def test_record_round_trip_keeps_unknown_keys_and_names_bad_fields():
    line = {"schema_version": 2, "image": "images/a_000.png", "product": "products/a.png", "attempt": 0,
            "verdict": {"label": "Size Mismatch", "label_index": 2, "p_available": 0.1,
                        "probs": {"Available": 0.1, "Size Mismatch": 0.9}}, "future_field": [1, 2]}
    rec = ManifestRecord.from_json(line)
    assert rec.verdict.label_index == 2 and rec.extra == {"future_field": [1, 2]}
    assert ManifestRecord.from_json(rec.to_json()) == rec and rec.to_json()["future_field"] == [1, 2]
    with pytest.raises(RecordError, match="'attempt' must be an integer"):
        ManifestRecord.from_json({**line, "attempt": "0"})
    with pytest.raises(RecordError, match="'image'.*or an 'error'"):
        ManifestRecord.from_json({"schema_version": 2, "caption": "x"})
    with pytest.raises(RecordError, match="newer than this reliable-ad reads"):
        ManifestRecord.from_json({**line, "schema_version": SCHEMA_VERSION + 1})
    # probs keyed by class (as run writes them) or listed in class order (other tools) read alike
    as_list = VerdictRecord.from_json({"label": "Available", "probs": [0.7, 0.1, 0.1, 0.05, 0.05]})
    assert as_list.label_index == 0 and as_list.probs["Available"] == 0.7 and 0 < as_list.uncertainty < 1


def test_run_writes_self_contained_records_every_reader_accepts(tiny_run, tmp_path, monkeypatch):
    from reliable_ad.annotation.agreement import uncertainty
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability
    from reliable_ad.data.readers import read_manifest

    images = _images(tiny_run)
    assert images and all(r.schema_version == SCHEMA_VERSION and r.verdict is not None for r in images)
    assert all(r.product.startswith("products/") and (tiny_run / r.product).is_file() for r in images)
    assert all(Path(r.product_source).is_absolute() for r in images)
    # the verdict as written (probs keyed by class) gives an uncertainty
    raw = [json.loads(line) for line in (tiny_run / "manifest.jsonl").read_text().splitlines()]
    assert all(isinstance(r["verdict"]["probs"], dict) and uncertainty(r["verdict"]) is not None for r in raw)
    # from another working directory, and with the run folder moved
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    monkeypatch.chdir(tmp_path)
    db = Database(tmp_path / "a.db")
    summary = import_availability(db, moved)
    assert summary.added == len(images) and not summary.problems
    db.dispose()
    samples, problems = read_manifest(moved / "manifest.jsonl", use_verdicts=True)
    assert len(samples) == len(images) and not problems
    assert all(Path(s.product).is_file() and str(moved) in s.product for s in samples)


def test_inspect_reads_what_run_wrote_from_anywhere(tiny_run, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", str(moved), "--rfnet", "tiny", "--no-progress"]) == 0
    assert all(r.verdict.model for r in _images(moved))


def test_schema_1_records_still_read(tmp_path, monkeypatch):
    """A record of the first schema (no schema_version, product relative to the old run's cwd)."""
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import ImportRejected, import_availability
    from reliable_ad.data.readers import read_manifest
    from conftest import make_product_rgba

    from PIL import Image

    run = tmp_path / "old-run"
    (run / "images").mkdir(parents=True)
    (tmp_path / "products").mkdir()
    Image.fromarray(make_product_rgba(64), "RGBA").save(tmp_path / "products" / "p.png")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(run / "images" / "p-0_000.png")
    old = {"image": "images/p-0_000.png", "product": "products/p.png", "product_hash": "ab" * 32, "attempt": 0,
           "seed": 1, "caption": "a bottle", "label": "Available", "error": None,
           "verdict": {"label": "Available", "label_index": 0, "probs": {"Available": 0.8}, "p_available": 0.8}}
    (run / "manifest.jsonl").write_text(json.dumps(old) + "\n")
    monkeypatch.chdir(tmp_path)  # where the old run was started
    rec = read_records(run / "manifest.jsonl")[0]
    assert rec.schema_version == 1 and rec.resolve(run, "product") == tmp_path / "products" / "p.png"
    samples, problems = read_manifest(run / "manifest.jsonl")
    assert not problems and Path(samples[0].product) == tmp_path / "products" / "p.png"
    db = Database(tmp_path / "a.db")
    with pytest.raises(ImportRejected, match="leaves the folder"):  # outside the run: the admin must allow it
        import_availability(db, run)
    assert import_availability(db, run, allow_roots=[tmp_path / "products"]).added == 1
    db.dispose()


# ---------------------------------------------------------------------------------------------
# Identity and failures


def test_the_same_product_twice_is_generated_once(tiny_run, tmp_path, capsys):
    src = tiny_run / "products"
    product = next(src.glob("*.png"))
    twin = tmp_path / "twin.png"
    shutil.copy(product, twin)  # another file, the same content
    for command in ("run", "generate"):
        out = tmp_path / command
        args = [str(product), str(product), str(twin)]
        if command == "run":
            rc = _run([Path(a) for a in args], out)
        else:
            rc = main(["generate", *args, "--out", str(out), "-n", "2", *TINY])
        assert rc == 0, capsys.readouterr().err
        keys = [r.identity for r in _images(out)]
        assert len(keys) == len(set(keys)) and {k for _, k in keys} <= {0, 1}
        assert len({h for h, _ in keys}) == 1
        again = _run([Path(a) for a in args], out) if command == "run" else main(
            ["generate", *args, "--out", str(out), "-n", "2", *TINY])
        assert again == 0 and [r.identity for r in _images(out)] == keys  # the rerun adds nothing
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["duplicate_products"]) == {str(product), str(twin)}
    assert "Traceback" not in capsys.readouterr().err


def test_bad_rows_of_a_products_file_are_recorded_with_file_and_row(tiny_run, tmp_path, capsys):
    product = next((tiny_run / "products").glob("*.png"))
    shutil.copy(product, tmp_path / "good.png")
    table = tmp_path / "products.csv"
    table.write_text("image,caption,preset\ngood.png,a bottle,\n,no image here,\ngood2.png,x,no-such-preset\n")
    shutil.copy(product, tmp_path / "good2.png")
    out = tmp_path / "run"
    assert _run([table], out) == 1
    failed = [r for r in read_records(out / "manifest.jsonl") if r.failed]
    assert sorted(r.source for r in failed) == [f"{table}:3", f"{table}:4"]
    assert any("image" in r.error for r in failed) and any("no-such-preset" in r.error for r in failed)
    err = capsys.readouterr().err
    assert err.count(f"{table}:3") == 1  # the location is printed once
    assert _run([table], out) == 1 and len([r for r in read_records(out / "manifest.jsonl") if r.failed]) == 2


def test_written_files_follow_the_umask(tiny_run):
    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip(f"the test process runs with umask {old:o}")
    for path in [tiny_run / "config.json", tiny_run / "summary.json", tiny_run / "report.html",
                 *list((tiny_run / "images").glob("*.png"))[:2], *list((tiny_run / "products").glob("*"))[:1]]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ---------------------------------------------------------------------------------------------
# What the importer refuses


def _rf1m(folder: Path, names: list[str]) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "products").mkdir()
    lines = []
    for name in names:
        Image.new("RGB", (32, 32), (120, 80, 40)).save(folder / "images" / name)
        lines.append(f"images/{name}\tAvailable\n")
    (folder / "labels.txt").write_text("".join(lines))
    return folder


def test_rf1m_links_out_of_the_folder_are_refused_not_served_or_exported(tmp_path):
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import ImportRejected, import_availability

    from PIL import Image

    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret)
    root = _rf1m(tmp_path / "rf1m", ["a_0.png", "b_0.png"])
    (root / "products" / "a.png").symlink_to(secret)  # a product linked outside
    (root / "images" / "c_0.png").symlink_to(secret)  # an image linked outside
    with open(root / "labels.txt", "a") as f:
        f.write("images/c_0.png\tAvailable\n")
    db = Database(tmp_path / "a.db")
    with pytest.raises(ImportRejected) as e:
        import_availability(db, root)
    assert sum("links to" in p and "leaves the folder" in p for p in e.value.problems) == 2
    summary = import_availability(db, root, skip_problems=True)
    assert summary.added == 1  # b_0 only
    from reliable_ad.annotation.models import Task
    from sqlalchemy import select

    with db.read() as s:
        paths = [(t.image_path, t.product_path) for t in s.scalars(select(Task))]
    assert all(str(secret) not in str(p) for row in paths for p in row)
    db.dispose()


def test_file_names_that_would_break_a_label_file_are_refused(tmp_path):
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import ImportRejected, import_availability

    from PIL import Image

    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    names = ["ok_000.png", "tab\there_000.png", "new\nline_000.png", "#hash_000.png"]
    with open(run / "manifest.jsonl", "w") as f:
        for i, name in enumerate(names):
            Image.new("RGB", (16, 16)).save(run / "images" / name)
            f.write(ManifestRecord(image=f"images/{name}", product_hash=f"{i:064x}", attempt=0, seed=i).to_line())
    db = Database(tmp_path / "a.db")
    with pytest.raises(ImportRejected) as e:
        import_availability(db, run)
    assert len(e.value.problems) == 3 and all("rename the file" in p for p in e.value.problems)
    db.dispose()


def test_an_import_with_nothing_valid_makes_no_empty_batch(tmp_path):
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability
    from reliable_ad.annotation.models import Batch
    from sqlalchemy import func, select

    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.jsonl").write_text(json.dumps({"image": "images/gone.png", "attempt": 0}) + "\n")
    db = Database(tmp_path / "a.db")
    with pytest.raises(ValueError, match="nothing was imported"):
        import_availability(db, run, skip_problems=True)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == 0
    db.dispose()


def test_product_names_that_would_break_a_label_file_are_made_safe_and_the_run_imports(tiny_run, tmp_path):
    """A product called "a#b c\\t.png" (legal on disk) gives image names the importer and label files
    accept; the loop does not break on a file name."""
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability

    product = next((tiny_run / "products").glob("*.png"))
    odd = tmp_path / "in" / "#cup of\ttea's.png"
    odd.parent.mkdir()
    shutil.copy(product, odd)
    out = tmp_path / "run"
    assert _run([odd], out) == 0
    names = [r.image for r in _images(out)] + [r.product for r in _images(out)]
    assert names and all(re.fullmatch(r"[A-Za-z0-9._/+-]+", n) for n in names), names
    db = Database(tmp_path / "a.db")
    assert import_availability(db, out).added == len(_images(out))
    db.dispose()


def test_a_run_folder_of_an_older_version_resumes_and_a_changed_crop_is_named(tiny_run, tmp_path, capsys):
    """config.json in the names of the previous release (reviewer settings at the top, no product box
    threshold: the old crop took every pixel with alpha > 0, i.e. threshold 1) still resumes with the
    same settings, and asking for today's default crop is refused, naming the setting."""
    product = next((tiny_run / "products").glob("*.png"))
    out = tmp_path / "old"
    assert _run([product], out, "--box-alpha-threshold", "1") == 0
    before = [r.identity for r in _images(out)]
    cfg = json.loads((out / "config.json").read_text())
    judge = cfg.pop("judge")
    cfg.update(rfnet=judge["rfnet"], depth=judge["depth"], salience=judge["salience"],
               inspect_batch_size=judge["batch_size"])
    cfg["recurrent"].update(acceptance=judge["acceptance"], threshold=judge["threshold"])
    del cfg["generation"]["product"]["box_alpha_threshold"]
    (out / "config.json").write_text(json.dumps(cfg))
    assert _run([product], out, "--box-alpha-threshold", "1") == 0
    assert [r.identity for r in _images(out)] == before  # resumed: nothing redone
    capsys.readouterr()
    (out / "config.json").write_text(json.dumps(cfg))
    assert _run([product], out) == 2
    assert "generation.product.box_alpha_threshold" in capsys.readouterr().err
