"""In the browser: VL fields that cannot matter are greyed out, and come back when they do."""

import re

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)


def test_ignored_fields_are_greyed_out_and_come_back(page):
    page.get_by_role("tab", name="VL conditioning").click()
    tab = page.locator("#vl")
    for group in ("VL extraction", "Composition"):  # research knobs start collapsed
        tab.get_by_role("button", name=re.compile(f"^{group}")).click()
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
