"""The human-feedback loop end to end, through the commands a user runs and the real HTTP API, on the
real writers' outputs (no hand-made records):

    run --model synthad -> annotate import RUN -> two annotators label every item (k = 2)
    -> annotate export --format rf1m -> rfnet train on that export -> run --rfnet <trained>
    -> annotate import --preference of the two runs -> a ranking -> annotate export --kind preference

It is the README's "The human-feedback loop" section, at tiny sizes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from annotation_helpers import Annotator, ServerThread  # noqa: E402
from reliable_ad.annotation import security  # noqa: E402
from reliable_ad.annotation.app import create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.cli.main import main  # noqa: E402
from reliable_ad.data.records import read_records  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "synthad-products"
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch):
    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)


def _products(folder: Path, n: int) -> Path:
    """The first ``n`` example products, copied with their products file (paths relative to it)."""
    folder.mkdir(parents=True)
    with open(EXAMPLES / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    for row in rows:
        shutil.copy(EXAMPLES / row["image"], folder / Path(row["image"]).name)
        row["image"] = Path(row["image"]).name
    with open(folder / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "products.csv"


def _cli(*args: str) -> None:
    rc = main(list(args))
    assert rc == 0, f"reliable-ad {' '.join(args)} exited {rc}"


def _label_all(base_url: str, batch_id: int, username: str, label_of) -> int:
    """One annotator labels until the queue has nothing for them, over HTTP; returns answers given."""
    with httpx.Client(base_url=base_url) as client:
        user = Annotator(client, username, PASSWORD)
        answered = 0
        items = user.post(f"/api/batches/{batch_id}/next", {"count": 2}).json()["tasks"]
        while items:
            item = items[0]
            for url in (item["image_url"], item["product_url"]):  # what the page shows
                media = user.get(url)
                assert media.status_code == 200 and media.headers["content-type"].startswith("image/"), url
            r = user.post(f"/api/assignments/{item['assignment']}/label", {"label": label_of(item), "next": 2})
            assert r.status_code == 200, r.text
            answered += 1
            items = r.json().get("tasks") or user.post(f"/api/batches/{batch_id}/next", {"count": 2}).json()["tasks"]
        return answered


def test_the_human_feedback_loop(tmp_path, monkeypatch):
    products = _products(tmp_path / "products", 4)
    runs, db_path = tmp_path / "runs", tmp_path / "annotation.db"
    common = ["--model", "synthad", "-k", "2", "--no-progress"]
    _cli("run", str(products), "--out", str(runs / "base"), *common)
    images = [r for r in read_records(runs / "base" / "manifest.jsonl") if r.is_image]
    assert images and all(r.product == f"products/{r.product_id}.png" for r in images)

    # import from another working directory: paths in records resolve from the run folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _cli("annotate", "import", str(runs / "base"), "--db", str(db_path), "--k", "2", "--name", "base")
    db = Database(db_path)
    with db.write() as s:
        for name in ("alice", "bob"):
            security.create_user(s, name, password=PASSWORD)
    app = create_app(AnnotationConfig(db=db.url, prefetch=2), db)
    with ServerThread(app) as base_url:
        with httpx.Client(base_url=base_url) as client:
            batches = Annotator(client, "alice", PASSWORD).get("/api/batches").json()
        (batch,) = [b for b in batches if b["name"] == "base"]
        assert batch["tasks"] == len(images)  # every attempt was imported

        # two annotators who agree on what is Available and differ on the defect of the rest
        def alice(item):
            return 0 if item["task"] % 2 == 0 else 2

        def bob(item):
            return 0 if item["task"] % 2 == 0 else 3

        assert _label_all(base_url, batch["id"], "alice", alice) == len(images)
        assert _label_all(base_url, batch["id"], "bob", bob) == len(images)

    export = tmp_path / "labels"
    _cli("annotate", "export", "--db", str(db_path), "--format", "rf1m", "--out", str(export))
    lines = [ln for ln in (export / "labels.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == len(images)

    # RFNet fine-tuned on the human labels (the shipped SynthAd RFNet as the start), a tiny schedule
    rfnet = tmp_path / "rfnet"
    _cli("rfnet", "train", "--data", str(export), "--model", "synthad", "--out", str(rfnet), "--max-steps", "2",
         "--batch-size", "4", "--device", "cpu", "--num-workers", "0", "--no-progress")
    assert (rfnet / "model" / "config.json").is_file()

    _cli("run", str(products), "--out", str(runs / "retrained"), "--rfnet", str(rfnet / "model"), *common)
    retrained = [r for r in read_records(runs / "retrained" / "manifest.jsonl") if r.is_image]
    assert retrained and {r.rfnet for r in retrained} == {str(rfnet / "model")}

    # the two runs side by side: images with the same product and seed form a set to rank
    _cli("annotate", "import", "--preference", str(runs / "base"), str(runs / "retrained"),
         "--methods", "base", "retrained", "--db", str(db_path), "--name", "compare", "--k", "1")
    with ServerThread(create_app(AnnotationConfig(db=db.url, prefetch=2), db)) as base_url:
        with httpx.Client(base_url=base_url) as client:
            alice_api = Annotator(client, "alice", PASSWORD)
            (compare,) = [b for b in alice_api.get("/api/batches").json() if b["name"] == "compare"]
            ranked = 0
            items = alice_api.post(f"/api/batches/{compare['id']}/next", {"count": 1}).json()["tasks"]
            while items:
                item = items[0]
                order = "".join(str(c["number"]) for c in item["candidates"])
                r = alice_api.post(f"/api/assignments/{item['assignment']}/rank", {"ranking": order})
                assert r.status_code == 200, r.text
                ranked += 1
                items = alice_api.post(f"/api/batches/{compare['id']}/next", {"count": 1}).json()["tasks"]
    shared = {(r.product_hash, r.seed) for r in images} & {(r.product_hash, r.seed) for r in retrained}
    assert ranked == len(shared) > 0
    prefs = tmp_path / "prefs.jsonl"
    _cli("annotate", "export", "--db", str(db_path), "--kind", "preference", "--out", str(prefs))
    records = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert len(records) == ranked and all(len(r["rankings"]) == 1 for r in records)
    db.dispose()
