"""The project stands on its own: docs/method.md and docs/architecture.md exist, every section a code
comment cites exists, and no source file cites documents users do not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("src", "experiments", "benchmarks", "scripts") for p in (ROOT / d).rglob("*")
           if p.suffix in (".py", ".sh", ".js", ".html") and "weights" not in p.parts]


def test_method_and_architecture_docs_exist_and_cover_the_method():
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    arch = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for n, title in enumerate(("The job", "Generation", "RFNet", "Recurrent Generation", "RFFT", "Human"), 1):
        assert re.search(rf"^## {n}\. {title}", method, re.M), f"docs/method.md lacks section {n} ({title})"
    for package in ("core", "data", "training", "generation", "modalities", "rfnet", "recurrent", "rfft",
                    "annotation", "synthad", "cli", "experiments"):
        assert f"{package}/" in arch or f"`{package}`" in arch, f"docs/architecture.md does not place {package}"


def test_sources_cite_the_repository_docs_only():
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\.", method, re.M))
    for path in SOURCES:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"\bSPEC\b|shared/SPEC|seed/supplemental", text), f"{path} cites a document users lack"
        for cited in re.findall(r"docs/method\.md §(\d+)", text):
            assert cited in sections, f"{path} cites docs/method.md §{cited}, which does not exist"
