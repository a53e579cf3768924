"""The history as a person uses it: it outlives a page reload, and items can be removed."""

import os
import shutil

from playwright.sync_api import expect

from tests.test_browser import _set_size, page  # noqa: F401 - the shared page fixture


def _generate(page, prompt):
    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img textarea").first.fill(prompt)
    before = page.locator("#history img").count()
    page.locator("#txt2img-generate").click()
    expect(page.locator("#history img")).to_have_count(before + 1, timeout=60_000)


def test_history_survives_a_reload_and_items_can_be_removed(page, tmp_path):
    page.get_by_role("tab", name="txt2img").click()
    expect(page.locator("#txt2img").get_by_label("Seed used")).to_have_count(0)  # no run yet: no seed shown
    _set_size(page, "txt2img", 64)
    _generate(page, "kept across reloads")
    expect(page.locator("#txt2img").get_by_label("Seed used")).not_to_have_value("")
    _generate(page, "to be removed")
    page.reload()
    gallery = page.locator("#history img")
    expect(gallery).to_have_count(2, timeout=30_000)
    expect(page.locator("#history")).to_contain_text("to be removed")
    page.locator("#history").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "history.png"))
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        shutil.copy(tmp_path / "history.png", os.path.join(artifacts, "history-after-reload.png"))
    # a restore after the reload still fills the tab; then that item is removed
    remove = page.locator("#history-remove")
    expect(remove).to_be_disabled()
    gallery.first.click()  # newest first
    expect(page.locator("#txt2img textarea").first).to_have_value("to be removed")
    # the history is below the tabs: the page scrolls up to the tab just filled, Generate in view
    expect(page.locator("#txt2img-generate")).to_be_in_viewport()
    assert page.locator("#txt2img-generate").bounding_box()["y"] >= 0
    remove.click()
    expect(gallery).to_have_count(1)
    expect(page.locator("#history")).not_to_contain_text("to be removed")
    page.reload()
    expect(page.locator("#history img")).to_have_count(1, timeout=30_000)
    expect(page.locator("#history")).to_contain_text("kept across reloads")
    page.locator("#history-clear").click()
    expect(page.locator("#history img")).to_have_count(0)
    page.reload()
    expect(page.locator("#txt2img-generate")).to_be_visible(timeout=30_000)
    expect(page.locator("#history img")).to_have_count(0)
