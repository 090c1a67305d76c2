"""Annotation app: the queue's promises, imports, exports that RFNet's readers accept, admin
statistics and the command line, through the HTTP API on real databases (SQLite here; the queue
tests also on PostgreSQL when RELIABLE_AD_TEST_POSTGRES_URL names a server)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from annotation_helpers import Annotator, check_batch, make_run, postgres_db  # noqa: E402
from reliable_ad.annotation import queue, security  # noqa: E402
from reliable_ad.annotation.agreement import cohen_kappa, fleiss_kappa  # noqa: E402
from reliable_ad.annotation.app import create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.exporter import export_jsonl, export_preference, export_rf1m  # noqa: E402
from reliable_ad.annotation.guidance import LABELS  # noqa: E402
from reliable_ad.annotation.importer import import_availability, import_preference  # noqa: E402
from reliable_ad.annotation.models import Assignment, Base, Task, utcnow  # noqa: E402

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch):
    # the stored hash carries its cost, so cheap test hashes verify like real ones
    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "annotation.db")
    yield database
    database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    if request.param == "sqlite":
        database = Database(tmp_path / "annotation.db")
        yield database
        database.dispose()
        return
    database, drop = postgres_db()
    yield database
    database.dispose()
    drop()


def _users(database: Database, *names: str, admin: str | None = None) -> dict[str, int]:
    ids = {}
    with database.write() as s:
        for name in names:
            ids[name] = security.create_user(s, name, password=PASSWORD)[0].id
        if admin:
            ids[admin] = security.create_user(s, admin, "admin", password=PASSWORD)[0].id
    return ids


@pytest.fixture
def client(db):
    return TestClient(create_app(AnnotationConfig(db=db.url, prefetch=2), db))


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run", n_products=3, per_product=2, verdicts=True, failed=2)


def _label_everything(db: Database, batch_id: int, user_ids: dict[str, int], label_of=lambda task, user: 0):
    """Each user labels until the queue has nothing for them; returns {user: [task ids]}."""
    seen = {}
    for name, uid in user_ids.items():
        seen[name] = []
        while tasks := queue.claim(db, batch_id, uid, 1):
            seen[name].append(tasks[0]["task"])
            queue.answer_label(db, tasks[0]["assignment"], uid, label_of(tasks[0]["task"], name))
    return seen


# ---------------------------------------------------------------------------------------------
# Schema and imports


def test_migrations_build_exactly_the_models_schema_and_go_back(any_db):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext

    from reliable_ad.annotation.db import MIGRATIONS

    with any_db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with any_db.engine.begin() as c:
        config.attributes["connection"] = c
        command.downgrade(config, "base")
    with any_db.engine.connect() as c:
        assert "tasks" not in any_db.engine.dialect.get_table_names(c)
    Database(any_db.url).dispose()  # opening a database brings it to the newest schema again
    with any_db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []


def test_serve_offers_an_admin_invite_only_while_no_admin_can_log_in(db):
    from reliable_ad.annotation.server import ensure_admin

    config = AnnotationConfig(db=db.url)
    first = ensure_admin(db, config)
    assert first.startswith("/invite#")
    second = ensure_admin(db, config)  # a new link; the old one no longer works
    assert second != first
    with db.write() as s:
        with pytest.raises(PermissionError):
            security.accept_invite(s, first.split("#")[1], "the admin password")
    with db.write() as s:
        security.accept_invite(s, second.split("#")[1], "the admin password")
    assert ensure_admin(db, config) is None


def test_import_run_keeps_verdicts_skips_failed_generations_and_is_repeatable(db, run, tmp_path):
    summary = import_availability(db, run, k=2)
    assert (summary.added, summary.present, summary.failed_generations) == (6, 0, 2)
    with db.read() as s:
        tasks = list(s.scalars(select(Task).order_by(Task.id)))
    manifest = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]
    assert [t.key for t in tasks] == [r["image"] for r in manifest if not r["error"]]
    for task, record in zip(tasks, manifest):
        assert task.caption == record["caption"] and task.product_id == record["product_id"]
        assert task.rfnet_label == record["verdict"]["label_index"]
        assert 0.0 <= task.uncertainty <= 1.0
        assert task.meta["seed"] == record["seed"] and task.needed == 2
        assert Path(task.image_path).is_file() and Path(task.product_path).is_file()
    # a run that went on generating: only the new images are added
    make_run(run, n_products=4, per_product=2, verdicts=True)
    again = import_availability(db, run, k=2)
    assert (again.added, again.present, again.batch_id) == (2, 6, summary.batch_id)


def test_import_rf1m_folder_keeps_release_labels(db, tmp_path):
    from PIL import Image

    root = tmp_path / "rf1m"
    (root / "images").mkdir(parents=True)
    (root / "products").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / "images" / f"p{i}_0.png")
        Image.new("RGB", (8, 8), (0, i * 50, 0)).save(root / "products" / f"p{i}.png")
    # "1": the release README's code for Available (label codes "rf1m", the default)
    (root / "labels.txt").write_text("images/p0_0.png\t1\nimages/p1_0.png Size Mismatch\nimages/p2_0.png,unsuitable\n")
    (root / "captions.json").write_text(json.dumps({"p0": "a lamp", "p1": "a chair"}))
    summary = import_availability(db, root, k=1)
    assert summary.added == 3
    with db.read() as s:
        tasks = {t.key: t for t in s.scalars(select(Task))}
    assert tasks["images/p1_0.png"].reference_label == LABELS.index("Size Mismatch")
    assert tasks["images/p2_0.png"].reference_label == LABELS.index("Unsuitable")
    assert tasks["images/p0_0.png"].caption == "a lamp"
    assert tasks["images/p0_0.png"].product_path.endswith("products/p0.png")


def test_import_rf1m_folder_reads_numeric_labels_by_the_named_codes(db, tmp_path):
    """`annotate import --label-codes paper0`: 0 is Available, 5 Unsuitable (the other order than the
    release's 1..6); a code outside the mapping refuses the folder, naming the mapping."""
    from PIL import Image

    from reliable_ad.cli.main import main

    root = tmp_path / "rf1m"
    (root / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / "images" / f"p{i}_0.png")
    (root / "labels.txt").write_text("images/p0_0.png\t0\nimages/p1_0.png\t5\n")
    assert import_availability(db, root, k=1, label_codes="paper0").added == 2
    with db.read() as s:
        labels = {t.key: t.reference_label for t in s.scalars(select(Task))}
    assert labels == {"images/p0_0.png": LABELS.index("Available"), "images/p1_0.png": LABELS.index("Unsuitable")}
    with pytest.raises(ValueError, match="rf1m"):  # 0 is no code of the release's 1..6
        import_availability(db, root, k=1, name="again")
    assert main(["annotate", "import", "--db", f"sqlite:///{tmp_path / 'cli.db'}", str(root), "--label-codes",
                 "paper0"]) == 0


def test_a_batch_name_taken_by_the_other_kind_is_refused_with_its_kind(db, run, tmp_path):
    runs = [make_run(tmp_path / method, 2, 1, seed=i) for i, method in enumerate(("base", "rfft"))]
    import_availability(db, run, name="labelled", k=1)
    with pytest.raises(ValueError, match="'labelled' exists as an availability batch; choose another --name"):
        import_preference(db, runs, name="labelled", k=1)
    import_preference(db, runs, name="ranked", k=1)
    with pytest.raises(ValueError, match="'ranked' exists as a preference batch; choose another --name"):
        import_availability(db, run, name="ranked", k=1)


# ---------------------------------------------------------------------------------------------
# The queue


def test_claim_label_undo_skip_through_the_api(db, client, run):
    import_availability(db, run, k=2)
    _users(db, "alice")
    alice = Annotator(client, "alice", PASSWORD)
    held = alice.next(1, count=3)
    assert [t["task"] for t in held] == [1, 2, 3]  # sequential order
    assert alice.next(1, count=3) == held  # asking again returns the same held items, nothing new
    first, second = held[0], held[1]
    assert client.get(first["image_url"]).headers["content-type"] == "image/png"
    assert alice.label(first["assignment"], 2).json()["label"] == 2
    undone = alice.post("/api/batches/1/undo").json()
    assert (undone["assignment"], undone["state"], undone["undone"]) == (first["assignment"], "open", "answered")
    assert alice.label(first["assignment"], 4).status_code == 200
    assert alice.post(f"/api/assignments/{second['assignment']}/skip").json()["state"] == "skipped"
    with db.read() as s:
        assert s.get(Task, second["task"]).needed == 2  # the skipped item is free for others again
        labels = s.execute(select(Assignment.task_id, Assignment.label).where(Assignment.state == "answered")).all()
    assert labels == [(first["task"], 4)]
    # never again for alice: she gets the remaining items, not the skipped one
    rest = [t["task"] for t in alice.next(1, count=10)]
    assert second["task"] not in rest and sorted(rest) == [3, 4, 5, 6]
    # undo goes back in time: the skip first, then the label
    assert alice.post("/api/batches/1/undo").json()["task"] == second["task"]
    assert alice.post("/api/batches/1/undo").json()["task"] == first["task"]
    assert alice.post("/api/batches/1/undo").status_code == 404  # nothing older


def test_retried_answer_is_one_answer(db, client, run):
    import_availability(db, run, k=2)
    _users(db, "alice")
    alice = Annotator(client, "alice", PASSWORD)
    task = alice.next(1)[0]
    for label in (1, 1):  # a request retried after a lost reply: the same answer again
        assert alice.label(task["assignment"], label).status_code == 200
    with db.read() as s:
        rows = s.execute(select(Assignment.label).where(Assignment.task_id == task["task"])).all()
    assert rows == [(1,)]


ANOTHER_TAB = "you already answered this item in another tab; reload to continue"


def test_a_second_tab_cannot_replace_an_answer(db, client, run, three_runs):
    batch = import_availability(db, run, k=2).batch_id
    _users(db, "alice")
    alice = Annotator(client, "alice", PASSWORD)  # both tabs share the session
    task = alice.next(batch)[0]
    assert alice.label(task["assignment"], 2).status_code == 200  # the first tab
    refused = alice.post(f"/api/assignments/{task['assignment']}/label", {"label": 4, "next": 3})
    assert refused.status_code == 409 and refused.json() == {"detail": ANOTHER_TAB}
    skipped = alice.post(f"/api/assignments/{task['assignment']}/skip")
    assert skipped.status_code == 409 and skipped.json() == {"detail": ANOTHER_TAB}
    assert alice.label(task["assignment"], 2).status_code == 200  # the same answer again changes nothing
    with db.read() as s:
        assert s.execute(select(Assignment.label, Assignment.state).where(Assignment.task_id == task["task"])).all() \
            == [(2, "answered")]
    # undo is the way to change an answer
    assert alice.post(f"/api/batches/{batch}/undo").json()["assignment"] == task["assignment"]
    assert alice.label(task["assignment"], 4).json()["label"] == 4
    # rankings alike
    preference = import_preference(db, three_runs, methods=["base", "rfft", "refl"], k=2).batch_id
    shown = alice.next(preference)[0]
    rank = f"/api/assignments/{shown['assignment']}/rank"
    assert alice.post(rank, {"ranking": "312"}).status_code == 200
    refused = alice.post(rank, {"ranking": "123"})
    assert refused.status_code == 409 and refused.json() == {"detail": ANOTHER_TAB}
    assert alice.post(rank, {"ranking": [3, 1, 2]}).status_code == 200
    with db.read() as s:
        a = s.get(Assignment, shown["assignment"])
        assert a.ranking == [a.display_order[2], a.display_order[0], a.display_order[1]]


def test_answering_the_wrong_kind_of_task_says_which_kind_it_is(db, client, run, three_runs):
    availability = import_availability(db, run, k=2).batch_id
    preference = import_preference(db, three_runs, methods=["base", "rfft", "refl"], k=2).batch_id
    _users(db, "alice")
    alice = Annotator(client, "alice", PASSWORD)
    label_task, rank_task = alice.next(availability)[0], alice.next(preference)[0]
    ranked = alice.post(f"/api/assignments/{label_task['assignment']}/rank", {"ranking": "12"})
    assert ranked.status_code == 422
    assert ranked.json()["detail"] == \
        f"assignment {label_task['assignment']} is an availability task, not a preference task"
    labelled = alice.label(rank_task["assignment"], 0)
    assert labelled.status_code == 422
    assert labelled.json()["detail"] == \
        f"assignment {rank_task['assignment']} is a preference task, not an availability task"


def test_opening_the_page_holds_items_briefly_unless_their_holder_works(db, client, tmp_path, monkeypatch):
    """An admin who opens a batch and leaves keeps its items from annotators for two minutes only;
    an annotator who has answered keeps hers for the lease, and a page renewing its hold keeps it."""
    batch = import_availability(db, make_run(tmp_path / "run12", 6, 2), k=1).batch_id  # 12 items, 1 answer each
    _users(db, "bob", "carol", "dave", admin="root")
    start = utcnow()
    clock = [start]
    monkeypatch.setattr(queue, "utcnow", lambda: clock[0])  # the queue's clock; logins keep the real one

    def at(seconds):
        clock[0] = start + timedelta(seconds=seconds)

    root, bob, carol, dave = (Annotator(TestClient(client.app), name, PASSWORD)
                              for name in ("root", "bob", "carol", "dave"))
    glanced = {t["task"] for t in root.next(batch, count=3)}  # opens the page, leaves
    first = carol.next(batch, count=3)
    answered = carol.post(f"/api/assignments/{first[0]['assignment']}/label", {"label": 0, "next": 3})
    worked = {t["task"] for t in answered.json()["tasks"]}  # carol works: answers, gets the next
    renewed = {t["task"] for t in dave.next(batch, count=2)}
    assert glanced == {1, 2, 3} and worked == {5, 6, 7} and renewed == {8, 9}
    at(100)
    assert {t["task"] for t in dave.next(batch, count=2)} == renewed  # dave's page renews: he is active
    at(121)  # past the short hold
    got = {t["task"] for t in bob.next(batch, count=12)}
    assert got == glanced | {10, 11, 12}  # the admin's items are free again; carol's and dave's are not
    at(222)  # dave's renewed hold has run out too
    assert {t["task"] for t in bob.next(batch, count=12)} == got | renewed
    at(1801)  # carol went away after her answer: her items go back after the lease
    assert {t["task"] for t in bob.next(batch, count=12)} == got | renewed | worked
    with db.read() as s:
        held = dict(s.execute(select(Assignment.task_id, Assignment.user_id).where(Assignment.state == "open")).all())
        bob_id = s.scalar(select(Assignment.user_id).where(Assignment.task_id == 10))
    assert set(held) == set(range(1, 13)) - {4} and set(held.values()) == {bob_id}


def test_every_item_gets_exactly_k_labels_from_different_annotators(any_db, run):
    batch = import_availability(any_db, run, k=2).batch_id
    ids = _users(any_db, "a", "b", "c")
    seen = _label_everything(any_db, batch, ids)
    for name, tasks in seen.items():
        assert len(tasks) == len(set(tasks)), f"{name} saw an item twice"
    assert sum(len(t) for t in seen.values()) == 12
    report = check_batch(any_db, batch, 2)
    assert report["problems"] == [] and report["labels"] == 12


def test_concurrent_annotators_never_overfill_an_item(any_db, tmp_path):
    batch = import_availability(any_db, make_run(tmp_path / "big", 10, 4), k=3).batch_id
    ids = _users(any_db, *[f"u{i}" for i in range(8)])
    errors = []

    def work(uid):
        try:
            while tasks := queue.claim(any_db, batch, uid, 3):
                for t in tasks:
                    queue.answer_label(any_db, t["assignment"], uid, uid % 6)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(uid,)) for uid in ids.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    report = check_batch(any_db, batch, 3)
    assert report["problems"] == [] and report["labels"] == 40 * 3


