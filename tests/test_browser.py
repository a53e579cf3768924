"""A person's path through the page: type a prompt, click Generate, see an image.

Uses the Python playwright package with Debian's chromium (no browser download). Skipped where
chromium is missing, except in CI (CI=true), where `.ci/run` installs it and a skip would hide a gap.
"""

import os
import re
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError("chromium is missing in CI: .ci/run must install Debian's chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from ui import build_demo  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(settings, manager, tmp_path_factory):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        yield page
        browser.close()
    demo.close()


def _set_size(page, tab, size):
    for label in ("Height", "Width"):
        box = page.locator(f"#{tab}").get_by_label(f"number input for {label}")
        box.fill(str(size))
        box.press("Enter")


def test_txt2img_in_the_browser(page, tmp_path):
    expect(page.locator("#tiny-banner")).to_contain_text("Offline tiny models in use")
    _set_size(page, "txt2img", 128)
    page.locator("#txt2img textarea").first.fill("a red fox in the snow")
    page.locator("#txt2img-generate").click()
    image = page.locator("#txt2img img").first
    expect(image).to_be_visible(timeout=60_000)
    page.screenshot(path=str(tmp_path / "txt2img.png"))
    seed = page.locator("#txt2img").get_by_label("Seed used")
    expect(seed).not_to_have_value("")
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        shutil.copy(tmp_path / "txt2img.png", os.path.join(artifacts, "browser-txt2img.png"))


def test_vl_tab_in_the_browser(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (128, 128), (200, 40, 40)).save(tmp_path / "ref.png")
    page.get_by_role("tab", name="VL conditioning").click()
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "ref.png"))
    expect(page.locator("#vl-references")).to_contain_text("ref.png")
    _set_size(page, "vl", 64)
    page.locator("#vl textarea").first.fill("a cat in the style of the reference")
    page.locator("#vl-generate").click()
    expect(page.locator("#vl-effective-alpha")).to_contain_text("VL share 0.", timeout=60_000)
    expect(page.locator("#vl-token-map")).to_contain_text("full")
    expect(page.locator("#vl img").first).to_have_attribute("src", re.compile(r"-vl-\d+(-\d+)?\.png$"))


def test_rewrite_then_use_in_txt2img(page):
    page.get_by_role("tab", name="Prompt rewriting").click()
    page.locator("#rewrite textarea").first.fill("a fox")
    page.locator("#rewrite").get_by_text("Sampling", exact=True).click()  # open the accordion
    page.locator("#rewrite").get_by_label("number input for Max new tokens").fill("16")
    page.locator("#rewrite-go").click()
    result = page.locator("#rewrite-result textarea")
    expect(result).not_to_have_value("", timeout=60_000)
    result.fill("a fox, rewritten by hand")
    page.locator("#use-in-txt2img").click()
    expect(page.get_by_role("tab", name="txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img textarea").first).to_have_value("a fox, rewritten by hand")


def test_send_to_img2img_and_restore_from_history(page):
    page.get_by_role("tab", name="txt2img").click()
    _set_size(page, "txt2img", 64)
    page.locator("#txt2img textarea").first.fill("first prompt")
    page.locator("#txt2img-generate").click()
    expect(page.locator("#history img")).not_to_have_count(0, timeout=60_000)
    page.locator("#txt2img-to-img2img").click()
    expect(page.get_by_role("tab", name="img2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img img").first).to_have_attribute("src", re.compile(r"-txt2img-\d+(-\d+)?\.png$"))
    # change the txt2img prompt, then restore the first result from the history gallery
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img textarea").first.fill("something else")
    page.locator("#history img").first.click()  # newest first: the "first prompt" result
    expect(page.get_by_role("tab", name="txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img textarea").first).to_have_value("first prompt")


def test_png_info_loads_parameters_into_their_tab(page, manager, tmp_path):
    from llm_dit.generate import img2img
    from llm_dit.request import GenerationRequest
    from PIL import Image

    made = img2img(manager, GenerationRequest(prompt="from png info", height=64, width=64, strength=0.6),
                   Image.new("RGB", (64, 64)))
    path = made.save(tmp_path)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    expect(page.get_by_role("tab", name="img2img")).to_have_attribute("aria-selected", "true", timeout=30_000)
    expect(page.locator("#img2img textarea").first).to_have_value("from png info")
    page.get_by_role("tab", name="PNG info").click()
    expect(page.locator("#pnginfo-report")).to_contain_text("Loaded into img2img")


def test_small_sweep_in_the_browser(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (128, 128), (90, 40, 160)).save(tmp_path / "ref.png")
    page.get_by_role("tab", name="VL conditioning").click()
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "ref.png"))
    _set_size(page, "vl", 64)
    page.locator("#vl textarea").first.fill("a sweep subject")
    page.get_by_role("tab", name="Blend comparison").click()
    page.locator("#compare").get_by_label("X axis").click()
    page.get_by_role("option", name="alpha", exact=True).click()
    expect(page.locator("#compare").get_by_label("X values")).to_have_value("0, 0.3, 0.6")
    page.locator("#compare").get_by_label("X values").fill("0, 0.5")
    page.locator("#compare-run").click()
    expect(page.locator("#compare-progress")).to_contain_text("2 / 2 cells", timeout=60_000)
    expect(page.locator("#compare-grids img").first).to_have_attribute("src", re.compile(r"-grid0\.png$"))
    expect(page.locator("#compare-table")).to_contain_text("effective_alpha")


def test_stop_after_this_cell_keeps_the_finished_ones(page):
    page.get_by_role("tab", name="VL conditioning").click()
    _set_size(page, "vl", 768)  # slow enough cells (~1 s each on a CPU) to stop in the middle
    page.get_by_role("tab", name="Blend comparison").click()
    page.locator("#compare").get_by_label("X values").fill(", ".join(str(i / 20) for i in range(12)))
    page.locator("#compare-run").click()
    expect(page.locator("#compare-progress")).to_contain_text("1 / 12 cells", timeout=60_000)
    page.locator("#compare-stop").click()
    expect(page.locator("#compare-progress")).to_contain_text("stopped", timeout=60_000)
    done = int(page.locator("#compare-progress").inner_text().split("/")[0].strip(" *"))
    assert 1 <= done < 12
