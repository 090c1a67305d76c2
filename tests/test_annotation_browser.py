"""End-to-end tests of the annotation pages in headless Chromium (Debian's, driven by Playwright):
label with the keyboard, undo, rank by typing and by dragging, settle a disagreement, then check
the database. Skipped where Chromium or the playwright package is missing. Screenshots go to
$RELIABLE_AD_SCREENSHOTS when it is set."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("RELIABLE_AD_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RELIABLE_AD_CHROMIUM)",
                allow_module_level=True)

from sqlalchemy import select  # noqa: E402

from reliable_ad.annotation import queue, security  # noqa: E402
from reliable_ad.annotation.app import create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.importer import import_availability, import_preference  # noqa: E402
from reliable_ad.annotation.models import Assignment, Task, User  # noqa: E402
from reliable_ad.annotation.testing import ServerThread, make_run  # noqa: E402

PASSWORD = "correct horse battery"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch):
    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        except Exception as e:  # noqa: BLE001 - a Chromium that cannot start here: skip, as promised
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {e}")
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("RELIABLE_AD_SCREENSHOTS") or tmp_path / "screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site(tmp_path):
    """A fresh database, three users and a live server; yields (base_url, db)."""
    db = Database(tmp_path / "annotation.db")
    with db.write() as s:
        for name in ("alice", "bob"):
            security.create_user(s, name, password=PASSWORD)
        security.create_user(s, "root", "admin", password=PASSWORD)
    with ServerThread(create_app(AnnotationConfig(db=db.url, prefetch=2), db)) as base_url:
        yield base_url, db
    db.dispose()


def _page(browser, base_url: str, user: str, *, height: int = 860):
    context = browser.new_context(viewport={"width": 1400, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base_url + "/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(base_url + "/")
    page.wait_for_selector(".batch, .muted")
    return page, errors


def _ready(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def _wait(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a JavaScript expression from outside the page: Playwright's in-page polling evaluates
    strings, which the app's Content-Security-Policy (no 'unsafe-eval') rightly forbids."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(20)


def _shown(page) -> int:
    return int(page.evaluate("document.body.dataset.assignment"))


def _task_of(db, assignment: int) -> int:
    with db.read() as s:
        return s.get(Assignment, assignment).task_id


def test_label_with_the_keyboard_undo_and_preloading(browser, site, tmp_path, shots):
    base_url, db = site
    batch = import_availability(db, make_run(tmp_path / "run", 3, 2, size=256), k=1).batch_id
    page, errors = _page(browser, base_url, "alice")
    page.screenshot(path=str(shots / "home.png"))
    _ready(page, f"{base_url}/annotate/{batch}")
    first = _shown(page)
    # the next two items' images are already in the browser before any key is pressed
    _wait(page, "performance.getEntriesByType('resource').filter(e => e.name.includes('/media/task/')).length >= 6")
    fetched = page.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    assert "/media/task/2/image" in fetched and "/media/task/3/image" in fetched
    page.screenshot(path=str(shots / "annotate.png"))

    shown = [first]
    for key in ("2", "4"):  # Space Mismatch, then Indistinctiveness
        page.keyboard.press(key)
        _wait(page, f"document.body.dataset.assignment != '{shown[-1]}'")
        shown.append(_shown(page))
    page.keyboard.press("z")  # undo: the second item comes back
    _wait(page, f"document.body.dataset.assignment == '{shown[1]}'")
    page.keyboard.press("5")  # relabel it: Shape Hallucination
    _wait(page, f"document.body.dataset.assignment == '{shown[2]}'")
    for _ in range(4):
        before = _shown(page)
        page.keyboard.press("1")
        _wait(page, f"!document.body.dataset.assignment || document.body.dataset.assignment != '{before}'"
                               " || !document.getElementById('done').classList.contains('hidden')")
    page.wait_for_selector("#done:not(.hidden)")
    _wait(page, "document.getElementById('count').textContent === '6 labelled'")
    page.wait_for_timeout(300)  # the last answer's request
    with db.read() as s:
        uid = s.scalar(select(User.id).where(User.username == "alice"))
        labels = dict(s.execute(select(Assignment.task_id, Assignment.label)
                                .where(Assignment.user_id == uid, Assignment.state == "answered")).all())
    assert labels == {_task_of(db, shown[0]): 1, _task_of(db, shown[1]): 4,
                      **{t: 0 for t in range(1, 7) if t not in (_task_of(db, shown[0]), _task_of(db, shown[1]))}}
    assert errors == []


def test_rank_by_typing_and_by_dragging(browser, site, tmp_path, shots):
    base_url, db = site
    products = tmp_path / "products"
    runs = [make_run(tmp_path / m, 2, 1, seed=i, size=256, products_dir=products)
            for i, m in enumerate(["base", "rfft", "refl"])]
    batch = import_preference(db, runs, methods=["base", "rfft", "refl"], k=1).batch_id
    page, errors = _page(browser, base_url, "bob")
    _ready(page, f"{base_url}/rank/{batch}")
    page.screenshot(path=str(shots / "rank.png"))
    typed = _shown(page)
    page.keyboard.type("312")
    page.keyboard.press("Enter")
    _wait(page, f"document.body.dataset.assignment != '{typed}'")
    dragged = _shown(page)
    page.locator(".chip[data-number='3']").drag_to(page.locator(".chip[data-number='1']"))
    assert page.input_value("#typed") == "312"
    page.screenshot(path=str(shots / "rank_dragged.png"))
    page.click("#submit")
    page.wait_for_selector("#done:not(.hidden)")
    page.wait_for_timeout(300)
    with db.read() as s:
        for assignment in (typed, dragged):
            a = s.get(Assignment, assignment)
            assert a.state == "answered"
            assert a.ranking == [a.display_order[2], a.display_order[0], a.display_order[1]]
    assert errors == []


def test_admin_page_statistics_and_disagreement_review(browser, site, tmp_path, shots):
    base_url, db = site
    batch = import_availability(db, make_run(tmp_path / "run", 3, 2, size=256, verdicts=True), k=2).batch_id
    with db.read() as s:
        ids = dict(s.execute(select(User.username, User.id)).all())
    for user, labels in (("alice", [0, 0, 1, 2, 3, 0]), ("bob", [0, 1, 1, 2, 4, 0])):
        while tasks := queue.claim(db, batch, ids[user], 1):
            queue.answer_label(db, tasks[0]["assignment"], ids[user], labels[tasks[0]["task"] - 1])
    page, errors = _page(browser, base_url, "root", height=1400)
    _ready(page, f"{base_url}/admin")
    assert page.locator("#throughput tbody tr").count() == 2
    assert page.locator("#classes-chart svg rect").count() == 18  # 6 classes x 3 series
    kappa = page.locator("#agreement .kpi b").first.inner_text()
    assert kappa not in ("–", "") and -1 <= float(kappa) <= 1
    page.screenshot(path=str(shots / "admin.png"), full_page=True)
    _ready(page, f"{base_url}/admin/review/{batch}")
    assert page.locator("#votes .vote").count() == 2
    page.screenshot(path=str(shots / "review.png"))
    first = int(page.evaluate("document.body.dataset.task"))
    page.keyboard.press("3")  # final label: Size Mismatch
    _wait(page, f"document.body.dataset.task != '{first}'")
    with db.read() as s:
        assert s.get(Task, first).final_label == 2
    page.goto(base_url + "/login")
    page.screenshot(path=str(shots / "login.png"))
    assert errors == []


def test_invite_link_sets_a_password_and_annotators_meet_the_admins_only_page(browser, site, shots):
    base_url, db = site
    root = _page(browser, base_url, "root", height=1000)[0]
    _ready(root, f"{base_url}/admin")
    root.fill("#new-username", "erin")
    root.click("#add-user button[type=submit]")
    root.wait_for_selector("#invite:has-text('/invite#')")
    link = root.inner_text("#invite").split(": ", 1)[1].strip()
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    page.goto(link)
    page.fill("#password", "erin's new password")
    page.fill("#password2", "erin's new password")
    page.screenshot(path=str(shots / "invite.png"))
    page.press("#password2", "Enter")
    page.wait_for_url(base_url + "/")
    with db.read() as s:
        erin = s.scalar(select(User).where(User.username == "erin"))
    assert erin.password_hash and erin.invite_hash is None
    response = page.goto(base_url + "/admin")
    assert response.status == 403
    page.screenshot(path=str(shots / "forbidden.png"))