def test_expired_lease_returns_the_item_and_a_late_answer_counts_only_if_room(db, run):
    batch = import_availability(db, run, k=1).batch_id
    ids = _users(db, "alice", "bob")
    held = queue.claim(db, batch, ids["alice"], 6)
    assert len(held) == 6 and queue.claim(db, batch, ids["bob"], 6) == []
    with db.write() as s:
        assert queue.expire_leases(s, batch, 60, now=utcnow() + timedelta(seconds=61)) == 6
    bobs = queue.claim(db, batch, ids["bob"], 1)
    queue.answer_label(db, bobs[0]["assignment"], ids["bob"], 0)
    late = {t["task"]: t["assignment"] for t in held}
    with pytest.raises(queue.Conflict):  # bob labelled that one: k = 1 is reached
        queue.answer_label(db, late[bobs[0]["task"]], ids["alice"], 1)
    other = next(a for task, a in late.items() if task != bobs[0]["task"])
    assert queue.answer_label(db, other, ids["alice"], 1)["state"] == "answered"
    assert check_batch(db, batch, 1)["labels"] == 2


def test_uncertainty_order_serves_the_least_certain_verdicts_first(db, run):
    batch = import_availability(db, run, k=1, order="uncertainty").batch_id
    uid = _users(db, "alice")["alice"]
    order = [t["task"] for t in queue.claim(db, batch, uid, 6)]
    with db.read() as s:
        unsure = dict(s.execute(select(Task.id, Task.uncertainty)).all())
    assert order == sorted(unsure, key=lambda t: -unsure[t])


