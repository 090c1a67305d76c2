"""Fuzzing the importer (hypothesis): random manifests and label files either import or are refused
with a clear error (ImportRejected / ValueError / FileNotFoundError naming the problem), never a
traceback from deeper down, and a refused import leaves the database as it was."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from annotation_helpers import make_run  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.importer import ImportRejected, import_availability  # noqa: E402
from reliable_ad.data.records import ManifestRecord  # noqa: E402

CLEAR = (ImportRejected, ValueError, FileNotFoundError)
FIELDS = ["image", "product", "product_hash", "product_id", "caption", "attempt", "seed", "verdict", "label",
          "error", "schema_version", "preset", "prompt", "slots", "accepted"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
paths = st.sampled_from(["images/prod_0-00000000_000.png", "products/prod_0.png", "../x.png", "/etc/passwd",
                         "images/../../x.png", "images/a\tb.png", "", "images/missing.png"])
verdicts = st.fixed_dictionaries({}, optional={
    "label": st.sampled_from(["Available", "Size Mismatch", "nope", 0, 7]) | json_values,
    "label_index": st.integers(-3, 9) | json_values,
    "probs": st.lists(st.floats(0, 1), max_size=20) | st.dictionaries(st.text(max_size=12), st.floats(), max_size=6),
    "p_available": st.floats() | json_values,
})
records = st.dictionaries(st.sampled_from(FIELDS), json_values | paths | verdicts, max_size=8)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("fuzz") / "run", n_products=1, per_product=1, verdicts=True)


def _count(db: Database) -> int:
    from sqlalchemy import func, select

    from reliable_ad.annotation.models import Task

    with db.read() as s:
        return s.scalar(select(func.count()).select_from(Task)) or 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(records | json_values, min_size=1, max_size=4), skip=st.booleans())
def test_random_manifests_import_or_are_refused_clearly(base, lines, skip):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(base, run)
        good = (base / "manifest.jsonl").read_text()
        (run / "manifest.jsonl").write_text(good + "".join(json.dumps(r, default=str) + "\n" for r in lines))
        db = Database(Path(tmp) / "a.db")
        try:
            import_availability(db, run, skip_problems=skip)
        except CLEAR as e:
            assert str(e) and _count(db) == 0
        finally:
            db.dispose()


label_lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(lambda p, sep, lab: f"{p}{sep}{lab}", paths | st.text(max_size=12), st.sampled_from(["\t", ",", " "]),
                  st.sampled_from(["Available", "0", "5", "9", "Size Mismatch", "-1", ""])),
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=label_lines, skip=st.booleans())
def test_random_label_files_import_or_are_refused_clearly(base, lines, skip):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rf1m"
        shutil.copytree(base / "images", root / "images")
        shutil.copytree(base / "products", root / "products")
        text = "\n".join(lines)
        (root / "labels.txt").write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text \
            else (root / "labels.txt").write_bytes(text.encode("utf-8", "replace"))
        db = Database(Path(tmp) / "a.db")
        try:
            import_availability(db, root, skip_problems=skip)
        except CLEAR as e:
            assert str(e) and _count(db) == 0
        finally:
            db.dispose()


def test_manifest_record_round_trips_what_the_fuzzer_accepts():
    """Whatever ManifestRecord accepts, it writes back unchanged (no field lost or retyped)."""

    @settings(max_examples=200, deadline=None)
    @given(records)
    def check(obj):
        try:
            rec = ManifestRecord.from_json(obj)
        except ValueError:
            return
        again = ManifestRecord.from_json(json.loads(rec.to_line()))
        assert again == rec

    check()
