"""In the browser, first run without weights against a hub that never answers: the banner says what
the first generation downloads; after the failed click it shows why and how to fix it, and keeps it
after the error toast is closed."""

import os
import re

import pytest
from playwright.sync_api import expect, sync_playwright

from llm_dit.runtime.settings import ZIMAGE_REPO

from .fake_hub import Blackhole, FakeHub
from .test_browser import ARGS, CHROMIUM  # the same chromium (and the same skip rule)
from .test_first_run import app

VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture
def mute_hub_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("first-run")
    with Blackhole() as hole, app(tmp, hole.url, "--hub-timeout", "2") as (url, _):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            yield page, hole
            browser.close()


@pytest.fixture
def fake_hub_page(tmp_path_factory, zimage_dir):
    """The app against a slow loopback hub that serves the tiny checkpoint as Z-Image-Turbo."""
    tmp = tmp_path_factory.mktemp("first-download")
    with FakeHub({ZIMAGE_REPO: zimage_dir}, chunk_delay_s=1.0) as hub, app(tmp, hub.url) as (url, _):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            yield page
            browser.close()


def _save(page, name: str) -> None:
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        page.screenshot(path=os.path.join(artifacts, name), animations="disabled")


def _save_while_shown(page, locator, name: str, tries: int = 20) -> None:
    """A screenshot taken while `locator` is on screen (CSS animations finished): the progress bar
    appears only once the download reports, and fades in."""
    for _ in range(tries):
        if locator.count() and locator.first.is_visible():
            _save(page, name)
            if locator.count() and locator.first.is_visible():
                return
        page.wait_for_timeout(50)


def _not_clipped(locator) -> None:
    clipped = locator.evaluate("e => [...e.querySelectorAll('*')].concat([e]).some("
                               "n => n.scrollWidth > n.clientWidth + 1 && getComputedStyle(n).overflowX !== 'visible')")
    assert not clipped


def test_the_banner_keeps_the_reason_after_a_failed_first_click(mute_hub_page):
    page, hole = mute_hub_page
    banner = page.locator("#model-status")
    expect(banner).to_contain_text("First run: not downloaded yet", timeout=30_000)
    expect(banner).to_contain_text(ZIMAGE_REPO)
    expect(banner).to_contain_text("asked from the hub on first use")
    expect(banner).to_be_in_viewport(ratio=1)
    _not_clipped(banner)
    _save(page, "first-run-notice.png")

    page.locator("#txt2img textarea").first.fill("a red fox in the snow")
    page.locator("#txt2img-generate").click()
    toast = page.locator(".toast-body.error")
    expect(toast).to_be_visible(timeout=30_000)
    expect(banner).to_contain_text(f"the hub at {hole.url} did not answer within 2 s", timeout=30_000)
    expect(banner).to_contain_text(f"hf download {ZIMAGE_REPO} --local-dir DIR")
    expect(banner).to_contain_text("--tiny")

    page.locator(".toast-body.error .toast-close").click()  # the toast stays until closed: close it
    expect(toast).to_have_count(0)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("The models could not load.")
    expect(banner).to_be_in_viewport(ratio=1)  # scrolled up to it: Generate was below the fold
    _not_clipped(banner)
    _save(page, "first-run.png")


def test_the_first_download_shows_its_size_and_progress_on_the_page(fake_hub_page):
    page = fake_hub_page
    expect(page.locator("#model-status")).to_contain_text(ZIMAGE_REPO, timeout=30_000)
    page.locator("#txt2img textarea").first.fill("a red fox in the snow")
    for label in ("Height", "Width"):
        box = page.locator("#txt2img").get_by_label(f"number input for {label}")
        box.fill("64")
        box.press("Enter")
    page.locator("#txt2img-generate").click()
    tab = page.locator("#txt2img")
    announced = tab.get_by_text(re.compile(rf"Downloading {ZIMAGE_REPO}: [0-9.]+ MB in \d+ files"))
    expect(announced.first).to_be_visible(timeout=60_000)
    moving = tab.get_by_text(re.compile(r"[1-9][0-9.]*[kM]?/[0-9.]+M B"))  # bytes so far / total, past 0
    expect(moving.first).to_be_visible(timeout=60_000)
    page.evaluate("window.scrollTo(0, 0)")  # up to the result (today's layout has Generate below the fold)
    expect(announced.first).to_be_in_viewport()
    _save_while_shown(page, announced, "first-run-download.png")
    expect(page.locator("#txt2img img").first).to_be_visible(timeout=120_000)
    expect(page.locator("#model-status")).not_to_contain_text(ZIMAGE_REPO)  # downloaded now
