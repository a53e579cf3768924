"""In the browser: PNG info shows the dropped image and its report, and loads nothing until asked."""

import io
import os

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)

VIEWPORT = {"width": 1400, "height": 1000}


def _visible_in_viewport(locator) -> bool:
    box = locator.bounding_box()
    return (box is not None and box["width"] > 0 and box["height"] > 0 and 0 <= box["x"]
            and box["x"] + box["width"] <= VIEWPORT["width"] and 0 <= box["y"]
            and box["y"] + box["height"] <= VIEWPORT["height"])


def _save(page, name):
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"))


def test_png_info_shows_then_loads_on_the_button(page, manager, tmp_path):
    from PIL import Image

    from llm_dit.pipelines.generate import img2img
    from llm_dit.core.request import GenerationRequest

    made = img2img(manager, GenerationRequest(prompt="a harbour from png info", height=64, width=64, strength=0.6,
                                              seed=4242), Image.new("RGB", (64, 64), (30, 120, 60)))
    path = made.save(tmp_path)
    page.get_by_role("tab", name="img2img").click()
    tab = page.locator("#img2img")
    tab.locator("textarea").first.fill("what was there before")
    tab.get_by_label("Random seed").check()

    page.get_by_role("tab", name="PNG info").click()
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    load = page.locator("#pnginfo-load")
    expect(load).to_have_text("Load into img2img", timeout=30_000)
    # dropping shows, it does not load: still on PNG info, the preview and the report in view
    expect(page.get_by_role("tab", name="PNG info")).to_have_attribute("aria-selected", "true")
    report = page.locator("#pnginfo-report")
    expect(report).to_contain_text("Read ")
    expect(report).to_contain_text("(img2img)")
    expect(report).to_contain_text("Everything in it can be used.")
    expect(report).to_contain_text("prompt “a harbour from png info” · 64×64 · steps 8 · seed 4242 · "
                                   "strength 0.6")
    preview = page.locator("#pnginfo-preview img")
    expect(preview).to_be_visible()
    assert preview.evaluate("e => e.complete && e.naturalWidth") == 64  # the dropped image itself
    assert _visible_in_viewport(preview) and _visible_in_viewport(report) and _visible_in_viewport(load)
    expect(page.locator("#pnginfo-raw")).to_contain_text("a harbour from png info")
    _save(page, "pnginfo-before-load")
    page.get_by_role("tab", name="img2img").click()
    expect(tab.locator("textarea").first).to_have_value("what was there before")  # nothing loaded yet

    page.get_by_role("tab", name="PNG info").click()
    load.click()
    expect(page.get_by_role("tab", name="img2img")).to_have_attribute("aria-selected", "true", timeout=30_000)
    expect(tab.locator("textarea").first).to_have_value("a harbour from png info")
    # the restored seed is what will run: "Random seed" goes off with it
    expect(tab.get_by_label("Seed", exact=True)).to_have_value("4242")
    expect(tab.get_by_label("Random seed")).not_to_be_checked()
    expect(tab.get_by_label("number input for Width")).to_have_value("64")
    expect(page.locator("#img2img-generate")).to_be_in_viewport()  # the loaded tab is shown from its top
    _save(page, "pnginfo-after-load")
    page.get_by_role("tab", name="PNG info").click()
    expect(report).to_contain_text("Loaded into img2img")
    page.get_by_role("tab", name="img2img").click()
    tab.get_by_label("Random seed").check()  # leave the shared page as the other tests expect it


def test_a_dropped_png_can_be_img2imgs_init_image(page, manager, tmp_path):
    from PIL import Image

    from llm_dit.pipelines.generate import txt2img
    from llm_dit.core.request import GenerationRequest

    made = txt2img(manager, GenerationRequest(prompt="a field to start from", height=64, width=64, seed=7))
    path = made.save(tmp_path)
    page.get_by_role("tab", name="img2img").click()
    tab = page.locator("#img2img")
    tab.locator("textarea").first.fill("the same field at dusk")
    page.get_by_role("tab", name="PNG info").click()
    clear = page.locator("#pnginfo-file").get_by_role("button", name="Clear")
    if clear.count():  # a PNG from an earlier test is still there
        clear.first.click()
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    use = page.locator("#pnginfo-init")
    expect(use).to_be_visible(timeout=30_000)
    use.click()
    expect(page.get_by_role("tab", name="img2img")).to_have_attribute("aria-selected", "true", timeout=30_000)
    init = page.locator("#img2img-image img")
    expect(init).to_be_visible()
    src = init.get_attribute("src")
    shown = Image.open(io.BytesIO(page.request.get(src).body()))
    assert shown.size == (64, 64) and shown.convert("RGB").tobytes() == made.image.convert("RGB").tobytes()
    expect(tab.locator("textarea").first).to_have_value("the same field at dusk")  # the tab's own prompt stays
    page.locator("#img2img-generate").click()
    expect(tab.get_by_label("Seed used")).to_be_visible(timeout=60_000)  # it ran from that image
