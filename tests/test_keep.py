"""The kept forms and the size preset cost the server nothing: they run in the browser.

Why it matters: gradio 6.31's front end, when an `always_last` event that was deferred ends,
re-dispatches every listener of its trigger, so two `always_last` server listeners on one field keep
re-firing each other (a size typed during page load made up to ~100 requests over 8 s, and the form
saved then could be an old one). The browser test is tests/test_keep_browser.py."""

import gradio as gr
import pytest

from ui import build_demo
from ui.keep import STORAGE_KEY


@pytest.fixture(scope="module")
def config(settings, manager):
    demo = build_demo(settings, manager)
    return demo, demo.get_config_file()["dependencies"]


def _server_listeners(dependencies, block, event="change") -> list:
    return [d for d in dependencies if d["backend_fn"] and d["trigger_mode"] == "always_last"
            and [block._id, event] in [list(t) for t in d["targets"]]]


def test_every_tab_keeps_its_form_in_the_browser_only(config):
    demo, dependencies = config
    states = {b._id: b.storage_key for b in demo.blocks.values()
              if isinstance(b, gr.BrowserState) and b.storage_key.startswith(STORAGE_KEY)}
    assert sorted(states.values()) == [f"{STORAGE_KEY}-{tab}" for tab in ("img2img", "txt2img", "vl")]
    saves = [d for d in dependencies if set(d["outputs"]) & set(states)]
    assert len(saves) == 6  # per tab: on every change, and once the stored form is back
    assert [d["id"] for d in saves if d["backend_fn"]] == [], "a form save goes through the server"


def test_no_size_field_has_two_always_last_server_listeners(config):
    demo, dependencies = config
    sizes = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label in ("Width", "Height")]
    assert len(sizes) >= 6  # txt2img, img2img, VL
    for block in sizes:
        names = [demo.fns[d["id"]].name for d in _server_listeners(dependencies, block)]
        assert len(names) <= 1, f"{block.label} ({block._id}) has always_last server listeners {names}"
