"""Helpers of the annotation app's tests, also used by scripts/screenshots.py and
benchmarks/annotation_loadsim.py (both put this folder on sys.path); not part of the package.

:func:`make_run`: a synthetic generation run, small real PNG files and a manifest in the format
`reliable-ad generate` writes (with an `inspect` verdict on request). :class:`ServerThread`: the app
on a loopback port. :class:`Annotator`: a logged-in API user. :func:`check_batch`: the queue's
promises for a finished batch, checked in the database.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw
from sqlalchemy import func, select

from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Task
from reliable_ad.data.records import ManifestRecord


def _png(size: int, color: tuple[int, int, int], seed: int, *, product: bool = False) -> bytes:
    rng = random.Random(seed)
    mode = "RGBA" if product else "RGB"
    background = (0, 0, 0, 0) if product else tuple(rng.randrange(150, 256) for _ in range(3))
    im = Image.new(mode, (size, size), background)
    draw = ImageDraw.Draw(im)
    if not product:  # a floor and a wall, so images differ
        draw.rectangle([0, int(size * 0.65), size, size], fill=tuple(rng.randrange(60, 200) for _ in range(3)))
    w = size // 4
    draw.rounded_rectangle([size // 2 - w // 2, size // 4, size // 2 + w // 2, int(size * 0.8)], radius=max(2, w // 4),
                           fill=color + ((255,) if product else ()))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def make_run(folder: str | Path, n_products: int = 3, per_product: int = 2, *, seed: int = 0, size: int = 64,
             verdicts: bool = False, failed: int = 0, captions: list[str] | None = None,
             products_dir: str | Path | None = None) -> Path:
    """A run folder with ``n_products * per_product`` images, their products and manifest.jsonl.

    Images of product p, attempt a carry seed ``1000 * p + a`` whatever the run's ``seed``, like
    runs of different methods made with the same seeds; ``seed`` changes the pixels only.
    ``verdicts`` adds RFNet verdicts (random, fixed by ``seed``); ``failed`` adds failed-generation
    records. Products are drawn into ``products_dir`` (shared between runs) when given, and each run
    keeps its own copy in ``<folder>/products`` as `generate` and `run` do; records are written through
    the runs' own record class (schema 2: paths relative to the run folder).
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    products = Path(products_dir) if products_dir else folder / "products"
    products.mkdir(parents=True, exist_ok=True)
    (folder / "products").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for p in range(n_products):
        color = (40 + 60 * (p % 4), 90 + 37 * (p % 5), 200 - 30 * (p % 6))
        product = products / f"prod_{p}.png"
        if not product.exists():
            product.write_bytes(_png(size, color, p, product=True))
        own = folder / "products" / product.name
        if not own.exists():
            own.write_bytes(product.read_bytes())
        caption = captions[p % len(captions)] if captions else f"a bottle of colour {p}"
        for a in range(per_product):
            name = f"images/prod_{p}-{p:08x}_{a:03d}.png"
            (folder / name).write_bytes(_png(size, color, seed * 7919 + p * 31 + a))
            record = {
                "image": name, "product": f"products/{product.name}", "product_source": str(product.resolve()),
                "product_hash": f"{p:08x}" * 8,
                "product_id": f"prod_{p}-{p:08x}", "caption": caption, "preset": "test",
                "prompt": "An item sitting on a wooden table", "seed": 1000 * p + a, "attempt": a, "error": None,
            }
            if verdicts:
                raw = [rng.random() ** 3 for _ in range(5)]
                probs = [x / sum(raw) for x in raw]
                top = max(range(5), key=probs.__getitem__)
                record["verdict"] = {"label": LABELS[top], "label_index": top, "p_available": probs[0],
                                     "probs": dict(zip(LABELS, probs))}
            records.append(ManifestRecord.from_json(record))
    for i in range(failed):
        records.append(ManifestRecord(product_source=f"missing_{i}.png", error="product image has no foreground"))
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_line())
    return folder


