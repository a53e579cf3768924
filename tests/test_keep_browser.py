"""In the browser: a reload keeps each tab's form (prompt, size, uploads); "Reset to defaults" puts
the tab back. Screenshots: $TEST_ARTIFACTS/keep-*.png.

Before it reloads, the test reads the stored form itself (gradio's BrowserState: AES in CryptoJS's
passphrase format) and waits until it holds what was typed: no guess at when saving has settled."""

import base64
import hashlib
import json
import os
import re
import time

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from playwright.sync_api import expect

from llm_dit.core.request import field_meta
from ui.history import BROWSER_KEY
from ui.keep import STORAGE_KEY

from .test_browser import _set_size, page  # noqa: F401 - the same page fixture (and chromium skip rule)

PROMPTS = {"txt2img": "a prompt that survives a reload", "img2img": "an init image that survives a reload"}


def _decrypt(stored: str):
    """gradio's BrowserState value: "<iv>:<CryptoJS.AES.encrypt(json, sha256(secret) hex)>", whose
    key and iv come from the passphrase and salt by OpenSSL's EVP_BytesToKey (MD5)."""
    blob = base64.b64decode(stored.split(":", 1)[1])
    assert blob[:8] == b"Salted__", stored
    salt, data = blob[8:16], blob[16:]
    passphrase, derived, block = hashlib.sha256(BROWSER_KEY.encode()).hexdigest().encode(), b"", b""
    while len(derived) < 48:
        block = hashlib.md5(block + passphrase + salt).digest()
        derived += block
    decryptor = Cipher(algorithms.AES(derived[:32]), modes.CBC(derived[32:48])).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return json.loads(unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize())


def _stored(page, tab: str):
    raw = page.evaluate("(key) => localStorage.getItem(key)", f"{STORAGE_KEY}-{tab}")
    return _decrypt(raw) if raw else {}


def _wait_stored(page, tab: str, holds, what: str, timeout: float = 30):
    """Until the tab's stored form satisfies `holds` (a condition on its content, polled)."""
    end = time.monotonic() + timeout
    while not holds(form := _stored(page, tab)):
        assert time.monotonic() < end, f"the {tab} form never stored {what}: {form}"
        page.wait_for_timeout(50)


def _shot(page, name):
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"keep-{name}.png"))


def _fill(page, tab: str, upload, image_file) -> None:
    page.get_by_role("tab", name=tab, exact=True).click()
    page.locator(f"#{tab} textarea").first.fill(PROMPTS[tab])
    _set_size(page, tab, 512)
    upload.locator("input[type=file]").set_input_files(str(image_file))
    expect(upload.locator("img")).to_be_visible()


def _kept(tab: str, upload_key: str):
    def holds(form):
        controls, inputs = form.get("controls", {}), form.get("inputs", {})
        return (controls.get("prompt") == PROMPTS[tab] and controls.get("width") == 512
                and controls.get("height") == 512 and bool(inputs.get(upload_key)))
    return holds


def test_a_reload_keeps_the_forms_and_reset_restores_the_defaults(page, tmp_path):
    from PIL import Image

    image_file = tmp_path / "kept-init.png"
    Image.new("RGB", (64, 64), (10, 200, 90)).save(image_file)
    reference = tmp_path / "kept-reference.png"
    Image.new("RGB", (64, 64), (200, 10, 90)).save(reference)

    page.get_by_role("tab", name="txt2img", exact=True).click()
    page.locator("#txt2img").get_by_text("Structure control (ControlNet)").click()
    control = page.locator("#txt2img .block").filter(has=page.locator("input[type=file]")).filter(
        has_text="Control image").last
    uploads = {"txt2img": (control, "_control_image"),
               "img2img": (page.locator("#img2img-image"), "image")}
    for tab, (upload, key) in uploads.items():
        _fill(page, tab, upload, image_file)
        _wait_stored(page, tab, _kept(tab, key), f"the prompt, 512x512 and the {key}")
    page.get_by_role("tab", name="VL conditioning").click()
    page.locator("#vl-references input[type=file]").set_input_files(str(reference))
    expect(page.locator("#vl-references")).to_contain_text(re.compile(r"kept-reference\s*\.png"))
    _wait_stored(page, "vl", lambda form: len(form.get("inputs", {}).get("references") or []) == 1, "the reference")

    page.reload()
    for tab, (upload, key) in uploads.items():
        page.get_by_role("tab", name=tab, exact=True).click()
        form = page.locator(f"#{tab}")
        expect(form.locator("textarea").first).to_have_value(PROMPTS[tab], timeout=30_000)
        for label in ("Width", "Height"):
            expect(form.get_by_label(f"number input for {label}")).to_have_value("512")
        if tab == "txt2img":
            form.get_by_text("Structure control (ControlNet)").click()
        expect(upload.locator("img")).to_be_visible()
        _shot(page, f"reloaded-{tab}")
    page.get_by_role("tab", name="VL conditioning").click()
    expect(page.locator("#vl-references")).to_contain_text(re.compile(r"kept-reference\s*\.png"))
    _shot(page, "reloaded-vl")

    page.get_by_role("tab", name="img2img", exact=True).click()
    form = page.locator("#img2img")
    form.get_by_role("button", name="Reset to defaults").click()
    expect(form.locator("textarea").first).to_have_value(field_meta("prompt")["default"])
    for label, field in (("Width", "width"), ("Height", "height")):
        expect(form.get_by_label(f"number input for {label}")).to_have_value(str(field_meta(field)["default"]))
    expect(uploads["img2img"][0].locator("img")).to_have_count(0)
    _wait_stored(page, "img2img", lambda f: f.get("controls", {}).get("width") == field_meta("width")["default"]
                 and not f.get("inputs", {}).get("image"), "the defaults")
    _shot(page, "reset-img2img")
    assert _kept("txt2img", "_control_image")(_stored(page, "txt2img"))  # the other tabs keep their own
    assert len(_stored(page, "vl")["inputs"]["references"]) == 1
