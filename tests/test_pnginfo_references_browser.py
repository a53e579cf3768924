"""In the browser: PNG info -> VL conditioning brings the reference images back when the app still
has them (found by the sha256 the PNG records), or names the missing one and marks the reference
field; the references show as thumbnails with their weights. Screenshots: $TEST_ARTIFACTS/refs-*.png."""

import os
import re
import shutil

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and chromium skip rule)


def _shot(page, name):
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"refs-{name}.png"))


def _vl_png(manager, reference, folder):
    from llm_dit.core.request import VLRequest
    from llm_dit.pipelines.recipe import vl_generate

    request = VLRequest(prompt="a reference from png info", height=64, width=64, seed=5, alpha=0.5)
    return vl_generate(manager, request, [str(reference)]).save(folder)


def _load_png(page, path):
    page.get_by_role("tab", name="PNG info").click()
    clear = page.locator("#pnginfo-file").get_by_role("button", name="Clear")
    if clear.count():  # an earlier PNG is still there
        clear.first.click()
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    expect(page.locator("#pnginfo-load")).to_be_visible(timeout=30_000)
    page.locator("#pnginfo-load").click()
    expect(page.get_by_role("tab", name="VL conditioning")).to_have_attribute("aria-selected", "true")


def test_png_info_loads_the_references_the_app_still_has(page, manager, settings, tmp_path):
    from PIL import Image

    reference = tmp_path / "kept-style.png"
    Image.new("RGB", (64, 64), (20, 140, 200)).save(reference)
    made = _vl_png(manager, reference, tmp_path)
    kept = os.path.join(settings.output_dir, "kept-style.png")  # the app still has it: in its output folder
    shutil.copy(reference, kept)
    _load_png(page, made)
    expect(page.locator("#vl textarea").first).to_have_value("a reference from png info")
    expect(page.locator("#vl-references")).to_contain_text("kept-style", timeout=30_000)
    thumbs = page.locator("#vl-reference-thumbs img")
    expect(thumbs).to_have_count(1)
    expect(page.locator("#vl-reference-thumbs")).to_contain_text("kept-style.png · weight 1")
    expect(thumbs).to_have_js_property("naturalWidth", 64)  # the picture itself, served
    _shot(page, "loaded")
    os.remove(kept)


def test_png_info_names_a_missing_reference_and_marks_the_field(page, manager, tmp_path):
    from PIL import Image

    reference = tmp_path / "gone-style.png"
    Image.new("RGB", (64, 64), (230, 70, 10)).save(reference)
    made = _vl_png(manager, reference, tmp_path)  # the reference was never in the app's folders
    _load_png(page, made)
    expect(page.locator("#vl-references")).to_have_class(re.compile(r"\brefused\b"))
    _shot(page, "missing")
    page.get_by_role("tab", name="PNG info").click()
    expect(page.locator("#pnginfo-report")).to_contain_text("Missing reference 1")
    expect(page.locator("#pnginfo-report")).to_contain_text("Upload it again in Reference image(s)")
