"""What a user installs: the wheel holds the package and its shipped SynthAd weights, never the
repository's experiments/ (weight factories and studies) nor the test helpers; and `reliable_ad.synthad`
leans on `reliable_ad.core` and `reliable_ad.data` only (docs/architecture.md, Layers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_IN_WHEEL = ("experiments", "testing.py", "loadsim.py")  # folder or file names, at any depth
SYNTHAD_MAY_IMPORT = ("reliable_ad.core", "reliable_ad.data", "reliable_ad.synthad")


def _allowed(module: str) -> bool:
    return module == "reliable_ad" or any(module == p or module.startswith(p + ".") for p in SYNTHAD_MAY_IMPORT)


def test_wheel_ships_the_package_and_its_weights_but_not_the_experiments(tmp_path):
    # build from a copy of what setuptools reads, so the build leaves nothing in the working tree
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (source / "experiments").mkdir()  # a decoy beside src/: must not be picked up either
    (source / "experiments" / "__init__.py").write_text("")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "-q", "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("reliable_ad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    parts = {part for name in names for part in name.split("/")}
    assert not parts & set(NOT_IN_WHEEL), sorted(n for n in names if set(n.split("/")) & set(NOT_IN_WHEEL))
    tops = {name.split("/")[0] for name in names}
    assert all(top == "reliable_ad" or top.endswith(".dist-info") for top in tops), tops
    # what the wheel must keep: the world, the oracle labelling, the estimators' inference side, the weights
    for required in ("reliable_ad/synthad/oracle.py", "reliable_ad/synthad/generated.py",
                     "reliable_ad/modalities/synthad_estimators.py", "reliable_ad/data/maps.py",
                     "reliable_ad/cli/synthad.py", "reliable_ad/synthad/weights/rfnet/config.json",
                     "reliable_ad/synthad/weights/generator/base/model_index.json"):
        assert required in names, required


def test_synthad_imports_nothing_above_core_and_data():
    code = """
import importlib, json, pkgutil, sys
import reliable_ad.synthad as synthad
for module in pkgutil.walk_packages(synthad.__path__, "reliable_ad.synthad."):
    importlib.import_module(module.name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("reliable_ad"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "reliable_ad.synthad.generated" in loaded and "reliable_ad.synthad.oracle" in loaded
    above = [m for m in loaded if not _allowed(m)]
    assert not above, f"reliable_ad.synthad pulled in {above}; it may import only {SYNTHAD_MAY_IMPORT}"


def test_synthad_has_no_deferred_import_above_core_and_data():
    """The same rule for imports inside functions, which importing the package does not run."""
    import ast

    wrong = []
    for path in sorted((ROOT / "src" / "reliable_ad" / "synthad").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            wrong += [f"{path.name}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] == "reliable_ad" and not _allowed(name)]
    assert not wrong, wrong