class ServerThread:
    """The app served by uvicorn in a background thread on a free loopback port (tests, demos)::

        with ServerThread(app) as base_url: ...
    """

    def __init__(self, app, host: str = "127.0.0.1"):
        import socket

        import uvicorn

        with socket.socket() as probe:
            probe.bind((host, 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self._thread = None

    def __enter__(self) -> str:
        import threading
        import time

        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the test server did not start on port {self.port}")
            time.sleep(0.02)
        return self.base_url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


class Annotator:
    """A logged-in API user over any httpx-style client (FastAPI's TestClient or httpx.Client)."""

    def __init__(self, client, username: str, password: str):
        self.client, self.username = client, username
        token = client.get("/api/login-token").json()["token"]
        response = client.post("/api/login", json={"username": username, "password": password},
                               headers={"X-CSRF-Token": token})
        if response.status_code != 200:
            raise RuntimeError(f"login of {username} failed: {response.status_code} {response.text}")
        self.csrf = response.json()["csrf"]

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, body: dict | None = None, **kw):
        headers = {"X-CSRF-Token": self.csrf, **kw.pop("headers", {})}
        return self.client.post(url, json={} if body is None else body, headers=headers, **kw)

    def next(self, batch_id: int, count: int = 1) -> list[dict]:
        response = self.post(f"/api/batches/{batch_id}/next", {"count": count})
        assert response.status_code == 200, response.text
        return response.json()["tasks"]

    def label(self, assignment: int, label: int):
        return self.post(f"/api/assignments/{assignment}/label", {"label": label})



def check_batch(db: Database, batch_id: int, k: int) -> dict:
    """The queue's promises for a finished batch; ``problems`` is empty when all hold: every item has
    exactly k labels, from k different annotators, none open, none still needed."""
    with db.read() as s:
        n_tasks = s.scalar(select(func.count()).select_from(Task).where(Task.batch_id == batch_id))
        per_task = dict(s.execute(
            select(Assignment.task_id, func.count()).where(Assignment.batch_id == batch_id,
                                                           Assignment.state == "answered")
            .group_by(Assignment.task_id)).all())
        distinct_users = dict(s.execute(
            select(Assignment.task_id, func.count(func.distinct(Assignment.user_id)))
            .where(Assignment.batch_id == batch_id, Assignment.state == "answered")
            .group_by(Assignment.task_id)).all())
        states = dict(s.execute(select(Assignment.state, func.count()).where(Assignment.batch_id == batch_id)
                                .group_by(Assignment.state)).all())
        still_needed = s.scalar(select(func.coalesce(func.sum(Task.needed), 0)).where(Task.batch_id == batch_id))
    problems = []
    wrong = {t: c for t, c in per_task.items() if c != k}
    if wrong:
        problems.append(f"{len(wrong)} items have a label count other than {k}: {dict(list(wrong.items())[:5])}")
    missing = n_tasks - len(per_task)
    if missing:
        problems.append(f"{missing} items have no label")
    if any(c != k for c in distinct_users.values()):
        problems.append("an item was labelled twice by one annotator")
    if states.get("open"):
        problems.append(f"{states['open']} assignments are still open")
    if still_needed:
        problems.append(f"tasks still need {still_needed} labels")
    return {"tasks": n_tasks, "labels": sum(per_task.values()), "states": states, "problems": problems}


def postgres_db():
    """(Database in a fresh schema of the server RELIABLE_AD_TEST_POSTGRES_URL names, drop()): the
    PostgreSQL side of the tests' `any_db` fixtures; skips the test when no server is at hand."""
    import os
    import uuid

    import pytest
    from sqlalchemy import create_engine, text

    from reliable_ad.annotation.db import Database, normalize_url, with_schema

    base = os.environ.get("RELIABLE_AD_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("set RELIABLE_AD_TEST_POSTGRES_URL to run the PostgreSQL tests (scripts/ci_services.sh does)")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(normalize_url(base))
        with admin.begin() as c:
            c.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as e:  # noqa: BLE001 - no server: skip, as promised
        pytest.skip(f"PostgreSQL at RELIABLE_AD_TEST_POSTGRES_URL is not reachable: {e}")

    def drop():
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return Database(with_schema(base, schema)), drop


def app_routes(app):
    """(method, path, route) of every route of the app, through included routers too; the static
    folder and the OpenAPI document as GET routes with a free path (route None)."""
    from fastapi.routing import APIRoute
    from starlette.routing import Mount, Route

    def walk(routes, prefix):
        for route in routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods - {"HEAD"}):
                    yield method, prefix + route.path, route
            elif hasattr(route, "original_router"):  # an included router (newer FastAPI)
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, Mount):  # the static files
                yield "GET", prefix + route.path + "/{path}", None
            elif isinstance(route, Route):
                for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                    yield method, prefix + route.path, None
            else:
                raise AssertionError(f"a route of a kind this test does not know: {route!r}; teach app_routes it")

    yield from walk(app.routes, "")
