"""In the browser: the Status tab's tables read as written ("MB", not "Mʙ") and its actions say
what they did."""

import os

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)


def _fonts(page, selector: str) -> list[str]:
    """The font faces Chromium actually drew the element's text with (fallbacks included)."""
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        return [f["postScriptName"] for f in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]]
    finally:
        cdp.detach()


def test_bold_table_headers_are_drawn_in_one_face(page):
    """Gradio's SemiBold Source Sans Pro holds only "A", "B" and the space: headers took those
    from it and the rest from a system font ("Mʙ", "CUDᴀ"). Every letter now comes from one face."""
    page.get_by_role("tab", name="Status").click()
    header = page.locator("#status-models th").last
    expect(header).to_have_text("MB")
    expect(page.locator("#status-timeline th").last).to_have_text("CUDA peak MB")
    assert header.evaluate("e => getComputedStyle(e).fontWeight") in ("600", "700", "bold")
    for selector in ("#status-models th:last-child", "#status-timeline th:last-child", "#status-hosting strong"):
        assert len(_fonts(page, selector)) == 1, (selector, _fonts(page, selector))


def test_status_actions_confirm_what_they_did(page):
    page.get_by_role("tab", name="Status").click()
    page.locator("#status-clear").click()
    done = page.locator("#status-done")
    expect(done).to_contain_text("Cleared the VL-extraction and prompt caches at")
    expect(page.locator("#status-caches")).to_contain_text("VL extractions: 0 of")
    expect(done).to_be_in_viewport()
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, "status.png"))
