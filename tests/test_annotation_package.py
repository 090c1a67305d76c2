"""The annotation package as shipped: no test or benchmark helpers in it (they live in
tests/annotation_helpers.py and benchmarks/annotation_loadsim.py), nothing imported from the
command line above it, and every page rendered from the one layout."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

import reliable_ad.annotation as annotation  # noqa: E402

PACKAGE = Path(annotation.__file__).resolve().parent
PAGES = sorted(p.stem for p in (PACKAGE / "templates").glob("*.html") if p.name != "base.html")

# imports the app and every submodule of the annotation package, opens a database (which runs the
# migrations: env.py and the versions, not importable on their own) and renders every page; then
# lists what of reliable_ad.cli got imported
_IMPORT_ALL = """
import importlib, json, pkgutil, sys, tempfile
import reliable_ad.annotation as annotation
from reliable_ad.annotation.app import create_app
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.routes import page_html

names = [m.name for m in pkgutil.walk_packages(annotation.__path__, "reliable_ad.annotation.")]
for name in names:
    if name != "reliable_ad.annotation.migrations.env":
        importlib.import_module(name)
with tempfile.TemporaryDirectory() as tmp:
    db = Database(tmp + "/annotation.db")
    create_app(AnnotationConfig(db=db.url), db)
    db.dispose()
for page in sys.argv[1:]:
    page_html(page)
cli = sorted(m for m in sys.modules if m == "reliable_ad.cli" or m.startswith("reliable_ad.cli."))
print(json.dumps({"modules": names, "cli": cli}))
"""


def test_the_package_holds_no_test_or_benchmark_helpers():
    assert (PACKAGE / "app.py").is_file(), PACKAGE
    shipped = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}
    assert not shipped & {"testing.py", "loadsim.py"}, shipped
    root = Path(__file__).resolve().parents[1]
    assert (root / "tests" / "annotation_helpers.py").is_file()
    assert (root / "benchmarks" / "annotation_loadsim.py").is_file()


def test_annotation_imports_nothing_from_the_command_line():
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *PAGES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "reliable_ad.annotation.app" in found["modules"] and "reliable_ad.annotation.queue" in found["modules"]
    assert found["cli"] == [], f"the annotation package imports the command line: {found['cli']}"
    # nor on use: no import of it anywhere in the source, in a function or not
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "reliable_ad.cli" or n.startswith("reliable_ad.cli.") for n in names), \
                f"{path.relative_to(PACKAGE)}:{node.lineno} imports {names}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_the_layout_with_its_blocks_filled_in(page):
    from reliable_ad.annotation.routes import render_page

    html = render_page(page)
    assert html.startswith("<!doctype html>\n") and html.rstrip().endswith("</html>")
    assert "{%" not in html and "%}" not in html
    assert html.count("<title>") == 1 and re.search(r"<title>\S.* · reliable-ad annotation</title>", html)
    assert html.count('<link rel="stylesheet" href="/static/app.css">') == 1
    scripts = re.findall(r'<script src="/static/(\w+)\.js"></script>', html)
    # common.js first, then the page's own script; the admins-only page has none
    assert scripts == ([] if page == "forbidden" else ["common", page]), scripts
    if page not in ("login", "invite", "forbidden"):
        assert html.count('<header class="bar">') == 1 and 'id="logout"' in html and 'id="who"' in html


def test_a_page_block_the_layout_lacks_is_an_error(tmp_path, monkeypatch):
    from reliable_ad.annotation import routes

    (tmp_path / "base.html").write_text((PACKAGE / "templates" / "base.html").read_text(encoding="utf-8"))
    (tmp_path / "typo.html").write_text('{% extends "base.html" %}\n{% block titel %}x{% endblock %}\n')
    (tmp_path / "stray.html").write_text('{% extends "base.html" %}\nstray text\n{% block title %}x{% endblock %}\n')
    monkeypatch.setattr(routes, "TEMPLATES", tmp_path)
    with pytest.raises(ValueError, match="titel"):
        routes.render_page("typo")
    with pytest.raises(ValueError, match="outside its blocks"):
        routes.render_page("stray")
