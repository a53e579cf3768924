"""In the browser: the img2img mask is painted over the init image with gradio's ImageEditor; the
stroke becomes the request's mask_image (white where painted) and the result keeps the rest."""

import os

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)


def test_a_painted_stroke_is_the_mask_and_only_its_region_is_redrawn(page, tmp_path):
    from PIL import Image

    init = tmp_path / "init.png"
    Image.linear_gradient("L").resize((256, 256)).convert("RGB").save(init)
    page.get_by_role("tab", name="img2img").click()
    tab = page.locator("#img2img")
    tab.locator("#img2img-image input[type=file]").set_input_files(str(init))
    tab.locator("textarea").first.fill("a red fox")
    for label in ("Height", "Width"):
        box = tab.get_by_label(f"number input for {label}")
        box.fill("64")
        box.press("Enter")
    tab.get_by_text("Inpaint mask (optional)").click()
    canvas = page.locator("#img2img-mask-editor canvas").first
    expect(canvas).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1000)  # the init image drawn as the editor's background
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the init image sits in the middle
    page.mouse.move(x - 40, y - 20)
    page.mouse.down()
    page.mouse.move(x + 40, y, steps=10)  # one stroke across the image's middle
    page.mouse.up()
    expect(page.locator("#img2img-mask img")).to_be_visible(timeout=30_000)  # the stroke, as the mask
    page.locator("#img2img-generate").click()
    expect(page.locator("#img2img-result img")).to_be_visible(timeout=120_000)
    metadata = tab.get_by_text("redrawn_fraction")
    expect(metadata).to_be_visible(timeout=30_000)
    fraction = float(tab.locator(".json-holder, [data-testid=json]").first.inner_text()
                     .split("redrawn_fraction")[1].split(":")[1].split(",")[0].split("}")[0].strip().strip('"'))
    assert 0 < fraction < 0.3  # a stroke, not the whole image
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.locator("#img2img").screenshot(path=os.path.join(folder, "inpaint-painted-mask.png"))
