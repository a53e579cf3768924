"""What a person sees on a generating tab in a 1400x1000 window: the main inputs, the Generate
button, the readout of what will run and the result, all without scrolling, right after the page
loads and after Generate; the research knobs start collapsed. A screenshot of every tab goes to
$TEST_ARTIFACTS/tab-<name>.png."""

import os
import re

from playwright.sync_api import expect

from .test_browser import _set_size, page  # noqa: F401 - the same page fixture (and chromium skip rule)

WIDTH, HEIGHT = 1400, 1000
TABS = {"txt2img": "txt2img", "img2img": "img2img", "vl": "VL conditioning", "compare": "Blend comparison",
        "rewrite": "Prompt rewriting", "pnginfo": "PNG info", "status": "Status"}


def _open(page, key):
    page.get_by_role("tab", name=TABS[key], exact=True).click()
    expect(page.get_by_role("tab", name=TABS[key], exact=True)).to_have_attribute("aria-selected", "true")
    page.evaluate("window.scrollTo(0, 0)")
    return page.locator(f"#{key}")


def _main(page, tab, key) -> dict:
    """The controls a person needs to run the tab, by what they read on the page."""
    prompt = tab.get_by_role("textbox", name=re.compile(r"^Prompt( |$)"))
    run = {"Generate": page.locator(f"#{key}-generate"), "result": page.locator(f"#{key}-result")}
    if key == "txt2img":
        return {"prompt": prompt, "Size preset": tab.get_by_role("combobox", name=re.compile(r"^Size preset")),
                "Width": tab.get_by_label("number input for Width"),
                "Height": tab.get_by_label("number input for Height"),
                "readout": page.locator("#txt2img-readout"), **run}
    if key == "img2img":
        return {"init image": page.locator("#img2img-image"), "prompt": prompt,
                "Strength": tab.get_by_label("number input for Strength"),
                "readout": page.locator("#img2img-readout"), **run}
    return {"references": page.locator("#vl-references"), "prompt": prompt,
            "Alpha": tab.get_by_label("number input for Alpha"),
            "Strength": tab.get_by_label("number input for Strength"),
            "Preset": tab.get_by_role("combobox", name=re.compile(r"^Preset")),
            "Extract only": page.locator("#vl-extract"), "readout": page.locator("#vl-strength-readout"),
            "VL share": page.locator("#vl-effective-alpha"), **run}


def _in_window(page, locators: dict) -> None:
    """Each one visible and wholly inside the window, with the page scrolled to the top."""
    assert page.evaluate("window.scrollY") == 0
    for name, locator in locators.items():
        expect(locator, f"{name} is not visible").to_be_visible()
        box = locator.bounding_box()
        inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= WIDTH and \
            box["y"] + box["height"] <= HEIGHT
        assert inside, f"{name} is not wholly inside the {WIDTH}x{HEIGHT} window: {box}"


def _not_clipped(locator, name) -> None:
    """The button's text fits in the button (no cut-off label)."""
    width, scroll = locator.evaluate("b => [b.clientWidth, b.scrollWidth]")
    assert scroll <= width, f"{name}: its text needs {scroll} px, the button is {width} px wide"


def _screenshot(page, key) -> None:
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        page.screenshot(path=os.path.join(artifacts, f"tab-{key}.png"))


def _readout_beside_generate(page, key, readout) -> None:
    """The readout of what will run sits right under the Generate button, in its column."""
    button, box = page.locator(f"#{key}-generate").bounding_box(), readout.bounding_box()
    assert 0 <= box["y"] - (button["y"] + button["height"]) <= 40, (button, box)
    assert box["x"] <= button["x"] + button["width"] and button["x"] <= box["x"] + box["width"], (button, box)


def _research_knobs_collapsed(page, tab, groups: dict) -> None:
    """Each accordion's header shows and its first control is hidden; opening one shows it."""
    for header, control in groups.items():
        expect(tab.get_by_role("button", name=re.compile(f"^{re.escape(header)}"))).to_be_visible()
        expect(control, f"{header} is open").to_be_hidden()
    header, control = next(iter(groups.items()))
    tab.get_by_role("button", name=re.compile(f"^{re.escape(header)}")).click()
    expect(control).to_be_visible()
    tab.get_by_role("button", name=re.compile(f"^{re.escape(header)}")).click()
    expect(control).to_be_hidden()
    page.evaluate("window.scrollTo(0, 0)")


def _generate_and_see(page, key, **extra) -> None:
    """Click Generate with the page at the top; the new result shows inside the window."""
    page.evaluate("window.scrollTo(0, 0)")
    page.locator(f"#{key}-generate").click()
    image = page.locator(f"#{key}-result img")
    expect(image).to_have_attribute("src", re.compile(rf"-{key}-\d+(-\d+)?\.png$"), timeout=60_000)
    _in_window(page, {"result image": image, "Generate": page.locator(f"#{key}-generate"), **extra})


FORM_GROUPS = {"Prompt format (Qwen3 chat)": "System prompt", "Sampling, LoRA, attention": "Shift"}


def _form_groups(tab) -> dict:
    return {header: tab.get_by_role("textbox" if label == "System prompt" else "slider", name=re.compile(f"^{label}"))
            for header, label in FORM_GROUPS.items()}


