"""The architecture's contracts (pyproject.toml, docs/architecture.md) hold, and the checker really
catches a wrong-way import: the same lint-imports on a copy of the package with one bad import fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    if not LINT.is_file():
        pytest.skip("import-linter is not installed (it is in the dev extra)")
    root = tmp_path_factory.mktemp("arch")
    shutil.copy(ROOT / "pyproject.toml", root)
    shutil.copytree(ROOT / "src" / "reliable_ad", root / "src" / "reliable_ad",
                    ignore=shutil.ignore_patterns("weights", "__pycache__", "static", "templates"))
    return root


def test_the_contracts_hold(copy):
    r = _lint(copy)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("data/records.py", "import reliable_ad.rfnet.judge", "Layers"),  # data reaching up to rfnet
    ("synthad/world.py", "import reliable_ad.generation.prompts", "synthad"),  # the toy world above data
    ("rfnet/io.py", "import reliable_ad.rfnet.model", "cycles"),  # io must stay below the model
])
def test_a_wrong_way_import_breaks_a_contract(copy, tmp_path, module, line, broken):
    bad = tmp_path / "bad"
    shutil.copytree(copy, bad)
    path = bad / "src" / "reliable_ad" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    r = _lint(bad)
    assert r.returncode != 0 and broken in r.stdout.split("Broken contracts")[-1], r.stdout[-2000:]
