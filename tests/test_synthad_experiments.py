"""The SynthAd experiments driver (benchmarks/synthad_experiments.py) end to end in --quick mode, with
the tiny generator and the tiny RFNet: it completes, writes a well-formed report and result JSON
(numbers finite or undefined, rates and percentages in range), and a rerun reads the results back.
The values themselves are not checked: the tiny models are random."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

import pytest

from experiments.studies import STUDIES
from experiments.studies.common import (ExperimentContext, clean_number, make_products, table,
                                        wall_color_of_background)
from experiments.studies.report import check_result, format_cell, markdown_table

ROOT = Path(__file__).resolve().parents[1]
RFNET_TABLES = ("RFNet vs generated-image-only (Available)", "Modality ablation", "Labelled data (oracle labels)")
PERCENT_COLUMNS = ("P", "R", "F1", "AP", "paper P", "paper R", "paper F1", "paper AP", "paper AP")


def load_driver():
    spec = importlib.util.spec_from_file_location("synthad_experiments", ROOT / "benchmarks" / "synthad_experiments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def _keep_threads():
    """The driver sets torch's thread count (--threads); the rest of the suite gets its own back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, model_home):
    """The whole --quick run, once for the module, one study after another in this process."""
    out = tmp_path_factory.mktemp("synthad") / "out"
    driver = load_driver()
    code = driver.main(["--quick", "--model", "tiny", "--rfnet", "tiny", "--out", str(out), "--jobs", "1"])
    return driver, out, code


def _numbers(tab: dict):
    for row in tab["rows"]:
        for column, cell in zip(tab["columns"], row):
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                yield column, cell


def _is_rate(column: str) -> bool:
    name = column.lower()  # whole words: "generated" is no rate
    return bool(re.search(r"\b(rate|within|accuracy|share)\b", name)) and "%" not in name


def test_quick_run_writes_a_well_formed_report(quick_run):
    _, out, code = quick_run
    assert code == 0
    report = (out / "synthad.md").read_text(encoding="utf-8")
    assert "--quick" in report and "CPU cores" in report and "total run time" in report
    for name in STUDIES:
        entry = json.loads((out / f"{name}.json").read_text(encoding="utf-8")) if (out / f"{name}.json").is_file() \
            else None
        assert f"## {name}" in report
        if entry is None:  # a study module missing from this install is reported as such
            assert "not available" in report.split(f"## {name}")[1]
            continue
        assert entry["status"] == "ok"
        result = entry["result"]
        assert check_result(result) == []
        assert result["tables"] and result["seconds"] > 0 and result["summary"]
        verdicts = report.split("## Verdicts")[1].split("## Run")[0]
        for claim in result.get("claims", []):  # every claim is in the verdict table at the top
            assert f"| {name} | {format_cell(claim['claim'])} |" in verdicts
        for title, tab in result["tables"].items():
            assert f"### {title}" in report
            for column, value in _numbers(tab):
                assert math.isfinite(value), (name, title, column)
                if _is_rate(column):
                    assert 0.0 <= value <= 1.0, (name, title, column, value)
        for rel in result["figures"]:
            copied = out / "synthad" / f"{name}_{Path(rel).name}"
            assert copied.is_file() and copied.read_bytes()[:4] == b"\x89PNG"
            assert f"(synthad/{copied.name})" in report


def test_rfnet_study_tables(quick_run):
    _, out, _ = quick_run
    result = json.loads((out / "rfnet.json").read_text(encoding="utf-8"))["result"]
    assert set(RFNET_TABLES) <= set(result["tables"])
    main = result["tables"][RFNET_TABLES[0]]
    for column, value in _numbers(main):
        if column in PERCENT_COLUMNS:
            assert 0.0 <= value <= 100.0, (column, value)
    ablation = result["tables"]["Modality ablation"]
    assert len(ablation["rows"]) == 7  # all, image-only, five leave-one-out
    data = result["tables"][RFNET_TABLES[2]]
    assert sum(row[1] for row in data["rows"]) == result["settings"]["data"]["decisive"]  # abstained: left out
    for row in data["rows"]:  # per split: images = sum over the classes
        assert row[1] == sum(row[2:])
    # every variant and seed really trained and was evaluated on the same held-out test products
    runs = list((out / "rfnet" / "variants").glob("*/seed*/result.json"))
    assert len(runs) == 7 * result["settings"]["seeds"]
    assert {json.loads(r.read_text())["test"]["n"] for r in runs} == {data["rows"][2][1]}
    assert {c["verdict"] for c in result["claims"]} <= {"reproduced", "not reproduced", "inconclusive"}


def test_rerun_reads_results_back(quick_run, capsys):
    driver, out, _ = quick_run
    before = {name: (out / f"{name}.json").read_bytes() for name in STUDIES if (out / f"{name}.json").is_file()}
    assert driver.main(["--quick", "--model", "tiny", "--rfnet", "tiny", "--out", str(out)]) == 0
    assert "read back" in capsys.readouterr().err
    assert before == {name: (out / f"{name}.json").read_bytes() for name in before}
    assert "read back from an earlier run" in (out / "synthad.md").read_text(encoding="utf-8")


