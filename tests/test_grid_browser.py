"""In the browser: a 3x3 sweep's grid is seen whole, its labels readable and unclipped; the
table's headers break between words only."""

import io
import os

from PIL import Image
from playwright.sync_api import expect

from llm_dit.studies.grid import _font, layout

from .test_browser import _set_size, page  # noqa: F401 - the same page fixture (and the same chromium skip rule)
from .test_grid import alone, ink

VIEWPORT = {"width": 1400, "height": 1000}


def _choose(page, box, name):
    """Pick `name` in a gradio dropdown, among its own options only."""
    box.click()
    page.locator(f"#{box.get_attribute('aria-controls')}").get_by_role("option", name=name, exact=True).click()


def _inside(inner: dict, outer: dict) -> bool:
    return (outer["x"] - 1 <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
            and outer["y"] - 1 <= inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1)


def _save(page, name):
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"))


def test_a_3x3_grid_is_seen_whole_with_readable_labels(page, tmp_path):
    Image.new("RGB", (128, 128), (90, 40, 160)).save(tmp_path / "ref.png")
    page.get_by_role("tab", name="VL conditioning").click()
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "ref.png"))
    _set_size(page, "vl", 64)
    page.locator("#vl textarea").first.fill("a grid subject")
    page.get_by_role("tab", name="Blend comparison").click()
    tab = page.locator("#compare")
    _choose(page, tab.get_by_label("X axis"), "strength")
    tab.get_by_label("X values").fill("0.7, 0.8, 0.9")
    _choose(page, tab.get_by_label("Y axis"), "alpha")
    tab.get_by_label("Y values").fill("0, 0.3, 0.6")
    page.locator("#compare-run").click()
    expect(page.locator("#compare-progress")).to_contain_text("9 / 9 cells", timeout=120_000)

    # the grid is shown large, whole: object-fit contain, inside the gallery and the viewport
    shown = page.locator("#compare-grids .media-button img")
    expect(shown).to_be_visible()
    caption = page.locator("#compare-grids .caption")
    expect(caption).to_have_text("strength × alpha (3 × 3)")
    shown.scroll_into_view_if_needed()
    natural = shown.evaluate("e => [e.naturalWidth, e.naturalHeight, getComputedStyle(e).objectFit]")
    box, gallery = shown.bounding_box(), page.locator("#compare-grids").bounding_box()
    assert natural[2] == "contain"
    assert _inside(box, gallery) and _inside(box, {"x": 0, "y": 0, **VIEWPORT}), (box, gallery)
    scale = min(box["width"] / natural[0], box["height"] / natural[1])  # what "contain" draws at
    print(f"grid {natural[0]}x{natural[1]} px shown in a {box['width']:.0f}x{box['height']:.0f} box, x{scale:.2f}")
    assert caption.evaluate("e => e.scrollWidth <= e.clientWidth")  # the caption is not cut either
    _save(page, "compare-3x3-grid")

    # the labels, read from the image the browser shows: each one whole, in its own strip, and
    # at least 14 px tall on the screen
    data = page.request.get(shown.get_attribute("src")).body()
    grid = Image.open(io.BytesIO(data)).convert("RGB")
    assert grid.size == tuple(natural[:2])
    plan = layout((64, 64), "strength", [0.7, 0.8, 0.9], "alpha", [0.0, 0.3, 0.6])
    assert grid.size == plan.size
    assert plan.font_size * scale >= 14
    font = _font(plan.font_size)
    texts = [label.text for label in plan.labels]
    assert texts == ["strength: 0.7", "strength: 0.8", "strength: 0.9", "alpha: 0.0", "alpha: 0.3", "alpha: 0.6"]
    for label in plan.labels:
        found = ink(grid, label.box)
        assert found is not None and label.box[0] < found[0] and found[2] < label.box[2], label
        widest = max(alone(line, font) for line in label.lines)
        assert abs((found[2] - found[0]) - widest) <= 3, (label.text, found, widest)

    # the table: no header is broken inside a word, also in a narrower window where the columns
    # no longer fit (the table scrolls sideways instead)
    headers = page.locator("#compare-table thead th span.header")
    expect(headers.first).to_be_visible()
    try:
        for width in (1400, 900):
            page.set_viewport_size({**VIEWPORT, "width": width})
            lines = headers.evaluate_all("""els => els.map(e => {
                const range = document.createRange(); range.selectNodeContents(e);
                const rects = [...range.getClientRects()].filter(r => r.width > 0);
                return [e.innerText.trim(), new Set(rects.map(r => Math.round(r.top))).size]; })""")
            assert ["effective_alpha", 1] in lines
            broken = [(text, n) for text, n in lines if n > 1 + text.count(" ")]
            assert not broken, (width, broken)
    finally:
        page.set_viewport_size(VIEWPORT)
    expect(page.locator("#compare-counts")).to_contain_text("This sweep's counts")