def test_changing_k_recomputes_what_each_item_needs(db, client, run):
    batch = import_availability(db, run, k=2).batch_id
    ids = _users(db, "alice", admin="root")
    queue.answer_label(db, queue.claim(db, batch, ids["alice"], 1)[0]["assignment"], ids["alice"], 0)
    root = Annotator(client, "root", PASSWORD)
    assert root.post(f"/api/admin/batches/{batch}", {"k": 3}).json()["k"] == 3
    with db.read() as s:
        needed = list(s.scalars(select(Task.needed).order_by(Task.id)))
    assert needed == [2, 3, 3, 3, 3, 3]
    assert root.post(f"/api/admin/batches/{batch}", {"k": 1, "order": "random"}).status_code == 200
    with db.read() as s:
        assert list(s.scalars(select(Task.needed).order_by(Task.id))) == [0, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------
# Preference


@pytest.fixture
def three_runs(tmp_path):
    products = tmp_path / "products"
    return [make_run(tmp_path / name, 2, 2, seed=i, products_dir=products)
            for i, name in enumerate(["base", "rfft", "refl"])]


def test_preference_sets_show_a_stored_random_order_and_take_typed_rankings(db, client, three_runs):
    summary = import_preference(db, three_runs, methods=["base", "rfft", "refl"], k=2)
    assert summary.added == 4  # 2 products x 2 seeds, each seen by all three runs
    _users(db, "alice", "bob")
    alice, bob = Annotator(client, "alice", PASSWORD), Annotator(TestClient(client.app), "bob", PASSWORD)
    shown = alice.next(summary.batch_id)[0]
    numbers = [c["number"] for c in shown["candidates"]]
    assert numbers == [1, 2, 3] and "method" not in json.dumps(shown)  # blind
    with db.read() as s:
        a = s.get(Assignment, shown["assignment"])
        stored_order = a.display_order
        methods = {c.id: c.method for c in a.task.candidates}
    assert [c["id"] for c in shown["candidates"]] == stored_order and sorted(methods) == sorted(stored_order)
    bad = alice.post(f"/api/assignments/{shown['assignment']}/rank", {"ranking": "113"})
    assert bad.status_code == 422 and "exactly once" in bad.json()["detail"]
    assert alice.post(f"/api/assignments/{shown['assignment']}/rank", {"ranking": "312"}).status_code == 200
    with db.read() as s:
        assert s.get(Assignment, shown["assignment"]).ranking == [stored_order[2], stored_order[0], stored_order[1]]
    # orders differ between annotators on some set (per-annotator shuffles), and both are stored
    orders_bob = [t["candidates"] for t in bob.next(summary.batch_id, count=4)]
    orders_alice = [shown["candidates"]] + [t["candidates"] for t in alice.next(summary.batch_id, count=4)[1:]]
    assert any(x != y for x, y in zip(orders_alice, orders_bob))
    # a label is not an answer to a ranking task
    assert alice.label(shown["assignment"], 0).status_code == 422


def test_preference_export_and_admin_results(db, client, three_runs, tmp_path):
    batch = import_preference(db, three_runs, methods=["base", "rfft", "refl"], k=1).batch_id
    ids = _users(db, "alice", admin="root")
    for t in queue.claim(db, batch, ids["alice"], 4):
        by_id = {c["id"]: c["number"] for c in t["candidates"]}
        with db.read() as s:
            method = {c.id: c.method for c in s.get(Task, t["task"]).candidates}
        best_first = sorted(by_id, key=lambda cid: ["rfft", "base", "refl"].index(method[cid]))
        queue.answer_ranking(db, t["assignment"], ids["alice"], "".join(str(by_id[c]) for c in best_first))
    summary = export_preference(db, tmp_path / "prefs.jsonl")
    records = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert summary.records == 4 and all(r["rankings"][0]["ranking"] == ["rfft", "base", "refl"] for r in records)
    result = json.loads((tmp_path / "prefs.summary.json").read_text())
    assert result["mean_rank"]["rfft"]["mean_rank"] == 1.0 and result["mean_rank"]["refl"]["mean_rank"] == 3.0
    root = Annotator(client, "root", PASSWORD)
    stats = root.get(f"/api/admin/batches/{batch}/stats").json()
    wins = {(r["method"], r["versus"]): r for r in stats["preference"]["pairwise"]}
    assert wins[("rfft", "base")]["win_rate"] == 1.0 and wins[("rfft", "base")]["n"] == 4
    assert 0 < wins[("rfft", "base")]["ci_low"] < 1 == wins[("rfft", "base")]["ci_high"]


# ---------------------------------------------------------------------------------------------
# Admin


def test_admin_statistics_agreement_and_disagreement_review(db, client, run):
    batch = import_availability(db, run, k=2).batch_id
    ids = _users(db, "alice", "bob", admin="root")
    alice_labels = {1: 0, 2: 0, 3: 1, 4: 2, 5: 3, 6: 0}
    bob_labels = {1: 0, 2: 1, 3: 1, 4: 2, 5: 4, 6: 0}
    _label_everything(db, batch, {"alice": ids["alice"]}, lambda t, _: alice_labels[t])
    _label_everything(db, batch, {"bob": ids["bob"]}, lambda t, _: bob_labels[t])
    root = Annotator(client, "root", PASSWORD)
    stats = root.get(f"/api/admin/batches/{batch}/stats").json()
    assert stats["progress"]["complete"] == 6 and stats["progress"]["answers"] == 12
    a, b = [alice_labels[t] for t in range(1, 7)], [bob_labels[t] for t in range(1, 7)]
    assert stats["agreement"]["cohen_pairs"][0]["kappa"] == pytest.approx(cohen_kappa(a, b))
    counts = [[(x == c) + (y == c) for c in range(6)] for x, y in zip(a, b)]
    assert stats["agreement"]["fleiss_kappa"] == pytest.approx(fleiss_kappa(counts))
    assert stats["classes"]["votes"] == [5, 3, 2, 1, 1, 0]
    assert {r["user"] for r in stats["annotators"]} == {"alice", "bob"}
    review = root.get(f"/api/admin/batches/{batch}/disagreements").json()
    assert sorted(r["task"] for r in review) == [2, 5]
    assert root.post("/api/admin/tasks/5/resolve", {"label": 3}).json()["final_label"] == 3
    assert [r["task"] for r in root.get(f"/api/admin/batches/{batch}/disagreements").json()] == [2]


def test_admin_adds_users_by_invite_and_the_invite_works_once(db, client):
    _users(db, admin="root")
    root = Annotator(client, "root", PASSWORD)
    created = root.post("/api/admin/users", {"username": "dana"}).json()
    token = created["invite_url"].split("#", 1)[1]
    fresh = TestClient(client.app)
    login_token = fresh.get("/api/login-token").json()["token"]
    accepted = fresh.post("/api/invite", json={"token": token, "password": "dana's password"},
                          headers={"X-CSRF-Token": login_token})
    assert accepted.status_code == 200 and fresh.get("/api/me").json()["username"] == "dana"
    again = TestClient(client.app)
    login_token = again.get("/api/login-token").json()["token"]
    reused = again.post("/api/invite", json={"token": token, "password": "another password"},
                        headers={"X-CSRF-Token": login_token})
    assert reused.status_code == 403
    Annotator(TestClient(client.app), "dana", "dana's password")  # the chosen password logs in


# ---------------------------------------------------------------------------------------------
# Exports feed RFNet


def _labelled(db, run, tmp_path):
    batch = import_availability(db, run, k=3).batch_id
    ids = _users(db, "a", "b", "c")
    votes = {"a": [0, 1, 2, 3, 4, 0], "b": [0, 1, 2, 1, 4, 5], "c": [1, 1, 3, 2, 0, 0]}
    _label_everything(db, batch, ids, lambda task, user: votes[user][task - 1])
    with db.write() as s:
        s.get(Task, 5).final_label = 4  # an admin's decision
    return votes


def test_jsonl_export_is_read_by_read_annotation_export(db, run, tmp_path):
    from reliable_ad.data.readers import read_annotation_export

    votes = _labelled(db, run, tmp_path)
    out = tmp_path / "exports" / "labels.jsonl"
    summary = export_jsonl(db, out)
    assert (summary.records, summary.votes) == (6, 18)
    result = read_annotation_export(out, unsuitable="keep")
    assert result.problems == []
    labels = [s.label for s in result.samples]
    # majority per image, ties to the lowest class; image 5 adjudicated; image 4 ties 3/1/2 -> 1
    assert labels == [0, 1, 2, 1, 4, 0]
    assert result.samples[0].agreement == pytest.approx(2 / 3)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["annotations"]) for r in records] == [3] * 6
    assert records[3]["votes"] == [LABELS[votes[u][3]] for u in ("a", "b", "c")]
    assert all(Path(s.image).is_file() and Path(s.product).is_file() for s in result.samples)


