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

from annotation_helpers import ServerThread, make_run  # noqa: E402
from reliable_ad.annotation import queue, security  # noqa: E402
from reliable_ad.annotation.app import create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.importer import import_availability, import_preference  # noqa: E402
from reliable_ad.annotation.models import Assignment, Task, User  # noqa: E402

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


def _page(browser, base_url: str, user: str, *, width: int = 1400, height: int = 860):
    context = browser.new_context(viewport={"width": width, "height": height})
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


def test_login_never_leaves_the_site_whatever_next_says(browser, site):
    from urllib.parse import urlsplit

    base_url, _ = site
    origin = urlsplit(base_url).netloc
    context = browser.new_context()
    off_site: list[str] = []

    def elsewhere(route):  # answer any other host here, and note it: nothing may go there
        off_site.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<title>evil</title>")

    context.route(lambda url: urlsplit(url).netloc != origin, elsewhere)
    page = context.new_page()
    cases = {"/%09/evil.example/x": "/", "/%0a/evil.example/x": "/", "/%0d/evil.example/x": "/",
             "/%5Cevil.example": "/", "%5C/evil.example": "/", "//evil.example": "/", "/\\evil.example": "/",
             "https://evil.example/": "/", "/%09%5Cevil.example": "/", "/admin": "/admin"}
    for next_page, expected in cases.items():
        page.goto(f"{base_url}/login?next={next_page}")
        page.fill("#username", "root")
        page.fill("#password", PASSWORD)
        page.press("#password", "Enter")
        page.wait_for_url(lambda url: "/login" not in url)
        assert urlsplit(page.url).netloc == origin, f"next={next_page} led to {page.url}"
        assert page.url == base_url + expected, next_page
    assert off_site == []
    context.close()


# ---------------------------------------------------------------------------------------------
# Layout, holds, two tabs, screenshots


_GEOMETRY = """() => {
  const rect = (e) => { const r = e.getBoundingClientRect();
    return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height}; };
  const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1
    && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
  const buttons = [...document.querySelectorAll('#classes button')].map((b) => ({
    text: b.innerText, box: rect(b),
    overflows: b.scrollWidth > b.clientWidth || b.scrollHeight > b.clientHeight
      || [...b.children].some((c) => c.scrollWidth > c.clientWidth || !inside(rect(c), rect(b))),
  }));
  const scroller = document.getElementById('guide-scroll');
  const more = document.getElementById('guide-more');
  return {
    viewport: [innerWidth, innerHeight],
    page_scrolls: document.documentElement.scrollHeight > innerHeight
      || document.documentElement.scrollWidth > innerWidth,
    buttons,
    guide: rect(document.getElementById('guide')),
    scroller: scroller && {scrollHeight: scroller.scrollHeight, clientHeight: scroller.clientHeight},
    more_visible: !!more && more.offsetParent !== null && inside(rect(more), rect(document.getElementById('guide'))),
    generated: rect(document.getElementById('generated').closest('.pane')),
    work: rect(document.querySelector('.work')),
  };
}"""

# scroll each class of the guidance into view inside its panel: [(name, inside the panel, page scrolled)]
_REACH_CLASSES = """() => {
  const scroller = document.getElementById('guide-scroll');
  const out = [];
  for (const h of document.querySelectorAll('#guide-classes h3')) {
    h.scrollIntoView({block: 'nearest'});
    const a = h.getBoundingClientRect(), b = scroller.getBoundingClientRect();
    out.push([h.innerText, a.top >= b.top - 1 && a.bottom <= b.bottom + 1, scrollY !== 0]);
  }
  return out;
}"""