def test_txt2img_fits_the_window(page):
    tab = _open(page, "txt2img")
    _in_window(page, _main(page, tab, "txt2img"))
    _research_knobs_collapsed(page, tab, _form_groups(tab))
    for name in ("txt2img-generate", "txt2img-export-embeddings", "txt2img-to-img2img", "txt2img-to-vl"):
        _not_clipped(page.locator(f"#{name}"), name)
    _readout_beside_generate(page, "txt2img", page.locator("#txt2img-readout"))
    size = tab.get_by_role("combobox", name=re.compile(r"^Size preset"))
    _set_size(page, "txt2img", 1536)  # height first: 1024x1536 on the way, a preset; it must not write back
    for label in ("Width", "Height"):
        expect(tab.get_by_label(f"number input for {label}")).to_have_value("1536")
    expect(size).to_have_value("1536×1536 (1:1) · 1536")
    _set_size(page, "txt2img", 64)
    expect(page.locator("#txt2img-readout")).to_contain_text("8 forwards from pure noise (sigma 1.000), 64×64 px")
    expect(size).to_have_value("Free size (set width and height)")  # it never claims a size that will not run
    tab.get_by_role("textbox", name=re.compile(r"^Prompt( |$)")).fill("a lighthouse at dusk")
    _generate_and_see(page, "txt2img", **{"Seed used": tab.get_by_label("Seed used"),
                                          "readout": page.locator("#txt2img-readout")})
    expect(page.locator("#txt2img-export")).to_be_hidden()  # no export yet: no empty file box
    page.locator("#txt2img-export-embeddings").click()
    expect(page.locator("#txt2img-export")).to_contain_text("-txt2img-prompt-embeds", timeout=60_000)
    _in_window(page, {"export": page.locator("#txt2img-export"), "result image": page.locator("#txt2img-result img")})
    _screenshot(page, "txt2img")


def test_img2img_fits_the_window(page, tmp_path):
    from PIL import Image

    tab = _open(page, "img2img")
    _in_window(page, _main(page, tab, "img2img"))
    _readout_beside_generate(page, "img2img", page.locator("#img2img-readout"))
    _research_knobs_collapsed(page, tab, _form_groups(tab))
    Image.new("RGB", (64, 64), (40, 120, 200)).save(tmp_path / "init.png")
    page.locator("#img2img-image input[type=file]").set_input_files(str(tmp_path / "init.png"))
    _set_size(page, "img2img", 64)
    tab.get_by_role("textbox", name=re.compile(r"^Prompt( |$)")).fill("the same, as a watercolour")
    _generate_and_see(page, "img2img", readout=page.locator("#img2img-readout"))
    expect(page.locator("#img2img-readout")).to_contain_text("7 of 8 forwards")
    _screenshot(page, "img2img")


def test_vl_fits_the_window(page, tmp_path):
    from PIL import Image

    tab = _open(page, "vl")
    _in_window(page, _main(page, tab, "vl"))
    _readout_beside_generate(page, "vl", page.locator("#vl-strength-readout"))
    expect(page.locator("#vl-strength-readout")).to_contain_text("7 of 8 forwards, from sigma 0.955")
    expect(page.locator("#vl-effective-alpha")).to_contain_text("alpha 0.30")
    _research_knobs_collapsed(page, tab, {
        "VL extraction": tab.get_by_label("Give VL the prompt"),
        "Composition": tab.get_by_role("combobox", name=re.compile("^VL composition")),
        "Blend": tab.get_by_role("combobox", name=re.compile("^Blend mode")),
        "Statistics and normalisation": tab.get_by_label("Scale VL to text"),
        "Statistics and effective alpha": tab.get_by_label("Statistics and effective alpha"),
        "Layer scan": page.locator("#vl-layer-scan"), **_form_groups(tab)})
    for name in ("vl-generate", "vl-extract", "vl-to-img2img", "vl-to-vl"):
        _not_clipped(page.locator(f"#{name}"), name)
    Image.new("RGB", (128, 128), (200, 60, 40)).save(tmp_path / "ref.png")
    page.locator("#vl-references input[type=file]").set_input_files(str(tmp_path / "ref.png"))
    expect(page.locator("#vl-references").get_by_role("cell", name="ref.png")).to_be_visible()
    _set_size(page, "vl", 64)
    tab.get_by_role("textbox", name=re.compile(r"^Prompt( |$)")).fill("a harbour in the colours of the reference")
    _in_window(page, _main(page, tab, "vl"))  # an uploaded reference does not push the rest out
    _generate_and_see(page, "vl", readout=page.locator("#vl-effective-alpha"))
    expect(page.locator("#vl-effective-alpha")).to_contain_text("VL share 0.")
    page.locator("#vl-extract").click()  # its file shows under the buttons; the result stays in view
    expect(page.locator("#vl-export")).to_contain_text("-vl-conditioning", timeout=60_000)
    _in_window(page, {"export": page.locator("#vl-export"), "result image": page.locator("#vl-result img")})
    _screenshot(page, "vl")


def test_screenshots_of_the_other_tabs(page):
    for key in ("compare", "rewrite", "pnginfo", "status"):
        tab = _open(page, key)
        if key == "compare":  # the sweep's axes and its run bar on one screen, beside the grid
            _in_window(page, {"X axis": tab.get_by_label("X axis"), "Z values": tab.get_by_label("Z values"),
                              "Run sweep": page.locator("#compare-run"), "Stop": page.locator("#compare-stop"),
                              "grids": page.locator("#compare-grids")})
            _not_clipped(page.locator("#compare-stop"), "Stop after this cell")
        expect(page.locator(f"#{key}")).to_be_visible()
        _screenshot(page, key)
