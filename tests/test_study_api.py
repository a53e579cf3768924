"""Studies over the API (gradio_client on loopback): run one from its TOML text, list, read; a
sweep from the Blend comparison tab is a study the same calls list and read; a hosted app checks
a study's cells and work against its budgets before the queue, and shows a visitor their own
studies by the owner token their browser keeps (a reload keeps them; another visitor sees none)."""

import json

import httpx

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.runtime.models import ModelManager
from llm_dit.runtime.settings import Settings
from ui import build_demo

STUDY = """
name = "api study"
seeds = [1]
[axes]
alpha = [0.0, 0.5]
[base]
prompt = "a lighthouse"
height = 64
width = 64
num_inference_steps = 2
"""


def _serve(settings):
    demo = build_demo(settings, ModelManager(settings))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    return demo, Client(url, verbose=False)


@pytest.fixture(scope="module")
def served(tiny_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    Image.new("RGB", (64, 64), (200, 60, 30)).save(root / "ref.png")
    demo, client = _serve(Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(root / "outputs")))
    yield client, root
    demo.close()


def test_a_study_runs_from_its_toml_text_and_is_listed_and_read(served):
    client, root = served
    progress, _ = client.predict(STUDY, [handle_file(str(root / "ref.png"))], api_name="/run_study_text")
    assert "2 / 2 cells · finished" in progress
    name = progress.split("**")[1]
    listed = {s["name"]: s for s in client.predict(api_name="/list_my_studies")}
    assert listed[name]["status"] == "finished" and listed[name]["cells"] == "2 / 2"
    study, files = client.predict(name, api_name="/read_study")
    assert study["info"]["study"]["axes"] == {"alpha": [0.0, 0.5]} and study["info"]["status"] == "finished"
    assert [row["alpha"] for row in study["summary"]] == ["0.0", "0.5"]
    rows = [json.loads(line) for line in open(next(f for f in files if f.endswith("metadata.jsonl")))]
    assert [r["alpha"] for r in rows] == [0.0, 0.5]


def test_a_sweep_from_the_comparison_tab_is_a_study(served):
    client, root = served
    progress, *_ = client.predict(references=[handle_file(str(root / "ref.png"))], x_axis="alpha", x_values="0, 0.5",
                                  prompt="a meadow", height=64, width=64, num_inference_steps=2, seed=4,
                                  api_name="/compare")
    name = progress.split("`")[1]
    study, _ = client.predict(name, api_name="/read_study")
    assert study["info"]["status"] == "finished" and study["info"]["study"]["blend"]
    assert study["info"]["study"]["seeds"] == [4] and len(study["summary"]) == 2


@pytest.mark.parametrize("text,message", [
    ("name = [", r"study_toml: not valid TOML"),
    (STUDY.replace("[0.0, 0.5]", "[0.0, 1.5]"), r"axes.alpha: alpha=1.5 is out of range"),
    ("", r"study_toml is empty"),
])
def test_a_bad_study_is_refused_with_the_field(served, text, message):
    client, root = served
    with pytest.raises(Exception, match=message):
        client.predict(text, [handle_file(str(root / "ref.png"))], api_name="/run_study_text")


def test_a_hosted_study_is_checked_against_the_budgets_before_the_queue(tiny_cache, tmp_path):
    Image.new("RGB", (64, 64), (20, 160, 90)).save(tmp_path / "ref.png")
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(tmp_path / "outputs"), hosting="hosted")
    demo, client = _serve(settings)
    try:
        big = STUDY.replace("height = 64\nwidth = 64", "height = 1024\nwidth = 1024").replace(
            "num_inference_steps = 2", "num_inference_steps = 50").replace("seeds = [1]", "seeds = [1, 2, 3, 4, 5]")
        with pytest.raises(Exception, match=r"study: this study's 10 cells are \d+ megapixel-steps of work, over this app's budget of 400"):
            client.predict(big, [handle_file(str(tmp_path / "ref.png"))], api_name="/run_study_text")
        assert not (tmp_path / "outputs" / "studies").exists() or not any(
            p.name != "references" for p in (tmp_path / "outputs" / "studies").iterdir())
        assert client.predict(api_name="/list_my_studies") == []
    finally:
        demo.close()


def _page_load(url: str, session: str, kept: str) -> str:
    """What a page does when it loads: send the token its browser keeps ("" for none), get the owner token."""
    config = httpx.get(url + "config", timeout=30).json()
    index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "owner_token")
    reply = httpx.post(url + "gradio_api/run/predict", json={"fn_index": index, "data": [kept], "session_hash": session},
                       timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()["data"][0]


def test_a_hosted_visitor_keeps_their_studies_over_a_reload_and_sees_no_one_elses(tiny_cache, tmp_path):
    Image.new("RGB", (64, 64), (20, 160, 90)).save(tmp_path / "ref.png")
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(tmp_path / "outputs"), hosting="hosted")
    demo, client = _serve(settings)
    url = client.src
    try:
        token = _page_load(url, "first-page", "")
        assert len(token) == 32 and token != _page_load(url, "other-visitor", "")  # drawn, never the same
        client.session_hash = "first-page"
        progress, _ = client.predict(STUDY, [handle_file(str(tmp_path / "ref.png"))], api_name="/run_study_text")
        name = progress.split("**")[1]
        assert [s["name"] for s in client.predict(api_name="/list_my_studies")] == [name]
        # the page reloads: a new session, the same token from the browser's storage
        assert _page_load(url, "reloaded-page", token) == token
        client.session_hash = "reloaded-page"
        assert [s["name"] for s in client.predict(api_name="/list_my_studies")] == [name]
        assert client.predict(name, api_name="/read_study")[0]["info"]["status"] == "finished"
        for visitor, kept in (("other-visitor", ""), ("forger", "../" + token[:20])):  # a malformed token: a new one
            assert _page_load(url, visitor, kept) != token
            client.session_hash = visitor
            assert client.predict(api_name="/list_my_studies") == []
            with pytest.raises(Exception, match=r"is not one of the studies listed here"):
                client.predict(name, api_name="/read_study")
    finally:
        demo.close()
