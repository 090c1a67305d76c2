"""Label Studio interop and the HPSv3-style pairwise export, on batches the real importer made from
real run folders (make_run), through the commands a user runs:

    annotate import RUN -> annotate export --format label-studio -> (Label Studio's JSON export, built
    from those tasks exactly as Label Studio writes it) -> annotate import --label-studio -> annotate
    export --format rf1m: the same labels.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from sqlalchemy import select

from annotation_helpers import make_run
from reliable_ad.annotation import queue, security
from reliable_ad.annotation.db import Database
from reliable_ad.annotation.guidance import LABELS
from reliable_ad.annotation.models import Assignment, Batch, Candidate, User
from reliable_ad.cli.main import main


def _cli(*args: str) -> int:
    return main(list(args))


def _ls_annotation(task_id: int, n: int, completed_by, result: list[dict], *, cancelled: bool = False) -> dict:
    """One annotation as Label Studio's JSON export writes it."""
    return {"id": 1000 * task_id + n, "completed_by": completed_by, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "created_at": "2026-12-01T10:00:00.000000Z",
            "updated_at": f"2026-12-01T10:0{n}:00.000000Z", "draft_created_at": None, "lead_time": 4.25,
            "prediction": {}, "result_count": 0, "unique_id": f"u-{task_id}-{n}", "import_id": None,
            "last_action": None, "task": task_id, "project": 7, "updated_by": None, "parent_prediction": None,
            "parent_annotation": None, "last_created_by": None}


def _choice(label: str) -> list[dict]:
    return [{"value": {"choices": [label]}, "id": "Xy12AbCd", "from_name": "label", "to_name": "image",
             "type": "choices", "origin": "manual"}]


def _pairwise(selected: str) -> list[dict]:
    return [{"value": {"selected": selected}, "id": "Pw34EfGh", "from_name": "preference", "to_name": "preference",
             "type": "pairwise", "origin": "manual"}]


def _ls_export(tasks: list[dict], annotations_of) -> list[dict]:
    """Label Studio's JSON export of a project that imported ``tasks``: ids assigned, data kept as imported."""
    out = []
    for i, task in enumerate(tasks, 1):
        out.append({"id": i, "annotations": annotations_of(i, task["data"]), "drafts": [], "predictions": [],
                    "data": task["data"], "meta": {}, "created_at": "2026-12-01T09:00:00.000000Z",
                    "updated_at": "2026-12-01T10:00:00.000000Z", "inner_id": i, "total_annotations": 1,
                    "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
                    "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 7,
                    "updated_by": None, "file_upload": None, "comment_authors": []})
    return out


def test_label_studio_round_trip_gives_the_same_labels(tmp_path):
    run = make_run(tmp_path / "run", n_products=3, per_product=2, verdicts=True)
    db_path = tmp_path / "a.db"
    assert _cli("annotate", "import", str(run), "--db", str(db_path), "--k", "2", "--name", "base") == 0
    ls = tmp_path / "ls"
    assert _cli("annotate", "export", "--db", str(db_path), "--format", "label-studio", "--out", str(ls)) == 0

    config = ET.fromstring((ls / "labeling_config.xml").read_text())
    (choices,) = config.iter("Choices")
    assert [c.get("value") for c in choices.iter("Choice")] == list(LABELS)
    assert {i.get("name") for i in config.iter("Image")} == {"product", "image"}
    tasks = json.loads((ls / "tasks.json").read_text())
    assert len(tasks) == 6
    for task in tasks:  # relative URLs resolve from the export folder; RFNet's verdict is a pre-annotation
        assert (ls / task["data"]["image"]).resolve().is_file() and (ls / task["data"]["product"]).resolve().is_file()
        assert task["predictions"][0]["result"][0]["value"]["choices"][0] in LABELS

    wanted = {task["data"]["key"]: LABELS[i % len(LABELS)] for i, task in enumerate(tasks)}

    def annotations_of(task_id, data):
        label = wanted[data["key"]]
        other = LABELS[(LABELS.index(label) + 1) % len(LABELS)]
        found = [_ls_annotation(task_id, 1, {"id": 11, "email": "alice@example.com", "first_name": "A",
                                             "last_name": ""}, _choice(label)),
                 _ls_annotation(task_id, 2, 12, _choice(label)),
                 _ls_annotation(task_id, 3, 13, _choice(other), cancelled=True)]
        if task_id == 1:  # a bad item: a choice outside our labels; recorded, the rest imported
            found.append(_ls_annotation(task_id, 4, 14, _choice("Blurry")))
        return found

    exported = tmp_path / "project-7-at-2026-12-01.json"
    exported.write_text(json.dumps(_ls_export(tasks, annotations_of)))
    assert _cli("annotate", "import", "--db", str(db_path), "--label-studio", str(exported)) == 1  # the bad item

    db = Database(db_path)
    with db.read() as s:
        users = set(s.scalars(select(User.username)))
        assert {"alice@example.com", "label-studio-12"} <= users and "label-studio-13" not in users
        assert s.query(Assignment).filter(Assignment.state == "answered").count() == 12
    out = tmp_path / "rf1m"
    assert _cli("annotate", "export", "--db", str(db_path), "--format", "rf1m", "--out", str(out)) == 0
    rows = [ln.split("\t") for ln in (out / "labels.txt").read_text().splitlines() if ln and ln[0] != "#"]
    got = {Path(image).relative_to("../run").as_posix(): label for image, label in rows}
    assert got == wanted

    # the same export again imports nothing new; a label changed since is refused, named with its task
    from reliable_ad.annotation.label_studio import import_label_studio

    again = import_label_studio(db, exported)
    assert (again.added, again.present, again.cancelled) == (0, 12, 6)
    assert len(again.problems) == 1 and "'Blurry'" in again.problems[0] and "task 1" in again.problems[0]
    db.dispose()


