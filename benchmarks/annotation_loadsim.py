"""Simulated annotators against a running server, for the load test and benchmark.

Each simulated annotator does what the availability page does: log in, claim its item plus the
preloaded ones, fetch the shown image, answer with a key (the answer brings the next items back).
Every request's latency is recorded; afterwards ``check_batch`` (tests/annotation_helpers.py)
verifies the queue's promises in the database: every item has exactly k labels, from k different
annotators, none open, none lost (the server holds exactly the labels the clients were told were
saved). Used by benchmarks/annotation_load.py and tests/test_annotation_load.py; not part of the
package.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from reliable_ad.annotation.db import Database, normalize_url, with_schema

# the synthetic runs and the database checks are the tests' own (tests/annotation_helpers.py)
TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))
from annotation_helpers import check_batch, make_run  # noqa: E402


@dataclass
class LoadReport:
    annotators: int
    labels: int = 0  # labels the server confirmed
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> seconds

    def percentile(self, q: float, endpoint: str | None = None) -> float:
        """Latency percentile of one endpoint, or of all work requests (logins, once a day, apart)."""
        values = sorted(v for k, vs in self.latencies.items()
                        if (k == endpoint if endpoint else k != "login") for v in vs)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]  # nearest rank

    def summary(self) -> dict:
        out = {"annotators": self.annotators, "labels": self.labels, "requests": self.requests,
               "errors": len(self.errors), "seconds": round(self.seconds, 2),
               "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
               "p50_ms": round(1000 * self.percentile(50), 2), "p95_ms": round(1000 * self.percentile(95), 2),
               "p99_ms": round(1000 * self.percentile(99), 2)}
        out["p95_ms_by_endpoint"] = {k: round(1000 * self.percentile(95, k), 2) for k in sorted(self.latencies)}
        out["work_requests"] = sum(len(v) for k, v in self.latencies.items() if k != "login")
        return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`reliable-ad annotate serve` (as ``python -m reliable_ad.cli.main annotate serve``) in a child
    process: its own interpreter, so the clients' work does not slow the server down through one GIL::

        with ServerProcess(db_url) as base_url: ...
    """

    def __init__(self, db: str, *, port: int | None = None, extra: list[str] | None = None):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "reliable_ad.cli.main", "annotate", "serve", "--db", db,
                        "--port", str(self.port), *(extra or [])]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        import httpx

        # output to a file: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): {self.output()[-2000:]}")
            try:
                if httpx.get(self.base_url + "/login", timeout=1).status_code == 200:
                    return self.base_url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"server did not answer on {self.base_url} within 60 s")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _annotator(base_url: str, username: str, password: str, batch_id: int, report: LoadReport,
                     rng: random.Random, *, prefetch: int = 2, fetch_images: bool = True) -> int:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        async def call(kind: str, method: str, url: str, **kw):
            t0 = time.perf_counter()
            response = await client.request(method, url, **kw)
            report.latencies.setdefault(kind, []).append(time.perf_counter() - t0)
            report.requests += 1
            if response.status_code >= 400:
                report.errors.append(f"{username} {method} {url}: {response.status_code} {response.text[:200]}")
            return response

        token = (await call("login", "GET", "/api/login-token")).json()["token"]
        me = (await call("login", "POST", "/api/login", json={"username": username, "password": password},
                         headers={"X-CSRF-Token": token})).json()
        headers = {"X-CSRF-Token": me["csrf"]}
        queue: list[dict] = []
        answered: set[int] = set()
        labelled = 0

        def merge(tasks: list[dict]) -> None:
            known = {t["assignment"] for t in queue} | answered
            queue.extend(t for t in tasks if t["assignment"] not in known)

        merge((await call("next", "POST", f"/api/batches/{batch_id}/next", json={"count": 1 + prefetch},
                          headers=headers)).json()["tasks"])
        while queue:
            task = queue.pop(0)
            if fetch_images:
                await call("image", "GET", task["image_url"])
            # annotators agree with a hidden truth 80% of the time
            truth = task["task"] * 2654435761 % 7 % 6
            label = truth if rng.random() < 0.8 else rng.randrange(6)
            response = await call("label", "POST", f"/api/assignments/{task['assignment']}/label",
                                  json={"label": label, "duration_ms": rng.randrange(800, 4000), "next": 1 + prefetch},
                                  headers=headers)
            answered.add(task["assignment"])
            if response.status_code == 200:
                labelled += 1
                merge(response.json()["tasks"])
        return labelled


