"""In the browser (1400x1000): a refused click is seen where the person looks, whatever the field's
place (another tab, a collapsed section, below the fold), and a running job has a Stop. Screenshots
go to $TEST_ARTIFACTS/guard-*.png."""

import os
import re
from pathlib import Path

from playwright.sync_api import expect

from .test_browser import _set_size, page  # noqa: F401 - the same page fixture (and chromium skip rule)

WIDTH, HEIGHT = 1400, 1000


def _shot(page, name):
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"guard-{name}.png"))


def _in_window(locator, name):
    """Wholly inside the window (waiting for the page's scroll to end)."""
    expect(locator, f"{name} is not wholly in the {WIDTH}x{HEIGHT} window").to_be_in_viewport(ratio=1)


def _overlap(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def _open(page, name):
    page.get_by_role("tab", name=name, exact=True).click()
    page.evaluate("window.scrollTo(0, 0)")


def test_a_sweep_without_a_reference_shows_the_vl_tabs_reference_field(page):
    _open(page, "VL conditioning")
    page.locator("#vl textarea").first.fill("a sweep with no reference")
    _open(page, "Blend comparison")
    page.locator("#compare-run").click()
    toast = page.locator(".toast-body").filter(has_text="references: no reference image")
    expect(toast).to_be_visible()
    _in_window(toast, "the toast")
    expect(page.get_by_role("tab", name="VL conditioning")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#vl-references")).to_have_class(re.compile(r"\brefused\b"))
    _in_window(page.locator("#vl-references"), "the reference field")
    _shot(page, "sweep-no-reference")
    expect(page.locator("#compare-refusal")).to_contain_text("Reference image(s) on the VL conditioning tab")


def test_a_bad_lora_opens_its_collapsed_section(page):
    _open(page, "txt2img")
    tab = page.locator("#txt2img")
    tab.locator("textarea").first.fill("a fox")
    loras = tab.get_by_label("LoRAs")
    expect(loras).to_be_hidden()  # its section starts collapsed
    page.locator("#txt2img").get_by_text("Sampling, LoRA, attention").click()
    loras.fill("no-such-lora.safetensors:1.0")
    page.locator("#txt2img").get_by_text("Sampling, LoRA, attention").click()  # collapsed again
    expect(loras).to_be_hidden()
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#txt2img-generate").click()
    message = page.locator("#txt2img-refusal")
    expect(message).to_contain_text("loras")
    expect(message).to_contain_text("in Sampling, LoRA, attention (opened)")
    # the field is ~1,300 px under the button: scrolled to it, the message is the toast
    _in_window(page.locator(".toast-body").filter(has_text="no-such-lora"), "the toast")
    expect(loras).to_be_visible()
    expect(tab.locator(".refused")).to_contain_text("LoRAs")
    _in_window(tab.locator(".refused"), "the LoRA field")
    _shot(page, "lora")
    loras.fill("")


def test_a_sweep_over_the_cell_limit_opens_the_cell_limit(page, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (90, 40, 160)).save(tmp_path / "ref.png")
    _open(page, "VL conditioning")
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "ref.png"))
    page.locator("#vl textarea").first.fill("a hundred seeds")
    _open(page, "Blend comparison")
    tab = page.locator("#compare")
    tab.get_by_label("X axis").click()
    page.get_by_role("option", name="seed", exact=True).click()
    tab.get_by_label("X values").fill(", ".join(str(i) for i in range(100)))
    cell_limit = tab.get_by_label("Cell limit")
    expect(cell_limit).to_be_hidden()
    page.locator("#compare-run").click()
    message = page.locator("#compare-refusal")
    expect(message).to_contain_text("cell_limit: the sweep has 100 cells")
    _in_window(message, "the message beside Run sweep")
    expect(cell_limit).to_be_visible()
    _in_window(cell_limit, "the Cell limit field")
    _shot(page, "cell-limit")
    tab.get_by_label("X values").fill("0")