def test_pairwise_tasks_import_as_rankings_and_export_as_hpsv3_pairs(tmp_path):
    shared = tmp_path / "products"
    runs = [make_run(tmp_path / m, n_products=2, per_product=1, seed=i, products_dir=shared)
            for i, m in enumerate("abc")]
    db_path = tmp_path / "p.db"
    assert _cli("annotate", "import", "--preference", *map(str, runs), "--methods", "a", "b", "c",
                "--db", str(db_path), "--name", "cmp", "--k", "3") == 0
    ls = tmp_path / "ls"
    assert _cli("annotate", "export", "--db", str(db_path), "--kind", "preference", "--format", "label-studio",
                "--out", str(ls), "--url-prefix", "/data/local-files/?d=", "--url-root", str(tmp_path)) == 0
    config = ET.fromstring((ls / "pairwise_config.xml").read_text())
    assert next(config.iter("Pairwise")).get("toName") == "image1,image2"
    tasks = json.loads((ls / "pairwise_tasks.json").read_text())
    assert len(tasks) == 2 * 3  # two sets, three pairs each
    assert all(t["data"]["image1"].startswith("/data/local-files/?d=a/images/") for t in tasks
               if t["data"]["method1"] == "a")

    order = {11: "abc", 12: "bac"}  # alice: a > b > c; bob: b > a > c

    def annotations_of(task_id, data):
        return [_ls_annotation(task_id, n, user, _pairwise(
            "left" if order[user].index(data["method1"]) < order[user].index(data["method2"]) else "right"))
            for n, user in enumerate(order, 1)]

    exported = tmp_path / "pairs.json"
    exported.write_text(json.dumps(_ls_export(tasks, annotations_of)))
    assert _cli("annotate", "import", "--db", str(db_path), "--label-studio", str(exported)) == 0

    # a third annotator ranks in our own app (the queue): c > a > b
    db = Database(db_path)
    with db.write() as s:
        carol, _ = security.create_user(s, "carol", password="correct horse battery")
        batch_id = s.scalar(select(Batch.id).where(Batch.name == "cmp"))
        methods = {c.id: c.method for c in s.scalars(select(Candidate))}
        carol_id = carol.id
    while items := queue.claim(db, batch_id, carol_id, 1):
        shown = [methods[c["id"]] for c in items[0]["candidates"]]
        typed = "".join(str(shown.index(m) + 1) for m in "cab")
        queue.answer_ranking(db, items[0]["assignment"], carol_id, typed)
    with db.read() as s:
        rankings = {(a.user_id, a.task_id): [methods[c] for c in a.ranking] for a in s.scalars(select(Assignment))}
    assert sorted(map("".join, rankings.values())) == ["abc", "abc", "bac", "bac", "cab", "cab"]

    prefs = tmp_path / "prefs.json"
    assert _cli("annotate", "export", "--db", str(db_path), "--kind", "preference", "--format", "pairwise-json",
                "--out", str(prefs)) == 0
    pairs = json.loads(prefs.read_text())
    # a vs b: 2 of 3 prefer a; a vs c: 2 of 3 prefer a; b vs c: 2 of 3 prefer b
    assert sorted((p["method1"], p["method2"], p["confidence"], p["votes"]) for p in pairs) == [
        ("a", "b", 0.6667, [2, 1]), ("a", "b", 0.6667, [2, 1]), ("a", "c", 0.6667, [2, 1]),
        ("a", "c", 0.6667, [2, 1]), ("b", "c", 0.6667, [2, 1]), ("b", "c", 0.6667, [2, 1])]
    for p in pairs:
        assert p["prompt"] == "An item sitting on a wooden table"
        assert Path(p["path1"]).is_file() and Path(p["path1"]).parts[-3] == p["method1"]
        assert Path(p["path2"]).parts[-3] == p["method2"] and p["annotators"] == 3
    db.dispose()


def test_label_studio_import_refuses_what_it_cannot_map(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_products=1, per_product=2)
    db_path = tmp_path / "a.db"
    assert _cli("annotate", "import", str(run), "--db", str(db_path), "--name", "base") == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": []}))
    assert _cli("annotate", "import", "--db", str(db_path), "--label-studio", str(bad)) == 2
    assert "not a list of tasks" in capsys.readouterr().err
    unknown = [{"id": 5, "data": {"batch": "base", "key": "images/nope.png"},
                "annotations": [_ls_annotation(5, 1, 3, _choice("Available"))]},
               {"id": 6, "data": {"image": "x.png"}, "annotations": []}]
    bad.write_text(json.dumps(unknown))
    assert _cli("annotate", "import", "--db", str(db_path), "--label-studio", str(bad)) == 1
    err = capsys.readouterr().err
    assert "task 5" in err and "'images/nope.png'" in err and "task 6" in err and "data.batch" in err
    assert _cli("annotate", "export", "--db", str(db_path), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"),
                "--url-prefix", "http://h/") == 2
    assert "--format label-studio" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