def test_other_settings_are_refused_in_the_same_folder(quick_run, capsys):
    driver, out, _ = quick_run
    assert driver.main(["--quick", "--model", "tiny", "--rfnet", "tiny", "--seed", "1", "--out", str(out)]) == 2
    assert "seed" in capsys.readouterr().err


def test_usage_errors_exit_2():
    driver = load_driver()
    with pytest.raises(SystemExit) as e:
        driver.main(["--only", "rfnet,nonsense"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        driver.main(["--help"])
    assert e.value.code == 0


def test_check_result_names_the_problem():
    good = {"tables": {"t": table(["a", "b"], [["x", 0.5]])}, "figures": ["figures/a.png"], "seconds": 1.0,
            "settings": {}}
    assert check_result(good) == []
    bad_row = {**good, "tables": {"t": {"columns": ["a", "b"], "rows": [["x"]], "note": ""}}}
    assert "row 0 has 1 cells for 2 columns" in check_result(bad_row)[0]
    nan = {**good, "tables": {"t": {"columns": ["a"], "rows": [[float("nan")]], "note": ""}}}
    assert "use None" in check_result(nan)[0]
    assert "relative" in check_result({**good, "figures": ["/abs.png"]})[0]
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        table(["a", "b"], [[1]])


def test_cells_and_numbers():
    assert clean_number(float("nan")) is None and clean_number(float("inf")) is None
    assert clean_number(0.123456) == 0.1235 and clean_number(3) == 3
    cells = [format_cell(v) for v in (None, 3, 0.5, 12.345, 0.0, "a|b")]
    assert cells == ["–", "3", "0.500", "12.35", "0.00", "a\\|b"]
    assert markdown_table(table(["k", "v"], [["x", 1.5]])).splitlines() == ["| k | v |", "|---|---|", "| x | 1.50 |"]


def test_context_validates():
    with pytest.raises(ValueError, match="seed"):
        ExperimentContext(seed=-1)
    with pytest.raises(ValueError, match="steps"):
        ExperimentContext(steps=0)
    assert ExperimentContext(quick=True).num_inference_steps < ExperimentContext().num_inference_steps
    with pytest.raises(ValueError, match="judge_rfnet"):
        ExperimentContext(judge_rfnet="")
    # the judge is part of a results folder's identity; by default it is the training RFNet
    assert ExperimentContext().to_dict()["judge_rfnet"] == "synthad"
    assert ExperimentContext(judge_rfnet="runs/judge").to_dict()["judge_rfnet"] == "runs/judge"


def test_wall_colour_of_a_rendered_scene_is_the_prompted_one():
    from reliable_ad.synthad import WALL_COLORS, SceneAttributes, attribute_conflicts, render_scene

    checked = 0
    for k, item in enumerate(make_products(3, seed=3)):
        for i, wall in enumerate(WALL_COLORS):
            attrs = SceneAttributes(wall, "wooden", ("none", "low", "medium")[i % 3])
            if attribute_conflicts(item.product, attrs):
                continue
            scene = render_scene(item.product, attrs, None, seed=10 * k + i, size=64)
            assert wall_color_of_background(scene.image, scene.product_alpha) == wall, (item.caption, attrs)
            checked += 1
    assert checked >= 10


def test_bootstrap_pairs_models_over_products():
    import numpy as np

    from experiments.studies.rfnet_study import paired_bootstrap

    rng = np.random.default_rng(0)
    truth = {f"images/p{i:03d}_{k}.png": bool(rng.random() < 0.4) for i in range(40) for k in range(2)}
    perfect = {image: (t, 0.9 if t else 0.1) for image, t in truth.items()}
    noise = {image: (t, float(rng.random())) for image, t in truth.items()}
    boot = paired_bootstrap({"good": [perfect], "noise": [noise], "same": [dict(perfect)]},
                            {"noise": ("good", "noise"), "same": ("good", "same")}, seed=0, n=200)
    assert boot["models"]["good"]["lo"] == boot["models"]["good"]["hi"] == 1.0
    assert boot["differences"]["noise"]["above"] > 0.95 and boot["models"]["noise"]["hi"] < 1.0
    assert boot["differences"]["same"]["lo"] == boot["differences"]["same"]["hi"] == 0.0  # paired: no spread


def test_missing_and_failing_studies_are_reported(tmp_path, monkeypatch):
    import types

    driver = load_driver()

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(driver.importlib, "import_module", missing)
    entry = driver.run_one("rfft", ExperimentContext(model="tiny", rfnet="tiny", quick=True), tmp_path)
    assert entry["status"] == "not available" and "rfft_study" in entry["error"]

    def broken(ctx, out_dir):
        raise RuntimeError("out of coffee")

    monkeypatch.setattr(driver.importlib, "import_module", lambda name: types.SimpleNamespace(run_study=broken))
    out = tmp_path / "out"
    assert driver.main(["--quick", "--model", "tiny", "--rfnet", "tiny", "--only", "rfft", "--out", str(out)]) == 1
    assert "**failed**: RuntimeError: out of coffee" in (out / "synthad.md").read_text(encoding="utf-8")
    assert "out of coffee" in (out / "rfft.error.txt").read_text(encoding="utf-8")
    assert not (out / "rfft.json").exists()  # a failed study is not cached: the next run tries again


STANDIN_STUDY = '''
import os, time
from pathlib import Path
from experiments.studies.common import study_result, table

def run_study(ctx, out_dir):
    started = time.time()
    out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir.parent / "{name}.started").touch()
    saw_sibling = False
    if "{name}" in os.environ.get("STANDIN_WAIT_FOR", ""):  # parallel run: wait until the sibling has started
        sibling = out_dir.parent / (os.environ["STANDIN_WAIT_FOR"].replace("{name}", "") + ".started")
        for _ in range(300):
            saw_sibling = saw_sibling or sibling.is_file()
            if saw_sibling:
                break
            time.sleep(0.1)
    if "{name}" == "broken":
        raise RuntimeError("the stand-in broke")
    return {**study_result({"t": table(["study", "seed"], [["{name}", ctx.seed]])}, [], time.time() - started,
                           {"pid": os.getpid(), "saw_sibling": saw_sibling}), "claims": []}
'''


@pytest.fixture
def standin_studies(tmp_path, monkeypatch):
    """A package of three stand-in studies (alpha, beta, broken), importable here and in worker processes."""
    package = tmp_path / "lib" / "standin_studies"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('STUDIES = ("alpha", "beta", "broken")\n')
    for name in ("alpha", "beta", "broken"):
        (package / f"{name}_study.py").write_text(STANDIN_STUDY.replace("{name}", name))
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "lib"), str(ROOT)]))
    return ["--quick", "--model", "tiny", "--rfnet", "tiny", "--studies", "standin_studies"]