def test_annotate_page_fits_small_windows_guidance_scrolls_and_hiding_it_gives_the_images_room(
        browser, site, tmp_path, shots):
    base_url, db = site
    batch = import_availability(db, make_run(tmp_path / "run", 2, 1, size=256), k=1).batch_id
    page, errors = _page(browser, base_url, "alice", width=1280, height=720)
    _ready(page, f"{base_url}/annotate/{batch}")
    for width, height in ((1280, 720), (1366, 800)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(100)
        g = page.evaluate(_GEOMETRY)
        page.screenshot(path=str(shots / f"annotate_{width}x{height}.png"))
        assert not g["page_scrolls"], f"{width}x{height}: the page itself scrolls"
        assert len(g["buttons"]) == 6
        for b in g["buttons"]:  # every class button holds its text, and is on screen
            assert not b["overflows"], f"{width}x{height}: the text of {b['text']!r} spills out of its button"
            assert b["box"]["bottom"] <= height and b["box"]["right"] <= width, b
        # the guidance panel is on screen and scrolls inside itself, with a cue while there is more
        assert g["guide"]["bottom"] <= height
        assert g["scroller"]["scrollHeight"] > g["scroller"]["clientHeight"]
        assert g["more_visible"], f"{width}x{height}: nothing shows that more guidance is below"
        reached = page.evaluate(_REACH_CLASSES)
        assert [name.split(maxsplit=1)[1] for name, _, _ in reached] == [
            "Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination", "Unsuitable"]
        assert all(ok and not page_moved for _, ok, page_moved in reached), reached
        page.evaluate("(s => { s.scrollTop = s.scrollHeight; })(document.getElementById('guide-scroll'))")
        _wait(page, "document.getElementById('guide-more').classList.contains('hidden')")  # at the end: no cue
        page.evaluate("document.getElementById('guide-scroll').scrollTop = 0")
        _wait(page, "!document.getElementById('guide-more').classList.contains('hidden')")
    # hiding the guidance (G) gives its column to the images: no empty column is left
    page.set_viewport_size({"width": 1280, "height": 720})
    page.wait_for_timeout(100)
    before = page.evaluate(_GEOMETRY)
    page.keyboard.press("g")
    page.wait_for_timeout(100)
    after = page.evaluate(_GEOMETRY)
    page.screenshot(path=str(shots / "annotate_no_guidance.png"))
    assert after["guide"]["width"] == 0
    assert after["generated"]["width"] > before["generated"]["width"] * 1.25
    assert after["work"]["right"] - after["generated"]["right"] <= 17  # only the padding to its right
    page.keyboard.press("g")
    page.wait_for_timeout(100)
    again = page.evaluate(_GEOMETRY)
    assert again["generated"]["width"] == pytest.approx(before["generated"]["width"], abs=1) and again["more_visible"]
    assert errors == []


def test_rank_page_says_which_keys_to_press_for_the_images_shown(browser, site, tmp_path, shots):
    base_url, db = site
    products = tmp_path / "products"
    runs = [make_run(tmp_path / m, 1, 1, seed=i, size=128, products_dir=products)
            for i, m in enumerate(["base", "rfft", "refl"])]
    batch = import_preference(db, runs, methods=["base", "rfft", "refl"], k=1).batch_id
    page, errors = _page(browser, base_url, "bob", width=1280, height=720)
    _ready(page, f"{base_url}/rank/{batch}")
    page.screenshot(path=str(shots / "rank_hint.png"))
    assert page.locator(".candidate").count() == 3
    hint = page.locator("#rank-hint").inner_text(timeout=5000)
    assert "press 1–3 in order of preference" in hint and "312" in hint
    assert "1423" not in page.inner_text("body") and "4" not in hint
    assert page.get_attribute("#typed", "placeholder") == "e.g. 312"
    assert errors == []


def test_an_answer_from_a_second_tab_is_refused_and_the_page_says_so(browser, site, tmp_path, shots):
    base_url, db = site
    batch = import_availability(db, make_run(tmp_path / "run", 2, 2, size=128), k=1).batch_id
    first, errors = _page(browser, base_url, "alice", width=1280, height=720)
    second = first.context.new_page()  # the same login in a second tab
    _ready(first, f"{base_url}/annotate/{batch}")
    _ready(second, f"{base_url}/annotate/{batch}")
    item = _shown(first)
    assert _shown(second) == item
    first.keyboard.press("2")  # Space Mismatch
    deadline = time.monotonic() + 10
    while True:
        with db.read() as s:
            if s.get(Assignment, item).state == "answered":
                break
        assert time.monotonic() < deadline, "the first tab's answer did not arrive"
        time.sleep(0.05)
    second.keyboard.press("4")  # a different answer to the same item
    second.wait_for_selector("#notice", state="visible", timeout=10_000)
    second.screenshot(path=str(shots / "second_tab.png"))
    assert "you already answered this item in another tab; reload to continue" in second.inner_text("#notice")
    with db.read() as s:
        assert s.get(Assignment, item).label == 1  # the first answer stands
    second.click("#notice button:has-text('Reload')")
    second.wait_for_selector("body[data-ready='1']")
    assert second.locator("#notice").count() == 0
    assert errors == []


def test_the_page_renews_its_hold_only_while_the_annotator_is_active(browser, site, tmp_path):
    base_url, db = site
    batch = import_availability(db, make_run(tmp_path / "run", 2, 2, size=64), k=1).batch_id
    page, errors = _page(browser, base_url, "alice", width=1280, height=720)
    asks: list[str] = []
    page.on("request", lambda r: asks.append(r.url) if r.method == "POST" and r.url.endswith("/next") else None)
    page.clock.install()  # the page's timers and Date.now, moved by hand below
    _ready(page, f"{base_url}/annotate/{batch}")
    page.wait_for_timeout(200)
    opened = len(asks)
    assert opened == 1  # the page asks for its items once
    page.clock.run_for(5 * 60_000)  # five minutes, nobody touches the page: it never renews
    page.wait_for_timeout(300)
    assert len(asks) == opened
    page.mouse.move(300, 300)  # the annotator is back: the hold is renewed while they are active
    page.mouse.move(320, 310)
    page.clock.run_for(31_000)
    deadline = time.monotonic() + 5
    while len(asks) == opened and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(asks) > opened
    page.clock.run_for(120_000)  # then idle again: renewals stop within the idle window
    page.wait_for_timeout(300)
    settled = len(asks)
    page.clock.run_for(5 * 60_000)
    page.wait_for_timeout(300)
    assert len(asks) == settled
    assert errors == []


def test_screenshot_script_saves_the_three_pages_at_1280x720(browser, tmp_path):
    import importlib.util

    from PIL import Image

    script = Path(__file__).resolve().parents[1] / "scripts" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "shots"
    assert module.main(["--out", str(out)], browser=browser) == 0  # this module's Chromium
    for name in ("annotate.png", "rank.png", "admin.png"):
        with Image.open(out / name) as im:
            assert im.size == (1280, 720), name
