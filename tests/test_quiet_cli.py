"""The main command as a user types it on a fresh clone (README: `bash scripts/run.sh run --model synthad ...`):
no third-party warnings or per-component loading bars unless -v, one bar per phase, and last lines that
say where the report is. Plus the pieces behind it (cli/console.py): warnings routed by the module that
issued them, and the libraries set up only when a command imports them."""

from __future__ import annotations

import csv
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from reliable_ad.cli import console

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "synthad-products"
LIB_CHATTER = ("Loading pipeline components", "Loading weights", "torch_dtype", "kept in float32", "[transformers]")


def _products(folder: Path, n: int) -> Path:
    """The first ``n`` example products, as a products file with relative image names."""
    folder.mkdir(parents=True)
    with open(EXAMPLES / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    for row in rows:
        shutil.copy(EXAMPLES / row["image"], folder / row["image"])
    with open(folder / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "products.csv"


def _lines(text: str) -> list[str]:
    """Output as a terminal log keeps it: progress-bar redraws (\\r) are lines too."""
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The README's main command (2 products, K=1 and 4 steps to stay fast) and the same with -v (1 product), run
    side by side from a folder outside the repository, with relative paths, through scripts/run.sh."""
    cwd = tmp_path_factory.mktemp("user")
    _products(cwd / "products", 2)
    _products(cwd / "one", 1)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")}
    env["OMP_NUM_THREADS"] = "1"  # two runs side by side on a 2-core runner: one core each, no spin-waiting
    common = ["--model", "synthad", "--max-attempts", "1", "--steps", "4"]
    commands = {
        "quiet": ["run", "products/products.csv", "--out", "runs/demo", *common],
        "verbose": ["-v", "run", "one/products.csv", "--out", "runs/verbose", *common],
    }
    procs = {name: subprocess.Popen(["bash", str(ROOT / "scripts" / "run.sh"), *args], cwd=cwd, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, args in commands.items()}
    try:
        out = {name: p.communicate(timeout=300)[0] for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill() if p.poll() is None else None
    for name, p in procs.items():
        assert p.returncode == 0, out[name][-3000:]
    return cwd, out


def test_main_command_prints_no_third_party_warnings_or_loading_bars(runs):
    cwd, out = runs
    lines = _lines(out["quiet"])
    warns = [line for line in lines if re.search("warn", line, re.I)]
    # our own warnings (logger reliable_ad.*) may show; nothing from a library
    assert all(line.startswith("WARNING reliable_ad.") for line in warns), warns
    for chatter in LIB_CHATTER:
        assert not any(chatter in line for line in lines), (chatter, lines[:20])
    # one bar per phase, in order
    firsts = [next(i for i, line in enumerate(lines) if line.startswith(desc))
              for desc in ("loading models", "generate & inspect", "report")]
    assert firsts == sorted(firsts), lines


def test_main_command_ends_with_the_counts_and_the_report(runs):
    cwd, out = runs
    lines = _lines(out["quiet"])
    report = Path("runs") / "demo" / "report.html"
    assert lines[-1] == f"report: {report}"
    assert (cwd / report).stat().st_size > 1000  # relative to where the user ran it
    counts = next(line for line in lines[-3:] if "products available within 1 attempts" in line)
    assert re.match(r"\d/2 products available within 1 attempts \(first attempt: \d+%\), \d none available, "
                    r"0 failed; 2 attempts$", counts), counts
    assert any(line.startswith("images: runs/demo/") for line in lines[-3:-1]), lines[-3:]


def test_verbose_brings_the_libraries_output_back(runs):
    _, out = runs
    lines = _lines(out["verbose"])
    assert any("Loading pipeline components" in line for line in lines), lines[:30]
    assert lines[-1] == f"report: {Path('runs') / 'verbose' / 'report.html'}"


def test_a_command_without_models_does_not_import_them():
    # the libraries are set up when a command imports them, so `--help` and friends stay fast
    code = ("import sys; from reliable_ad.cli.main import main; rc = main([]); "
            "print(rc, 'diffusers' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr[-2000:]


def _emit(module_name: str, message: str) -> None:
    """``warnings.warn`` called from code of module ``module_name`` (stacklevel pointing at its caller)."""
    namespace = {"__name__": module_name, "warnings": warnings}
    exec("def emit(m):\n    warnings.warn(m, FutureWarning, stacklevel=2)", namespace)
    namespace["emit"](message)


def test_warnings_go_to_the_logger_of_the_module_that_issued_them(caplog):
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        warnings.showwarning = console._show_warning
        _emit("somelib.loading", "torch_dtype is deprecated")
        _emit("reliable_ad.cli.fake", "--lr is deprecated, use --learning-rate")
    by_name = {r.name: r for r in caplog.records if r.name in ("somelib.loading", "reliable_ad.cli.fake")}
    assert by_name["somelib.loading"].getMessage() == "FutureWarning: torch_dtype is deprecated"
    quiet = console.ThirdPartyFilter()
    assert not quiet.filter(by_name["somelib.loading"])  # a library's: only with -v
    assert quiet.filter(by_name["reliable_ad.cli.fake"])  # ours: always
    error = logging.LogRecord("somelib", logging.ERROR, __file__, 1, "boom", None, None)
    assert quiet.filter(error)  # a library's error still shows


def test_after_import_hook_runs_once_when_the_module_is_imported(tmp_path, monkeypatch):
    (tmp_path / "quiet_probe_mod.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    hook = console._AfterImport({"quiet_probe_mod": lambda m: seen.append(m.VALUE + 1)})
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    assert importlib.import_module("quiet_probe_mod").VALUE == 41
    assert seen == [42]
    monkeypatch.delitem(sys.modules, "quiet_probe_mod")
    importlib.import_module("quiet_probe_mod")  # a second import is not hooked again
    assert seen == [42]
