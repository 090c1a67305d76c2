"""report.html in a real browser: headless Chromium shows every product with its attempts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from test_recurrent import BrightnessJudge, _run_cfg

CHROMIUM = os.environ.get("RELIABLE_AD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_report_shows_every_product(browser, tiny_checkpoint, product_files, tmp_path):
    from reliable_ad.generation.config import ModelConfig, SamplingConfig
    from reliable_ad.generation.generator import AdGenerator
    from reliable_ad.generation.inputs import read_product_inputs
    from reliable_ad.recurrent.run import run_recurrent_job

    gen = AdGenerator.from_config(ModelConfig(model="tiny"), SamplingConfig(size=64, num_inference_steps=2, batch_size=3))
    inputs, _ = read_product_inputs([str(p) for p in product_files])
    out = tmp_path / "run"
    summary = run_recurrent_job(inputs, _run_cfg(tmp_path, max_attempts=3), out, generator=gen, judge=BrightnessJudge(), progress=False)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto((out / "report.html").as_uri())
    sections = page.locator("section.product")
    assert sections.count() == summary["products"] == len(product_files)
    for i in range(sections.count()):
        text = sections.nth(i).inner_text()
        assert any(f"{p.stem}-" in text for p in product_files)
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0 and page.evaluate("document.images.length") >= 1 + 3 + summary["products"]
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    os.makedirs("/tmp/reliable-ad-screens", exist_ok=True)
    shutil.copy(shot, "/tmp/reliable-ad-screens/report.png")
