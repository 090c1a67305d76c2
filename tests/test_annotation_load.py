"""Load: 20 simulated annotators on loopback label a batch with k = 2 through a real server process;
afterwards every item has exactly 2 labels from 2 different annotators, none open, none lost or
duplicated. The default runs use 200 items; the issue's full size (2,000 items) is marked slow
(`pytest -m slow`; about a minute per backend on 2 cores) and its p95 latency is recorded in
docs/benchmarks.md by `python benchmarks/annotation_load.py --record docs/benchmarks.md`.
PostgreSQL runs need RELIABLE_AD_TEST_POSTGRES_URL (scripts/ci_services.sh sets it)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")


def _loadsim():
    """benchmarks/annotation_loadsim.py, the benchmark's own simulation (not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "annotation_loadsim.py"
    spec = importlib.util.spec_from_file_location("annotation_loadsim", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


load_test = _loadsim().load_test

ANNOTATORS, K = 20, 2


def _backend(name: str) -> str | None:
    if name == "sqlite":
        return None
    url = os.environ.get("RELIABLE_AD_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set RELIABLE_AD_TEST_POSTGRES_URL to run the PostgreSQL load test (scripts/ci_services.sh does)")
    try:
        from sqlalchemy import create_engine, text

        from reliable_ad.annotation.db import normalize_url

        engine = create_engine(normalize_url(url))
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - no server: skip, as promised
        pytest.skip(f"PostgreSQL at RELIABLE_AD_TEST_POSTGRES_URL is not reachable: {e}")
    return url


def _check(result: dict, items: int) -> None:
    print(f"\n{result['backend']}: {result['annotators']} annotators, {items} items x k={K}: "
          f"{result['requests']} requests in {result['seconds']} s, p50 {result['p50_ms']} ms, "
          f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms")
    assert result["problems"] == [], result["problems"]
    assert result["errors"] == 0, result["client_errors"]
    # none lost: the server holds exactly the labels the clients were told were saved
    assert result["labels_in_db"] == result["labels"] == items * K


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_twenty_annotators_label_every_item_exactly_k_times(backend):
    items = 200
    _check(load_test(_backend(backend), ANNOTATORS, items, K), items)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_full_size_load_2000_items(backend):
    items = 2000
    _check(load_test(_backend(backend), ANNOTATORS, items, K), items)
