"""The search page in a real browser: headless Debian Chromium driven by Playwright, against a live `cir serve` on the
tiny synthetic benchmark. Never skipped: a missing Chromium is a failure (.ci/run installs it).

The screenshot goes to the test's tmp folder; `CIR_SCREENSHOT=docs/images/serve.png python -m pytest
tests/test_serve_browser.py` writes the one docs/serve.md shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from cir.data import load_benchmark

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = os.environ.get("CIR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium not found: apt-get install chromium (.ci/run does), or set CIR_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def page(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(live_server.url + "/")
        yield page
        browser.close()


def searches(page) -> int:
    return int(page.evaluate("document.body.dataset.searches || '0'"))


def wait_for_search(page, before: int) -> None:
    page.wait_for_function(f"parseInt(document.body.dataset.searches || '0', 10) > {before}")


def test_pick_search_refine_upload_and_ground_truth(page, live_server, synth_tiny, tmp_path) -> None:
    val = load_benchmark("cirr", synth_tiny, "val")
    page.wait_for_function("document.getElementById('about').textContent.includes('images')")
    assert "Pipeline(sparse % 20 >> dual-encoder)" in page.text_content("#about")

    # pick a reference from the random sample, type a text, submit: k results with their rank changes
    page.click("#random")
    page.wait_for_selector("#browser img")
    first_thumb = page.locator("#browser img").first
    picked = first_thumb.get_attribute("data-id")
    first_thumb.click()
    assert page.text_content("#reference-label") == picked
    page.fill("#text", "make the circle red")
    page.fill("#k", "12")
    before = searches(page)
    page.click("#search")
    wait_for_search(page, before)
    assert page.locator("#results .result").count() == 12
    assert page.locator("#results [data-role=rank-change]").count() == 12
    assert "stage1" in page.text_content("#timing") and "stage2" in page.text_content("#timing")
    assert page.locator("#results .terms").count() == 12  # sparse stage one: each result explained by its terms

    # click a result: it becomes the reference and a new search runs from it
    second = page.locator("#results .result").nth(1)
    clicked = second.get_attribute("data-id")
    before = searches(page)
    second.click()
    wait_for_search(page, before)
    assert page.text_content("#reference-label") == clicked
    assert clicked not in [page.locator("#results .result").nth(i).get_attribute("data-id") for i in range(12)]

    # upload an image file as the reference
    upload = tmp_path / "my-photo.png"
    shutil.copyfile(val.gallery.path(val.gallery.ids[3]), upload)
    page.set_input_files("#upload", str(upload))
    assert "my-photo.png" in page.text_content("#reference-label")
    before = searches(page)
    page.click("#search")
    wait_for_search(page, before)
    assert page.locator("#results .result").count() == 12

    # load a benchmark query by id: its target is marked in the grid, with its rank at each stage
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        query = next(q for q in val.queries
                     if client.post("/api/search", json={"reference": q.reference, "text": q.text, "k": 12,
                                                         "query_id": q.id}).json()["ground_truth"]["target_rank"]["stage2"] <= 12)
    page.click("#benchmark-panel summary")
    page.fill("#query-id", query.id)
    before = searches(page)
    page.click("#load-query")
    wait_for_search(page, before)
    target = val.targets[query.id][0]
    assert page.locator(f"#results .result.target[data-id='{target}']").count() == 1
    assert page.locator("#results .result.member").count() >= 1
    truth = page.text_content("#truth")
    assert f"query {query.id}" in truth and "stage 1 (sparse, csr)" in truth and "stage 1 + 2 (dual-encoder)" in truth

    shot = Path(os.environ.get("CIR_SCREENSHOT") or tmp_path / "serve.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_refused_search_shows_the_servers_message(page) -> None:
    page.fill("#reference-id", "no-such-image")
    page.click("#use-id")
    page.fill("#text", "make it blue")
    page.click("#search")
    page.wait_for_selector("#error:not([hidden])")
    assert "not in the gallery" in page.text_content("#error")
