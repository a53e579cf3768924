"""In the browser: a reload keeps each tab's form (prompt, size, uploads); "Reset to defaults" puts
the tab back. Screenshot: $TEST_ARTIFACTS/keep-reloaded.png."""

import os

from playwright.sync_api import expect

from .test_browser import _set_size, page  # noqa: F401 - the same page fixture (and chromium skip rule)


def test_a_reload_keeps_the_form_and_reset_restores_the_defaults(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (10, 200, 90)).save(tmp_path / "kept-reference.png")
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img textarea").first.fill("a prompt that survives a reload")
    _set_size(page, "txt2img", 512)
    page.get_by_role("tab", name="VL conditioning").click()
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "kept-reference.png"))
    expect(page.locator("#vl-references")).to_contain_text("kept-reference.png")
    page.wait_for_timeout(500)  # the last change reaches the browser's storage
    page.reload()
    tab = page.locator("#txt2img")
    expect(tab.locator("textarea").first).to_have_value("a prompt that survives a reload", timeout=30_000)
    for label in ("Width", "Height"):
        expect(tab.get_by_label(f"number input for {label}")).to_have_value("512")
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, "keep-reloaded.png"))
    page.get_by_role("tab", name="VL conditioning").click()
    expect(page.locator("#vl-references")).to_contain_text("kept-reference.png")
    page.get_by_role("tab", name="txt2img").click()
    tab.get_by_role("button", name="Reset to defaults").click()
    expect(tab.locator("textarea").first).to_have_value("")
    expect(tab.get_by_label("number input for Width")).to_have_value("1024")
    expect(page.locator("#vl-references")).to_contain_text("kept-reference.png")  # the other tab keeps its own
