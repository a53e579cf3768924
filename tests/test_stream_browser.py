"""In the browser: a rewrite reply grows in the result box while it streams, and the rewrite tab's
controls read for what they are."""

import json
import os
import re
import threading
import time
from http.server import ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from . import openai_server
from .test_browser import page  # noqa: F401 - the same page fixture (and the same chromium skip rule)

WORDS = [f"word{i}" for i in range(40)]
WATCH = """() => {  // every distinct value the result box shows, in order
  const seen = window.__seen = [];
  const box = document.querySelector('#rewrite-result textarea');
  const tick = () => {
    if (seen[seen.length - 1] !== box.value) seen.push(box.value);
    window.__watch = requestAnimationFrame(tick);
  };
  tick();
}"""
STOP = """() => {  // stop watching; the box's value now is the last one seen
  cancelAnimationFrame(window.__watch);
  const v = document.querySelector('#rewrite-result textarea').value;
  if (window.__seen[window.__seen.length - 1] !== v) window.__seen.push(v);
  return window.__seen;
}"""
LINES = """b => {  // lines the button's text takes (one rect per line of a text node)
  const walker = document.createTreeWalker(b, NodeFilter.SHOW_TEXT);
  let lines = 0;
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    const r = document.createRange();
    r.selectNodeContents(n);
    lines += new Set([...r.getClientRects()].map(rect => Math.round(rect.top))).size;
  }
  return lines;
}"""


class Drip(openai_server.Handler):
    """A chat-completions stream that sends one word every 0.1 s (a model a person watches type)."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i, word in enumerate(WORDS):
                delta = {"choices": [{"delta": {"content": (" " if i else "") + word}}]}
                self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def drip():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _artifact(page, name: str, tmp_path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    folder = os.environ.get("TEST_ARTIFACTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"))


def test_the_reply_grows_in_the_result_box_while_it_streams(page, drip, tmp_path):
    page.get_by_role("tab", name="Prompt rewriting").click()
    tab = page.locator("#rewrite")
    idea = tab.get_by_role("textbox", name="Idea to rewrite")
    expect(idea).to_be_visible()
    tab.get_by_text("OpenAI-compatible server", exact=True).click()  # opened before anything is typed
    idea.fill("a fox")
    tab.get_by_label("Backend").click()
    page.get_by_role("option", name="openai").click()
    tab.get_by_label("Server base URL (local only)").fill(drip)
    tab.get_by_label("Server model").fill("drip")
    page.evaluate(WATCH)
    page.locator("#rewrite-go").click()
    result = page.locator("#rewrite-result textarea")
    final = " ".join(WORDS)
    expect(result).to_have_value(re.compile(r"^word0 word1 word2 word3"), timeout=30_000)
    box, viewport = page.locator("#rewrite-result").bounding_box(), page.viewport_size
    assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"], f"the reply is out of view: {box}"
    _artifact(page, "rewrite-mid-stream", tmp_path)
    expect(result).to_have_value(final, timeout=30_000)
    seen = [v for v in page.evaluate(STOP) if v]
    partial = seen[:-1]
    assert seen[-1] == final
    assert len(partial) >= 3, f"the box showed only {seen!r}: nothing streamed"
    assert all(final.startswith(v) for v in partial)  # each one the reply so far, growing
    assert [len(v) for v in partial] == sorted(len(v) for v in partial)
    expect(page.locator("#rewrite-metadata")).to_contain_text("drip")


def test_use_in_buttons_fit_their_text(page):
    page.get_by_role("tab", name="Prompt rewriting").click()
    viewport = page.viewport_size
    for tab in ("txt2img", "img2img", "vl"):
        button = page.locator(f"#use-in-{tab}")
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
        fits = button.evaluate("b => b.scrollWidth <= b.clientWidth && b.scrollHeight <= b.clientHeight")
        lines = button.evaluate(LINES)
        assert fits and lines == 1, f"{button.inner_text()!r} does not fit its button ({box})"
