"""Screenshots of the annotation app for the docs: the labelling page, the ranking page and the
admin page, in headless Chromium at 1280x720.

    .venv/bin/python scripts/screenshots.py --out docs/screenshots

It starts the app on a temporary SQLite database with a small generated batch of each kind
(imported with the app's own importer), has two annotators answer a few items so the admin page
has statistics, logs in through the login page as an annotator and as the admin, and saves
annotate.png, rank.png and admin.png. Chromium: --chromium, else $RELIABLE_AD_CHROMIUM, else
/usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

# make_run and ServerThread are the tests' helpers (tests/annotation_helpers.py), not the package's
TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

PASSWORD = "screenshots only, not a real password"
WIDTH, HEIGHT = 1280, 720
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--force-color-profile=srgb"]
CAPTIONS = ["a green glass bottle of olive oil", "a red bottle of tomato ketchup", "a blue bottle of shower gel"]
METHODS = ("base", "rfft", "refl")


def _scene(path: Path, size: int, seed: int, colour: tuple[int, int, int]) -> None:
    """A plausible little ad: wall, table top, soft shadow and the product standing on the table."""
    rng = random.Random(seed)
    wall = tuple(rng.randrange(170, 235) for _ in range(3))
    wood = (rng.randrange(120, 170), rng.randrange(80, 110), rng.randrange(50, 70))
    im = Image.new("RGB", (size, size), wall)
    draw = ImageDraw.Draw(im)
    for y in range(size):  # light from the top left
        shade = int(18 * y / size)
        draw.line([(0, y), (size, y)], fill=tuple(max(0, c - shade) for c in wall))
    table = int(size * (0.62 + 0.06 * rng.random()))
    draw.rectangle([0, table, size, size], fill=wood)
    for x in range(0, size, max(4, size // 40)):  # wood grain
        draw.line([(x, table), (x + rng.randrange(-20, 20), size)], fill=tuple(max(0, c - 14) for c in wood))
    w = int(size * (0.16 + 0.06 * rng.random()))
    cx = int(size * (0.4 + 0.2 * rng.random()))
    top = int(size * (0.25 + 0.08 * rng.random()))
    shadow = Image.new("L", (size, size), 0)
    ImageDraw.Draw(shadow).ellipse([cx - w, table + 2, cx + w + size // 10, table + size // 18], fill=110)
    im.paste((30, 25, 20), (0, 0), shadow.filter(ImageFilter.GaussianBlur(size // 60)))
    _product(draw, cx, top, w, table + size // 60, colour)
    im.save(path)


def _product(draw: ImageDraw.ImageDraw, cx: int, top: int, w: int, bottom: int, colour) -> None:
    neck = max(3, w // 3)
    shoulder = top + (bottom - top) // 4
    draw.rectangle([cx - neck // 2, top, cx + neck // 2, shoulder], fill=colour)
    draw.rounded_rectangle([cx - w // 2, shoulder, cx + w // 2, bottom], radius=max(3, w // 5), fill=colour)
    light = tuple(min(255, c + 70) for c in colour)
    draw.rectangle([cx - w // 2 + w // 8, shoulder + w // 5, cx - w // 2 + w // 4, bottom - w // 4], fill=light)
    draw.rectangle([cx - w // 2, shoulder + (bottom - shoulder) // 3, cx + w // 2,
                    shoulder + (bottom - shoulder) // 2], fill=(245, 240, 228))


def _product_photo(path: Path, size: int, colour) -> None:
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    _product(ImageDraw.Draw(im), size // 2, size // 8, size // 3, size - size // 10, colour + (255,))
    im.save(path)


def _runs(root: Path, size: int = 384) -> tuple[Path, list[Path]]:
    """One run to label and three runs of different methods to rank, in the generator's manifest
    format (made by ``make_run`` of tests/annotation_helpers.py, then painted over)."""
    from annotation_helpers import make_run

    colours = [(46, 120, 60), (180, 40, 40), (40, 90, 170)]
    products = root / "products"
    label_run = make_run(root / "generated", 3, 3, size=size, captions=CAPTIONS, verdicts=True, products_dir=products)
    rank_runs = [make_run(root / m, 2, 1, seed=i + 1, size=size, captions=CAPTIONS, products_dir=products)
                 for i, m in enumerate(METHODS)]
    for photo in root.rglob("prod_*.png"):  # the shared product photos and any copies a run keeps
        if photo.parent.name == "products":
            _product_photo(photo, size, colours[int(photo.stem.split("_")[1]) % len(colours)])
    for r, run in enumerate([label_run, *rank_runs]):
        for image in sorted((run / "images").glob("prod_*.png")):
            p = int(image.name.split("_")[1].split("-")[0])
            _scene(image, size, seed=zlib.crc32(f"{r}:{image.name}".encode()), colour=colours[p % len(colours)])
    return label_run, rank_runs


def build_site(root: Path):
    """The database with users, two batches and some answers; returns (db, batch ids)."""
    from reliable_ad.annotation import queue, security
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability, import_preference

    label_run, rank_runs = _runs(root / "runs")
    db = Database(root / "annotation.db")
    with db.write() as s:
        ids = {name: security.create_user(s, name, password=PASSWORD)[0].id for name in ("alice", "bob", "carol")}
        security.create_user(s, "admin", "admin", password=PASSWORD)
    availability = import_availability(db, label_run, name="kitchen-run-07", k=2, order="uncertainty").batch_id
    preference = import_preference(db, rank_runs, methods=list(METHODS), name="compare-base-rfft-refl", k=2).batch_id
    votes = {"alice": [0, 1, 0, 2, 0, 3, 0], "bob": [0, 1, 2, 2, 0, 4, 0]}
    rng = random.Random(7)
    for name, labels in votes.items():  # some answers, so the admin page has statistics
        for label in labels:
            held = queue.claim(db, availability, ids[name], 1)
            if not held:
                break
            queue.answer_label(db, held[0]["assignment"], ids[name], label, duration_ms=rng.randrange(4000, 16000))
    held = queue.claim(db, preference, ids["bob"], 1)
    queue.answer_ranking(db, held[0]["assignment"], ids["bob"], "213", duration_ms=21000)
    _spread_answers(db)
    return db, availability, preference


def _spread_answers(db) -> None:
    """Answers made in a loop a moment ago, spread back in time by the time each took, as if typed."""
    from datetime import timedelta

    from sqlalchemy import select

    from reliable_ad.annotation.models import Assignment, utcnow

    now = utcnow()
    with db.write() as s:
        rows = list(s.scalars(select(Assignment).where(Assignment.state == "answered")
                              .order_by(Assignment.user_id, Assignment.id.desc())))
        clock: dict[int, object] = {}
        for a in rows:
            at = clock.get(a.user_id, now - timedelta(minutes=3))
            a.answered_at = at
            clock[a.user_id] = at - timedelta(milliseconds=a.duration_ms or 10_000)


def _login(browser, base_url: str, user: str):
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1)
    page = context.new_page()
    page.goto(base_url + "/login")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_url(base_url + "/")
    return page


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    # every image shown has loaded (the page preloads, so this is quick)
    deadline = time.monotonic() + 15
    while not page.evaluate("[...document.images].every((i) => !i.getAttribute('src') || i.complete)"):
        if time.monotonic() > deadline:
            break
        page.wait_for_timeout(50)
    page.wait_for_timeout(200)


def take(browser, base_url: str, availability: int, preference: int, out: Path) -> list[Path]:
    """The three screenshots, with a running Playwright ``browser``."""
    annotator = _login(browser, base_url, "carol")
    _open(annotator, f"{base_url}/annotate/{availability}")
    annotator.screenshot(path=str(out / "annotate.png"))
    _open(annotator, f"{base_url}/rank/{preference}")
    annotator.screenshot(path=str(out / "rank.png"))
    admin = _login(browser, base_url, "admin")
    _open(admin, f"{base_url}/admin")
    admin.screenshot(path=str(out / "admin.png"))
    for page in (annotator, admin):
        page.context.close()
    return [out / name for name in ("annotate.png", "rank.png", "admin.png")]


def main(argv: list[str] | None = None, *, browser=None) -> int:
    """Make the screenshots; ``browser``: a Playwright browser to use instead of launching Chromium."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/screenshots", help="folder for the PNG files (default docs/screenshots)")
    parser.add_argument("--chromium", default=os.environ.get("RELIABLE_AD_CHROMIUM", "/usr/bin/chromium"),
                        help="the Chromium executable")
    args = parser.parse_args(argv)
    if browser is None and not Path(args.chromium).is_file():
        print(f"no Chromium at {args.chromium}; pass --chromium or set RELIABLE_AD_CHROMIUM", file=sys.stderr)
        return 1
    from reliable_ad.annotation.app import create_app
    from reliable_ad.annotation.config import AnnotationConfig
    from annotation_helpers import ServerThread

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reliable-ad-screenshots-") as tmp:
        db, availability, preference = build_site(Path(tmp))
        try:
            with ServerThread(create_app(AnnotationConfig(db=db.url, prefetch=2), db)) as base_url:
                if browser is not None:
                    saved = take(browser, base_url, availability, preference, out)
                else:
                    from playwright.sync_api import sync_playwright

                    with sync_playwright() as p:
                        launched = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, timeout=60_000)
                        try:
                            saved = take(launched, base_url, availability, preference, out)
                        finally:
                            launched.close()
        finally:
            db.dispose()
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
