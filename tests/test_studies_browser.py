"""In the browser: the Studies tab lists a finished study, opens it and shows its table and plot."""

import os
from pathlib import Path

from playwright.sync_api import expect

from llm_dit.studies.runner import run_study
from llm_dit.studies.study import load_study

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)
from .test_study import study_file


def _choose(page, box, name):
    box.click()
    page.locator(f"#{box.get_attribute('aria-controls')}").get_by_role("option", name=name, exact=True).click()


def test_the_studies_tab_opens_a_finished_study(page, manager, settings, tmp_path):
    folder = Path(settings.output_dir) / "studies" / "lighthouse"
    for _ in run_study(manager, load_study(study_file(tmp_path)), folder):
        pass
    page.get_by_role("tab", name="Studies").click()
    page.locator("#studies-refresh").click()
    expect(page.locator("#studies-list")).to_contain_text("lighthouse")
    expect(page.locator("#studies-list")).to_contain_text("8 / 8")
    _choose(page, page.locator("#studies-chosen").get_by_label("Study", exact=True), "lighthouse")
    page.locator("#studies-open").click()
    expect(page.locator("#studies-info")).to_contain_text("finished")
    table = page.locator("#studies-table")
    expect(table).to_contain_text("ssim_mean")
    expect(table).to_contain_text("house.png")
    expect(table).to_contain_text("noir.png")
    plot = page.locator("#studies-plot img")  # gradio shows a matplotlib figure as an image
    expect(plot).to_be_visible(timeout=30_000)
    assert plot.evaluate("e => e.naturalWidth") > 300
    folder_name = os.environ.get("TEST_ARTIFACTS")
    if folder_name:
        os.makedirs(folder_name, exist_ok=True)
        page.screenshot(path=os.path.join(folder_name, "studies-tab.png"), full_page=True)
    first = plot.get_attribute("src")
    _choose(page, page.locator("#studies-value").get_by_label("Value"), "ssim")  # another value: another plot
    expect(page.locator("#studies-plot img")).not_to_have_attribute("src", first, timeout=30_000)


def test_the_studies_tab_runs_an_uploaded_study_file(page, tmp_path):
    """A study file without a prompt (as the presets are) runs with the tab's Prompt; afterwards the
    new study is listed, chosen and opened (its grids shown)."""
    study = study_file(tmp_path)
    study.write_text(study.read_text().replace('prompt = "a lighthouse"\n', ""))
    page.get_by_role("tab", name="Studies").click()
    page.get_by_text("Run a study file").click()
    page.locator("#studies-file input[type=file]").set_input_files(str(study))
    page.locator("#studies-references input[type=file]").set_input_files(
        [str(tmp_path / "refs" / "house.png"), str(tmp_path / "refs" / "noir.png")])
    stop = page.locator("#studies-stop")
    expect(stop).to_be_hidden()  # nothing runs
    page.locator("#studies-run").click()
    expect(page.get_by_text("The study sets no prompt").first).to_be_visible(timeout=30_000)  # on the file
    expect(stop).to_be_hidden()  # refused: no Stop left behind
    page.locator("#studies-prompt textarea").fill("a lighthouse")
    page.locator("#studies-run").click()
    expect(page.locator("#studies-info")).to_contain_text("finished · 8 / 8 cells", timeout=180_000)
    expect(page.locator("#studies-list")).to_contain_text("-study-")  # the list, with the new study in it
    expect(page.locator("#studies-grids img").first).to_be_visible()
    expect(stop).to_be_hidden()
