"""The command line on bad inputs: products-file rows, folder contents, bad settings caught before anything
is written, a full disk, and YAML configs read alike by every command."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliable_ad.cli.main import main
from reliable_ad.generation.inputs import read_product_inputs
from reliable_ad.generation.prompts import get_preset
from reliable_ad.core.io import read_jsonl

FAST = ["--model", "tiny", "--size", "64", "--steps", "2", "--no-progress"]


# --- products files and folders ------------------------------------------------------------------


def test_products_file_row_problems_name_the_row_once_and_the_fix(tmp_path, product_files):
    csv = tmp_path / "products.csv"
    csv.write_text("image,caption,preset\nproducts/prod_0.png,red,\n,no image here,\nproducts/prod_1.png,,nope\n"
                   "products/prod_2.png,,minimal-wall-color\n")
    jl = tmp_path / "products.jsonl"
    jl.write_text(json.dumps({"image": "products/prod_0.png", "preset": "nope"}) + "\n[1, 2]\n{bad\n")
    items, problems = read_product_inputs([str(csv), str(jl)], check_preset=get_preset)
    assert [Path(i.path).name for i in items] == ["prod_0.png", "prod_2.png"]
    assert [p.source for p in problems] == [f"{csv}:3", f"{csv}:4", f"{jl}:1", f"{jl}:2", f"{jl}:3"]
    for p in problems:
        assert str(tmp_path) not in p.message, p.message  # the location is the source's, not repeated
    assert "no 'image'" in problems[0].message and "each row needs the product image path" in problems[0].message
    for p in (problems[1], problems[2]):
        assert "unknown prompt preset 'nope'" in p.message and "minimal-wall-color" in p.message
        assert "fix the row's preset" in p.message
    assert "JSON object per line" in problems[3].message and "not valid JSON" in problems[4].message
    # without a checker, rows' presets are taken as they are
    items, problems = read_product_inputs([str(csv)])
    assert [i.preset for i in items] == [None, "nope", "minimal-wall-color"] and len(problems) == 1


def test_folder_reports_unsupported_files_but_not_captions(tmp_path, product_files):
    folder = product_files[0].parent  # prod_0..2.png, each with its prod_i.txt caption
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    frames[0].save(folder / "spin.gif", save_all=True, append_images=frames[1:])  # animated
    (folder / "notes.txt").write_text("not a caption")
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / ".DS_Store").write_bytes(b"\x00")
    (folder / "more").mkdir()
    items, problems = read_product_inputs([str(folder)])
    assert [Path(i.path).name for i in items] == ["prod_0.png", "prod_1.png", "prod_2.png"]
    assert items[0].caption == "a red bottle"
    by_name = {Path(p.source).name: p.message for p in problems}
    assert sorted(by_name) == ["more", "notes.txt", "photo.heic", "spin.gif"]
    assert by_name["spin.gif"].startswith("unsupported file type .gif; convert it to PNG")
    assert by_name["photo.heic"].startswith("unsupported file type .heic; convert it to PNG")
    assert "caption file without an image" in by_name["notes.txt"] and "name it after its image" in by_name["notes.txt"]
    assert "pass it as an argument of its own" in by_name["more"]


def test_cli_prints_each_problem_once(tiny_checkpoint, product_files, tmp_path, capsys):
    csv = tmp_path / "products.csv"
    csv.write_text("image,preset\nproducts/prod_0.png,\n,\nproducts/prod_1.png,nope\n")
    # needs run_generate(problems=...), which records each problem as a failed item
    rc = main(["generate", str(csv), "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    for row in (3, 4):
        line = next(line for line in err.splitlines() if f"{csv}:{row}" in line)
        assert line.count(str(csv)) == 1, line
        assert sum(f"{csv}:{row}" in line for line in err.splitlines()) == 1, err


# --- settings checked before anything is written -------------------------------------------------


def test_bad_preset_is_refused_before_config_json_and_the_fixed_command_resumes(
        tiny_checkpoint, product_files, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["generate", str(product_files[0]), "--out", str(out), *FAST]
    assert main([*base, "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown prompt preset 'nope'" in err and "bright-indoor-beige" in err and "Traceback" not in err
    assert not (out / "config.json").exists()
    assert main([*base, "--presets-file", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml does not exist" in capsys.readouterr().err and not (out / "config.json").exists()
    assert main([*base, "--box-alpha-threshold", "0"]) == 2
    assert "box_alpha_threshold=0" in capsys.readouterr().err and not (out / "config.json").exists()
    assert main(["run", str(product_files[0]), "--out", str(out), *FAST, "--preset", "nope"]) == 2
    assert "unknown prompt preset 'nope'" in capsys.readouterr().err and not (out / "config.json").exists()
    # the corrected command works on the same folder (needs run_generate(problems=...))
    assert main([*base, "--preset", "bright-indoor"]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["preset"] == "bright-indoor"


def test_box_alpha_threshold_flag_reaches_the_config(product_files, tmp_path):
    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS
    from reliable_ad.cli.main import build_parser
    from reliable_ad.cli.run import RUN_FLAGS
    from reliable_ad.generation.config import GenerateConfig
    from reliable_ad.recurrent.config import RunConfig

    parser = build_parser()
    args = parser.parse_args(["generate", "x.png", "--out", "o", "--box-alpha-threshold", "1"])
    assert build_config(GenerateConfig, args, GENERATION_FLAGS).product.box_alpha_threshold == 1
    args = parser.parse_args(["run", "x.png", "--out", "o"])
    assert build_config(RunConfig, args, RUN_FLAGS).generation.product.box_alpha_threshold == 128


# --- a full disk ---------------------------------------------------------------------------------


def test_disk_full_is_one_line_and_the_same_command_resumes(tiny_checkpoint, product_files, tmp_path, monkeypatch,
                                                            capsys):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to tell which file is synced")
    out = tmp_path / "run"
    args = ["generate", *map(str, product_files), "-n", "2", "--batch-size", "2", "--out", str(out), *FAST]
    real_fsync, synced = os.fsync, []

    def full_disk(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith("manifest.jsonl"):
            synced.append(path)
            if len(synced) == 3:  # the third record: the disk fills up mid-line
                os.ftruncate(fd, os.fstat(fd).st_size - 7)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "no space left" in lines[0] and str(out) in lines[0]
    assert "free space on" in lines[0] and "rerun the same command to resume" in lines[0]
    assert len(read_jsonl(out / "manifest.jsonl")) == 2  # the torn third line does not count

    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(args) == 0, capsys.readouterr().err
    records = [r for r in read_jsonl(out / "manifest.jsonl") if not r.get("error")]
    assert len(records) == 6 and len({(r["product_hash"], r["attempt"]) for r in records}) == 6
    assert len(list((out / "images").glob("*.png"))) == 6


def test_disk_full_behind_another_error_and_quota():
    from reliable_ad.cli.main import disk_full_error, disk_full_message

    full = OSError(errno.EDQUOT, "Disk quota exceeded", "/data/run/images/a.png")
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("could not save") from e
    except RuntimeError as e:
        assert disk_full_error(e) is full
    assert disk_full_error(ValueError("x")) is None
    message = disk_full_message("run", full, None)
    assert "disk quota exceeded while writing /data/run/images/a.png" in message
    assert "free space on the disk holding /data/run/images and rerun the same command" in message


# --- YAML: one reader for every command ----------------------------------------------------------


def test_exponent_floats_are_floats_in_every_command_config(tmp_path):
    from reliable_ad.cli.common import build_config
    from reliable_ad.cli.generate import GENERATION_FLAGS
    from reliable_ad.cli.main import build_parser
    from reliable_ad.cli.rfft import TRAIN_FLAGS
    from reliable_ad.cli.run import RUN_FLAGS
    from reliable_ad.generation.config import GenerateConfig
    from reliable_ad.recurrent.config import RunConfig
    from reliable_ad.rfft.config import RFFTConfig
    from reliable_ad.rfnet.train_config import TrainConfig

    def write(name, text):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    parser = build_parser()
    gen = write("gen.yaml", "sampling:\n  eta: 1e-1\nmodel:\n  lora_scale: 8e-1\n")
    cfg = build_config(GenerateConfig, parser.parse_args(["generate", "x.png", "--out", "o", "--config", gen]),
                       GENERATION_FLAGS)
    assert cfg.sampling.eta == 0.1 and cfg.model.lora_scale == 0.8
    run = write("run.yaml", "generation:\n  sampling:\n    eta: 1e-1\njudge:\n  threshold: 7e-1\n")
    cfg = build_config(RunConfig, parser.parse_args(["run", "x.png", "--out", "o", "--config", run]), RUN_FLAGS)
    assert cfg.generation.sampling.eta == 0.1 and cfg.judge.threshold == 0.7
    rfft = write("rfft.yaml", "optim:\n  learning_rate: 1e-5\n")
    cfg = build_config(RFFTConfig, parser.parse_args(["rfft", "train", "--out", "o", "--config", rfft]), TRAIN_FLAGS)
    assert isinstance(cfg.optim.learning_rate, float) and cfg.optim.learning_rate == 1e-5
    train = write("rfnet.yaml", "optim:\n  lr: 3e-5\n")
    assert TrainConfig.load(train).optim.learning_rate == 3e-5
    with pytest.raises(ValueError, match=r"dup\.yaml.*duplicate key 'eta'"):
        build_config(GenerateConfig, parser.parse_args(
            ["generate", "x.png", "--out", "o", "--config", write("dup.yaml", "sampling:\n  eta: 0\n  eta: 1\n")]),
            GENERATION_FLAGS)


def test_one_yaml_loader():
    import reliable_ad.rfnet.train_config as train_config
    from reliable_ad.core.config import load_yaml

    assert load_yaml("a: 1e-5\nb: '1e-5'\nc: 1.5\nd: 3") == {"a": 1e-5, "b": "1e-5", "c": 1.5, "d": 3}
    assert not hasattr(train_config, "yaml_load")  # the duplicate is gone
    with pytest.raises(ValueError, match="invalid YAML"):
        load_yaml("a: [unclosed")
    assert np.isclose(train_config.parse_set(["optim.lr=2e-4"])["optim"]["lr"], 2e-4)


def test_an_unsupported_file_given_directly_is_reported_not_half_read(tmp_path):
    """An animated GIF named on the command line is a problem with the fix, as it is inside a folder
    (the loader would otherwise read its first frame and call that the product)."""
    from PIL import Image

    from reliable_ad.generation.inputs import read_product_inputs

    gif = tmp_path / "spin.gif"
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    items, problems = read_product_inputs([str(gif), str(tmp_path / "missing.png")])
    assert [i.path for i in items] == [str(tmp_path / "missing.png")]  # a missing image: the loader says so
    assert len(problems) == 1 and problems[0].source == str(gif)
    assert "unsupported file type .gif" in problems[0].message and "PNG" in problems[0].message
