"""In the browser: VL fields that cannot matter are greyed out, and come back when they do."""

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

from .test_browser import ARGS  # noqa: E402


@pytest.fixture(scope="module")
def page(settings, manager):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        yield page
        browser.close()
    demo.close()


def test_ignored_fields_are_greyed_out_and_come_back(page):
    page.get_by_role("tab", name="VL conditioning").click()
    tab = page.locator("#vl")
    vl_text = tab.get_by_role("textbox", name=re.compile(r"^VL text( |$)"))
    expect(vl_text).to_be_disabled()  # the default: VL reads the prompt
    tab.get_by_label("Give VL the prompt").uncheck()
    expect(vl_text).to_be_enabled(timeout=20_000)
    token_mode = tab.get_by_role("combobox", name="Token selection")
    expect(token_mode).to_be_enabled()
    composition = tab.get_by_role("combobox", name="VL composition")
    composition.click()
    page.get_by_role("option", name="intra_vl").click()
    expect(token_mode).to_be_disabled(timeout=20_000)
    expect(tab).to_contain_text("picks its own tokens")