def test_rf1m_export_is_read_by_read_rf1m(db, run, tmp_path):
    from reliable_ad.data.readers import read_rf1m

    _labelled(db, run, tmp_path)
    out = tmp_path / "rf1m_export"
    export_rf1m(db, out)
    result = read_rf1m(out, unsuitable="keep")
    assert result.problems == []
    assert [s.label for s in result.samples] == [0, 1, 2, 1, 4, 0]
    with db.read() as s:
        tasks = list(s.scalars(select(Task).order_by(Task.id)))
    for sample, task in zip(result.samples, tasks):
        assert Path(sample.image).resolve() == Path(task.image_path).resolve()
        assert sample.caption == task.caption
        assert Path(sample.product).read_bytes() == Path(task.product_path).read_bytes()


# ---------------------------------------------------------------------------------------------
# Command line


def test_serve_flags_reach_the_server_config():
    from reliable_ad.cli.annotate import _config
    from reliable_ad.cli.main import build_parser

    args = build_parser().parse_args(["annotate", "serve", "--db", "x.db", "--lease-seconds", "600",
                                      "--login-attempts", "3", "--login-attempts-per-address", "20"])
    config = _config(args)
    assert (config.db, config.lease_seconds, config.login_attempts, config.login_attempts_per_address) == \
        ("x.db", 600, 3, 20)
    assert _config(build_parser().parse_args(["annotate", "serve"])).login_attempts_per_address == 50


