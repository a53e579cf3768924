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

from ui import build_demo, launch_options  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(settings, manager, tmp_path_factory):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
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
    expect(page.locator("#vl-references").get_by_role("cell", name="ref.png")).to_be_visible()
    _set_size(page, "vl", 64)
    page.locator("#vl textarea").first.fill("a cat in the style of the reference")
    page.locator("#vl-generate").click()
    expect(page.locator("#vl-effective-alpha")).to_contain_text("VL share 0.", timeout=60_000)
    expect(page.locator("#vl-token-map")).to_contain_text("full")
    expect(page.locator("#vl-result img").first).to_have_attribute("src", re.compile(r"-vl-\d+(-\d+)?\.png$"))


def test_field_messages_survive_a_preset_and_steps_zero_is_refused(page):
    """After a preset rewrote the controls (gradio keeps per-session copies of them), a bad seed
    still gets our message, painted next to the Seed field; so does Steps 0 typed by hand."""
    page.get_by_role("tab", name="txt2img").click()
    tab = page.locator("#txt2img")
    tab.get_by_label("Preset", exact=True).click()
    page.get_by_role("option", name="Turbo fast (4 steps)").click()
    expect(tab.get_by_label("number input for Steps")).to_have_value("4")
    tab.locator("textarea").first.fill("a red fox")
    tab.get_by_label("Random seed").uncheck()
    seed = tab.get_by_label("Seed", exact=True)
    expect(seed).to_have_value("0")  # unticking writes 0 into the box: type only after it landed
    seed.fill("-5")
    seed.press("Enter")
    page.locator("#txt2img-generate").click()
    expect(tab).to_contain_text("seed=-5 is out of range: use -1 (random) or 0 to 2**64-1.")
    seed.fill("3")
    seed.press("Enter")
    steps = tab.get_by_label("number input for Steps")
    steps.fill("0")
    steps.press("Enter")
    steps.blur()
    page.wait_for_timeout(300)
    shown = steps.input_value()
    page.locator("#txt2img-generate").click()
    if shown == "0":  # the box kept the 0: our message must say why it cannot run
        expect(tab).to_contain_text("num_inference_steps=0 is out of range")
    else:  # the box corrected itself: what it shows is what runs
        expect(tab.get_by_label("Seed used")).to_have_value("3", timeout=60_000)
        expect(page.locator("#txt2img")).to_contain_text(f'"num_inference_steps": {shown}')
    steps.fill("8")
    steps.press("Enter")
    tab.get_by_label("Random seed").check()


def test_rewrite_then_use_in_txt2img(page):
    page.get_by_role("tab", name="Prompt rewriting").click()
    # accordions open before anything is typed (test_preview_browser: a value typed within ms of an
    # accordion opening can be lost)
    page.locator("#rewrite").get_by_text("Sampling", exact=True).click()
    page.locator("#rewrite textarea").first.fill("a fox")
    page.locator("#rewrite").get_by_label("number input for Max new tokens").fill("16")
    page.locator("#rewrite-go").click()
    result = page.locator("#rewrite-result textarea")
    expect(page.locator("#rewrite-metadata")).to_contain_text("a fox", timeout=60_000)  # the reply is complete:
    expect(result).not_to_have_value("")  # an edit made while it streams is overwritten by the next update
    result.fill("a fox, rewritten by hand")
    page.locator("#use-in-txt2img").click()
    expect(page.get_by_role("tab", name="txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img textarea").first).to_have_value("a fox, rewritten by hand")