def run_load(base_url: str, users: list[tuple[str, str]], batch_id: int, *, seed: int = 0, prefetch: int = 2,
             fetch_images: bool = True) -> LoadReport:
    """All ``users`` label the batch concurrently until the server has nothing left for any of them."""
    report = LoadReport(len(users))

    async def main():
        jobs = [_annotator(base_url, u, p, batch_id, report, random.Random(seed * 1000 + i), prefetch=prefetch,
                           fetch_images=fetch_images) for i, (u, p) in enumerate(users)]
        return await asyncio.gather(*jobs)

    t0 = time.perf_counter()
    counts = asyncio.run(main())
    report.seconds = time.perf_counter() - t0
    report.labels = sum(counts)
    return report


def prepare_users(db: Database, n: int, prefix: str = "annotator") -> list[tuple[str, str]]:
    """``n`` annotator accounts (created if missing) and their passwords."""
    from reliable_ad.annotation import security
    from reliable_ad.annotation.models import User

    users = [(f"{prefix}{i:02d}", f"password-{prefix}-{i:02d}") for i in range(n)]
    with db.write() as s:
        existing = set(s.scalars(select(User.username)))
        for name, password in users:
            if name not in existing:
                security.create_user(s, name, password=password)
    return users


def make_items_run(folder: str | Path, n_items: int, *, per_product: int = 10) -> Path:
    """A run with ``n_items`` small generated images (products of ``per_product`` images each)."""
    n_products = -(-n_items // per_product)
    run = make_run(folder, n_products, per_product, size=32)
    if n_products * per_product != n_items:  # trim the manifest to exactly n_items
        manifest = Path(run) / "manifest.jsonl"
        lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)[:n_items]
        manifest.write_text("".join(lines), encoding="utf-8")
    return Path(run)


def load_test(db_url: str | None, annotators: int, items: int, k: int, *, fetch_images: bool = True) -> dict:
    """A whole load test: a fresh database (a temporary SQLite file, or a new schema of the
    PostgreSQL database at ``db_url``, dropped afterwards), a batch of ``items`` with ``k``, the server
    in a child process, ``annotators`` clients; the report, with the database checks."""
    from sqlalchemy import create_engine, text

    from reliable_ad.annotation.importer import import_availability

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the machine
    with tempfile.TemporaryDirectory(prefix="annotation-load-") as tmp:
        schema = admin = None
        if db_url and not db_url.startswith("sqlite") and "://" in db_url:
            schema = f"load_{uuid.uuid4().hex[:10]}"  # a fresh schema, dropped afterwards
            admin = create_engine(normalize_url(db_url))
            with admin.begin() as c:
                c.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = with_schema(db_url, schema)
        else:
            url = db_url or str(Path(tmp) / "load.db")
        try:
            db = Database(url)
            t0 = time.perf_counter()
            batch = import_availability(db, make_items_run(Path(tmp) / "run", items), k=k).batch_id
            users = prepare_users(db, annotators)
            setup_s = time.perf_counter() - t0
            with ServerProcess(url) as base_url:
                report = run_load(base_url, users, batch, fetch_images=fetch_images)
            check = check_batch(db, batch, k)
            backend = db.engine.dialect.name
            version = db.engine.dialect.server_version_info if backend == "postgresql" else None
            db.dispose()
        finally:
            if admin is not None:
                with admin.begin() as c:
                    c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
    summary = report.summary()
    names = {"sqlite": "SQLite (WAL)", "postgresql": f"PostgreSQL {version[0] if version else ''}".strip()}
    label = names.get(backend, backend)
    return {"backend": label, "items": items, "k": k, **summary, "setup_s": round(setup_s, 2),
            "labels_in_db": check["labels"], "problems": check["problems"], "client_errors": report.errors[:5],
            "python": platform.python_version(), "cpus": _cpus(),
            "load_average_before": round(load_before, 2) if load_before is not None else None}


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
