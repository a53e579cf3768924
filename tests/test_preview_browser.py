"""In the browser: the token meter under the prompt counts as you type, and the folded chat text
shows exactly what Z-Image reads (system prompt, think block)."""

import os
import re

from playwright.sync_api import expect

from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)

COUNT = re.compile(r"([\d,]+) / ([\d,]+) tokens")


def _count(meter) -> int:
    expect(meter).to_have_text(COUNT)
    return int(COUNT.search(meter.inner_text()).group(1).replace(",", ""))


def test_the_meter_counts_as_you_type_and_the_chat_text_shows_every_part(page, manager, tmp_path):
    loads = dict(manager.load_counts)
    page.get_by_role("tab", name="txt2img").click()
    tab = page.locator("#txt2img")
    prompt = tab.locator("textarea").first
    meter = tab.locator(".token-meter [data-testid=markdown]")
    # Opened now, well before its fields are typed in: gradio 6.31 can drop a value typed into a
    # textbox within milliseconds of its accordion opening (the box shows it, the app never gets
    # it; seen 2 runs in 6 here). No person types that fast; the test should not either.
    tab.get_by_text("Prompt format (Qwen3 chat)", exact=True).click()
    expect(tab.get_by_label("System prompt", exact=True)).to_be_visible()
    prompt.fill("a fox")
    expect(meter).to_contain_text("tokens · fits")
    first = _count(meter)
    prompt.press_sequentially(" in the snow at dawn", delay=20)
    expect(meter).not_to_have_text(re.compile(rf"\b{first} / "))
    assert _count(meter) > first
    # right under the prompt, in view, one line
    box, under = meter.bounding_box(), tab.get_by_label("Prompt", exact=True).bounding_box()
    viewport = page.viewport_size
    assert under["y"] + under["height"] <= box["y"] < under["y"] + under["height"] + 80
    assert box["y"] + box["height"] <= viewport["height"] and box["height"] < 40

    tab.get_by_label("System prompt", exact=True).fill("You are an artist.")
    tab.get_by_label("Force think block").check()
    tab.get_by_text("Chat text Z-Image reads", exact=True).click()
    chat = tab.locator(".chat-text")
    expect(chat).to_contain_text("<|im_start|>system")
    expect(chat).to_contain_text("You are an artist.")
    expect(chat).to_contain_text("<|im_start|>user")
    expect(chat).to_contain_text("a fox in the snow at dawn")
    expect(chat).to_contain_text("<think>")
    expect(chat).to_contain_text("</think>")
    assert dict(manager.load_counts) == loads  # counting loads no model, only the tokenizer
    chat.scroll_into_view_if_needed()
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        page.screenshot(path=os.path.join(artifacts, "txt2img-prompt-preview.png"))
    page.screenshot(path=str(tmp_path / "preview.png"))

    prompt.fill("a fox in the snow " * 120)  # past the tiny DiT's caption limit
    expect(meter).to_contain_text("over: long_prompt_mode=interpolate reduces it to")
    tab.get_by_label("Force think block").uncheck()
    tab.get_by_label("System prompt", exact=True).fill("")
    prompt.fill("")
    tab.get_by_text("Chat text Z-Image reads", exact=True).click()
    tab.get_by_text("Prompt format (Qwen3 chat)", exact=True).click()


def test_the_vl_tab_has_its_own_meter(page):
    page.get_by_role("tab", name="VL conditioning").click()
    tab = page.locator("#vl")
    meter = tab.locator(".token-meter [data-testid=markdown]")
    prompt = tab.get_by_label("Prompt", exact=True)
    prompt.fill("a cat in the style of the reference")
    expect(meter).to_contain_text("tokens · fits")
    meter.scroll_into_view_if_needed()
    expect(meter).to_be_in_viewport()
    artifacts = os.environ.get("TEST_ARTIFACTS")
    if artifacts:
        page.screenshot(path=os.path.join(artifacts, "vl-prompt-preview.png"))
    prompt.fill("")