def test_send_to_img2img_and_restore_from_history(page):
    page.get_by_role("tab", name="txt2img").click()
    _set_size(page, "txt2img", 64)
    page.locator("#txt2img textarea").first.fill("first prompt")
    page.locator("#txt2img-generate").click()
    expect(page.locator("#history")).to_contain_text("first prompt", timeout=60_000)  # this result, not an earlier one
    page.locator("#txt2img-to-img2img").click()
    expect(page.get_by_role("tab", name="img2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#img2img img").first).to_have_attribute("src", re.compile(r"-txt2img-\d+(-\d+)?\.png$"))
    # the prompt and the size came along: the next click runs the same picture at the same size
    expect(page.locator("#img2img textarea").first).to_have_value("first prompt")
    for label in ("Height", "Width"):
        expect(page.locator("#img2img").get_by_label(f"number input for {label}")).to_have_value("64")
    # change the txt2img prompt, then restore the first result from the history gallery
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img textarea").first.fill("something else")
    page.locator("#history img").first.click()  # newest first: the "first prompt" result
    expect(page.get_by_role("tab", name="txt2img")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#txt2img textarea").first).to_have_value("first prompt")
    # the seed controls agree with what will run: the restored seed, "Random seed" off
    tab = page.locator("#txt2img")
    expect(tab.get_by_label("Random seed")).not_to_be_checked()
    expect(tab.get_by_label("Seed", exact=True)).to_have_value(tab.get_by_label("Seed used").input_value())
    tab.get_by_label("Random seed").check()


def test_png_info_loads_parameters_into_their_tab(page, manager, tmp_path):
    from llm_dit.pipelines.generate import img2img
    from llm_dit.core.request import GenerationRequest
    from PIL import Image

    made = img2img(manager, GenerationRequest(prompt="from png info", height=64, width=64, strength=0.6),
                   Image.new("RGB", (64, 64)))
    path = made.save(tmp_path)
    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    expect(page.locator("#pnginfo-report")).to_contain_text("(img2img)", timeout=30_000)  # read, not loaded yet
    page.locator("#pnginfo-load").click()
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
    expect(page.locator("#compare-grids img").first).to_have_attribute("src", re.compile(r"sweep-00\.png$"))
    expect(page.locator("#compare-table")).to_contain_text("effective_alpha")


def test_stop_after_this_cell_keeps_the_finished_ones(page):
    """A 4x4 sweep of 384² cells (a grid of 1536² at most: a 12-cell row of 768² cells made a
    9216 px wide grid per update, which a busy browser fell behind on). Stop is pressed right after
    Run: whichever request the server handles first, the sweep stops after the cell it is on (both
    carry the page's click time: ui/stops.py)."""
    page.get_by_role("tab", name="VL conditioning").click()
    _set_size(page, "vl", 384)
    page.get_by_role("tab", name="Blend comparison").click()
    tab = page.locator("#compare")
    tab.get_by_label("X values").fill("0, 0.2, 0.4, 0.6")
    tab.get_by_label("Y axis").click()
    page.get_by_role("option", name="strength", exact=True).click()
    tab.get_by_label("Y values").fill("0.6, 0.7, 0.8, 0.9")
    page.locator("#compare-run").click()
    page.locator("#compare-stop").click()
    expect(page.locator("#compare-progress")).to_contain_text("stopped", timeout=60_000)
    done = int(page.locator("#compare-progress").inner_text().split("/")[0].strip(" *"))
    assert 1 <= done < 16


def test_every_reference_thumbnail_and_its_weight_are_in_view(page, tmp_path):
    """Two references, one with a long name: each picture and its weight show whole inside the
    thumbnails' box without scrolling it (the second was cut off below it, with no scroll bar)."""
    from PIL import Image

    names = ["a-style-reference-with-a-rather-long-file-name.png", "noir.png"]
    for name, colour in zip(names, [(200, 40, 40), (20, 20, 20)]):
        Image.new("RGB", (128, 128), colour).save(tmp_path / name)
    page.get_by_role("tab", name="VL conditioning").click()
    clear = page.locator("#vl-references").get_by_role("button", name="Clear")
    if clear.count():  # earlier tests' references
        clear.click()
    expect(page.locator("#vl-reference-thumbs figure")).to_have_count(0)
    page.locator("#vl-references input[type=file]").set_input_files([str(tmp_path / n) for n in names])
    box = page.locator("#vl-reference-thumbs .reference-thumbs")
    figures = box.locator("figure")
    expect(figures.filter(has_text="noir.png")).to_have_count(1, timeout=30_000)
    shown = page.locator("#vl-reference-thumbs")  # the component's box: what overflows it is cut off
    for name in names:
        figure = figures.filter(has=page.locator(f'img[alt^="{name}"]')).last
        outer = shown.bounding_box()
        for part in (figure.locator("img"), figure.locator("figcaption")):
            inner = part.bounding_box()
            inside = (outer["y"] <= inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
                      and outer["x"] <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1)
            assert inside, f"{name}: {inner} is not inside the thumbnails' box {outer}"
        expect(figure.locator("figcaption")).to_contain_text("weight")
    if os.environ.get("TEST_ARTIFACTS"):
        page.screenshot(path=os.path.join(os.environ["TEST_ARTIFACTS"], "vl-reference-thumbs.png"))