def test_jobs_run_studies_in_parallel_processes_with_the_serial_results(standin_studies, tmp_path, monkeypatch):
    driver = load_driver()
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert driver.main([*standin_studies, "--out", str(serial), "--jobs", "1"]) == 1  # "broken" failed
    monkeypatch.setenv("STANDIN_WAIT_FOR", "alphabeta")  # alpha waits for beta and beta for alpha
    assert driver.main([*standin_studies, "--out", str(parallel), "--jobs", "2"]) == 1
    for name in ("alpha", "beta"):
        one, two = (json.loads((out / f"{name}.json").read_text())["result"] for out in (serial, parallel))
        assert one["tables"] == two["tables"]
        assert one["settings"]["pid"] == os.getpid() != two["settings"]["pid"]  # parallel: in its own process
        assert two["settings"]["saw_sibling"]  # both were running at once
    summary = json.loads((parallel / "summary.json").read_text())
    assert summary["header"]["jobs"] == 2 and summary["studies"]["alpha"]["wall_seconds"] > 0
    page = (parallel / "synthad.md").read_text()
    assert "| broken | – | – | – | – | **failed**: RuntimeError: the stand-in broke |" in page
    assert "with 2 studies at a time" in page
    assert "the stand-in broke" in (parallel / "broken.error.txt").read_text()
    # a rerun reads the finished studies back and retries the failed one alone
    monkeypatch.delenv("STANDIN_WAIT_FOR")
    assert driver.main([*standin_studies, "--out", str(parallel), "--jobs", "2"]) == 1
    summary = json.loads((parallel / "summary.json").read_text())
    assert [summary["studies"][n]["cached"] for n in ("alpha", "beta", "broken")] == [True, True, False]


def test_jobs_and_studies_are_validated(standin_studies):
    driver = load_driver()
    for argv in (["--jobs", "0"], ["--studies", "no_such_package"], [*standin_studies, "--only", "rfnet"]):
        with pytest.raises(SystemExit) as e:
            driver.parse_args(argv)
        assert e.value.code == 2


@pytest.mark.slow
def test_two_quick_studies_in_parallel_match_the_serial_run(quick_run, tmp_path):
    """The real quick studies, two worker processes at once, against the serial quick run (slow: minutes)."""
    driver, out, _ = quick_run
    parallel = tmp_path / "parallel"
    assert driver.main(["--quick", "--model", "tiny", "--rfnet", "tiny", "--out", str(parallel), "--jobs", "2",
                        "--only", "recurrent,rfft"]) == 0
    timing = re.compile(r"second|\bs\b|time", re.IGNORECASE)
    for name in ("recurrent", "rfft"):
        one, two = (json.loads((o / f"{name}.json").read_text())["result"] for o in (out, parallel))
        assert one["tables"].keys() == two["tables"].keys()
        for title, tab in one["tables"].items():
            keep = [i for i, c in enumerate(tab["columns"]) if not timing.search(c)]
            assert [[r[i] for i in keep] for r in tab["rows"]] == \
                   [[r[i] for i in keep] for r in two["tables"][title]["rows"]], (name, title)