def test_an_inline_message_does_not_cover_its_field(page):
    _open(page, "txt2img")
    tab = page.locator("#txt2img")
    tab.locator("textarea").first.fill("a fox")
    width = tab.get_by_label("number input for Width")
    width.fill("1000")
    width.press("Enter")
    page.locator("#txt2img-generate").click()
    inline = tab.locator(".validation-error").filter(has_text="width=1000 is not a multiple of 16")
    expect(inline).to_be_visible()
    label = tab.get_by_test_id("block-info").filter(has_text="Width").first
    for name, box in (("the Width input", width.bounding_box()), ("the Width label", label.bounding_box())):
        assert not _overlap(inline.bounding_box(), box), f"the message covers {name}"
    _shot(page, "inline")
    width.fill("1024")
    width.press("Enter")


def test_stop_ends_a_long_txt2img_and_saves_nothing(page, settings):
    """Stop shows only while the job runs; it ends the job at its next step; no PNG is saved. A
    small run after it then completes (the pipeline is free again): the only new PNG is its own."""
    outputs = Path(settings.output_dir)
    before = set(outputs.rglob("*.png"))
    _open(page, "txt2img")
    tab = page.locator("#txt2img")
    stop = page.locator("#txt2img-stop")
    expect(stop).to_be_hidden()
    tab.locator("textarea").first.fill("a long job")
    _set_size(page, "txt2img", 1024)
    steps = tab.get_by_label("number input for Steps")
    steps.fill("100")
    steps.press("Enter")
    page.locator("#txt2img-generate").click()
    expect(stop).to_be_visible()
    _shot(page, "stop-running")
    stop.click()
    expect(page.locator("#txt2img-refusal")).to_contain_text("Stopped")
    expect(stop).to_be_hidden()
    _shot(page, "stopped")
    steps.fill("2")
    steps.press("Enter")
    _set_size(page, "txt2img", 64)
    page.locator("#txt2img-generate").click()
    expect(tab.get_by_label("Seed used")).to_be_visible(timeout=60_000)
    expect(stop).to_be_hidden(timeout=60_000)
    new = set(outputs.rglob("*.png")) - before
    assert len(new) == 1, f"the stopped job saved something: {sorted(new)}"
    steps.fill("8")
    steps.press("Enter")


def test_the_size_sliders_end_at_the_dits_maximum(page, manager):
    """The tiny DiT's position axes reach 2048 px: the sliders end there."""
    from llm_dit.runtime.limits import dit_max_size

    most = dit_max_size(manager.zimage_source)
    assert most == (2048, 2048)  # the tiny config's axes_lens (128 tokens of 16 px), below the declared 4096
    _open(page, "txt2img")
    tab = page.locator("#txt2img")
    for label in ("Width", "Height"):
        expect(tab.get_by_label(f"range slider for {label}")).to_have_attribute("max", "2048")
    _shot(page, "size")


def test_stop_hides_when_the_job_fails(page, manager, monkeypatch):
    """A job that passes its checks and then fails (here the pipeline cannot load) leaves no Stop
    behind: the error toast says what happened, and the next click works."""
    from llm_dit.core.devices import ModelLoadError

    def broken():
        raise ModelLoadError("transformer: cannot load (a test's broken checkpoint)")

    _open(page, "txt2img")
    tab = page.locator("#txt2img")
    stop = page.locator("#txt2img-stop")
    tab.locator("textarea").first.fill("a job that fails")
    _set_size(page, "txt2img", 64)
    monkeypatch.setattr(manager, "pipeline", broken)
    page.locator("#txt2img-generate").click()
    expect(page.get_by_text("a test's broken checkpoint").first).to_be_visible(timeout=30_000)
    expect(stop).to_be_hidden(timeout=10_000)
    _shot(page, "failed-job")
    monkeypatch.undo()