def test_cli_import_users_and_export(tmp_path, run, capsys):
    from reliable_ad.cli.main import main

    dbfile = str(tmp_path / "cli.db")
    assert main(["annotate", "import", str(run), "--db", dbfile, "--k", "1", "--name", "batch-one"]) == 0
    assert "batch 'batch-one' (id 1): 6 new items (2 failed generations left out)" in capsys.readouterr().out
    assert main(["annotate", "users", "add", "erin", "--db", dbfile]) == 0
    assert "/invite#" in capsys.readouterr().out
    db = Database(dbfile)
    with db.read() as s:
        from reliable_ad.annotation.models import User

        uid = s.scalar(select(User.id).where(User.username == "erin"))
    _label_everything(db, 1, {"erin": uid}, lambda t, _: t % 5)
    db.dispose()
    out = tmp_path / "export.jsonl"
    assert main(["annotate", "export", "--db", dbfile, "--format", "jsonl", "--out", str(out)]) == 0
    assert "wrote 6 records (6 answers)" in capsys.readouterr().out
    assert main(["annotate", "export", "--db", dbfile, "--format", "rf1m", "--out", str(tmp_path / "rf")]) == 0
    assert (tmp_path / "rf" / "labels.txt").read_text().count("\n") == 7  # header + 6
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.jsonl").write_text('{"image": "nope.png"}\n')
    assert main(["annotate", "import", str(bad), "--db", dbfile]) == 1
    assert "nothing was imported" in capsys.readouterr().err
    db = Database(dbfile)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 6
    db.dispose()
