"""The app as a hostile remote client sees it, in hosted mode (and the same calls in local mode).

Everything here goes over loopback HTTP, through gradio_client and raw requests to /gradio_api,
like a stranger on a Space would: every private event by fn_index, environment-variable and URL
choice through every field (a canary secret and a listener that records whatever reaches it),
server paths and uploads as LoRAs, path probes, and server paths in results and messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from llm_dit.core.images import JSON_KEY
from llm_dit.core.request import field_meta
from llm_dit.runtime.models import ModelLoadError, ModelManager
from llm_dit.serving.policy import Policy, decide_hosted
from llm_dit.runtime.settings import Settings, load_settings
from ui import build_demo, launch_options

from . import openai_server

CANARY = "LLM_DIT_TEST_CANARY"  # a secret of the server's that no client may get sent anywhere
OPERATOR_KEY = "LLM_DIT_TEST_OPERATOR_KEY"


@pytest.fixture(scope="module")
def listeners():
    """The operator's rewrite server, and an attacker's listener (both record every request)."""
    operator, attacker = openai_server.start(), openai_server.start()
    os.environ[CANARY] = "canary-7f3a"
    os.environ[OPERATOR_KEY] = "operator-key"
    yield operator, attacker
    for name in (CANARY, OPERATOR_KEY):
        os.environ.pop(name, None)
    operator.shutdown()
    attacker.shutdown()


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def _serve(settings, manager=None):
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    return demo, url


@pytest.fixture(scope="module")
def hosted(listeners, tiny_cache, lora_file, tmp_path_factory):
    operator, _ = listeners
    root = tmp_path_factory.mktemp("hosted")
    (root / "loras").mkdir()
    shutil.copy(lora_file, root / "loras" / "watercolour.safetensors")
    servers = root / "rewrite.toml"
    servers.write_text(f'[servers.lab]\nbase_url = "{_url(operator)}"\napi_key_env = "{OPERATOR_KEY}"\n'
                       'models = ["stream", "secret-error", "flaky"]\n')
    settings = Settings(tiny=True, cache_dir=str(tiny_cache), output_dir=str(root / "outputs"), hosting="hosted",
                        rewrite_servers=str(servers), lora_dir=str(root / "loras"), max_upload_mb=1)
    manager = ModelManager(settings)
    demo, url = _serve(settings, manager)
    yield {"url": url, "client": Client(url, verbose=False), "manager": manager, "root": root, "demo": demo}
    demo.close()


@pytest.fixture(scope="module")
def local(settings, manager):
    demo, url = _serve(settings, manager)
    yield {"url": url, "client": Client(url, verbose=False), "manager": manager, "demo": demo}
    demo.close()


def _txt2img(client, **kw):
    return client.predict(**{"prompt": "a lighthouse", "height": 64, "width": 64, "seed": 5, **kw},
                          api_name="/txt2img")


def _rewrite(client, **kw):
    return client.predict(**{"prompt": "a fox", "backend": "openai", "model": "stream", "timeout": 10.0, **kw},
                          api_name="/rewrite")


def _message(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def _config(url) -> dict:
    return httpx.get(url + "config", timeout=30).json()


# ---- the policy, decided once ---------------------------------------------------------------------
@pytest.mark.parametrize("hosting,host,share,env,hosted", [
    ("auto", "", False, {}, False),
    ("auto", "127.0.0.1", False, {}, False),
    ("auto", "", False, {"GRADIO_SHARE": "True"}, True),  # gradio opens a share link by itself
    ("auto", "", False, {"GRADIO_SHARE": "false"}, False),
    ("auto", "", False, {"COLAB_RELEASE_TAG": "release-colab_20261201"}, True),
    ("auto", "", False, {"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, True),
    ("auto", "0.0.0.0", False, {}, True),
    ("auto", "", False, {"GRADIO_SERVER_NAME": "0.0.0.0"}, True),
    ("auto", "", False, {"SPACE_ID": "lab/studio"}, True),
    ("auto", "", True, {}, True),
    ("local", "0.0.0.0", False, {"SPACE_ID": "x/y"}, False),
    ("hosted", "127.0.0.1", False, {}, True),
])
def test_hosted_or_local_is_decided_once(hosting, host, share, env, hosted):
    assert decide_hosted(hosting, host, share, env)[0] is hosted


@pytest.mark.parametrize("value", ["1", "t", "true", "True", "TRUE", "false", "0", "no", "", "yes"])
def test_spaces_zero_gpu_is_parsed_as_the_spaces_package_does(value):
    from spaces.config import boolean

    assert load_settings([], environ={"SPACES_ZERO_GPU": value}).zero_gpu is boolean(value)


def test_the_status_tab_shows_the_policy(hosted, local):
    assert "Hosting: hosted (--hosting hosted)" in json.dumps(_config(hosted["url"]))
    assert "Hosting: local (listening on loopback only)" in json.dumps(_config(local["url"]))
    assert "Budgets: image inputs up to 16.0 MP" in json.dumps(_config(hosted["url"]))
    assert "up to 64 cells per sweep" in json.dumps(_config(hosted["url"]))
    assert "up to 50 steps" not in json.dumps(_config(local["url"]))  # locally, the fields' own ranges


# ---- admin actions and private events -------------------------------------------------------------
def test_hosted_apps_delete_old_copies_from_gradios_cache(hosted, local):
    """Every visitor's results and uploads are copied into one gradio cache: hosted, copies older
    than a day go (checked hourly); locally the history may point at them, so they stay."""
    assert hosted["demo"].delete_cache == (3600, 86_400)
    assert local["demo"].delete_cache is None


def test_admin_actions_are_not_registered_when_hosted(hosted, local):
    names = {d.get("api_name") for d in _config(hosted["url"])["dependencies"]}
    assert not {"do_unload", "do_clear"} & names
    assert {"do_unload", "do_clear"} <= {d.get("api_name") for d in _config(local["url"])["dependencies"]}


def test_no_private_event_by_fn_index_unloads_or_clears_anything(hosted):
    """Call every non-public event with raw POSTs by fn_index; the models and caches stay."""
    client, manager = hosted["client"], hosted["manager"]
    _txt2img(client)
    cached = manager.text_cache.stats()["entries"]
    assert manager.is_loaded and cached
    for dep in _config(hosted["url"])["dependencies"]:
        if dep.get("api_visibility") == "public":
            continue
        body = {"fn_index": dep["id"], "data": [None] * len(dep["inputs"]), "session_hash": "attacker"}
        httpx.post(hosted["url"] + "gradio_api/run/predict", json=body, timeout=30)
        httpx.post(hosted["url"] + "gradio_api/queue/join", json=body, timeout=30)
    assert manager.is_loaded and manager.text_cache.stats()["entries"] == cached


def test_queued_events_refuse_direct_posts_that_skip_the_queue(hosted):
    index = next(d["id"] for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "txt2img")
    reply = httpx.post(hosted["url"] + "gradio_api/run/predict", json={"fn_index": index, "data": []}, timeout=30)
    assert reply.status_code == 404 and "join the queue" in reply.text


def test_private_events_cannot_read_server_files(hosted):
    """A private event with a file input (the history's `remember`) given a server path."""
    dep = next(d for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "remember")
    data = [[], {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, {"mode": "txt2img"}]
    reply = httpx.post(hosted["url"] + "gradio_api/run/predict",
                       json={"fn_index": dep["id"], "data": data, "session_hash": "attacker"}, timeout=30)
    assert "root:" not in reply.text and "/etc/passwd" not in reply.text.replace("\\/", "/").split('"error"')[0]


def test_a_forged_browser_history_shows_no_server_file(hosted, tmp_path):
    """The history comes back from the browser's storage, i.e. from the client: a forged list
    naming server files (outside the output folder and gradio's upload cache) shows nothing."""
    canary = tmp_path / "canary.png"
    canary.write_bytes(b"CANARY-HISTORY")
    meta = {"mode": "txt2img", "seed": 1, "request": {"prompt": "x", "seed": 1}}
    forged = [{"image": path, "metadata": meta, "inputs": {"image": path}}
              for path in ("/etc/passwd", str(canary), os.path.abspath("app.py"), "../../etc/passwd")]
    deps = {d.get("api_name"): d for d in _config(hosted["url"])["dependencies"]}
    for name in ("history_show", "history_remove"):
        data = [forged] + [None] * (len(deps[name]["inputs"]) - 1)
        reply = httpx.post(hosted["url"] + "gradio_api/run/predict",
                           json={"fn_index": deps[name]["id"], "data": data, "session_hash": "attacker"}, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["data"][:2] == [[], []]
        text = reply.text.replace("\\/", "/")
        assert "passwd" not in text and "canary" not in text and "app.py" not in text


def test_a_forged_history_request_cannot_fill_an_image_input_with_a_server_file(hosted, tmp_path):
    """A restore puts an entry's request back into its tab: request keys that name an image input
    (references, image, structure_image) would become that input's value, which gradio serves. An
    entry's image must be a real result to pass the check: the attacker has their own."""
    canary = tmp_path / "canary.txt"
    canary.write_text("CANARY-RESTORE")
    _txt2img(hosted["client"])
    own = str(sorted((hosted["root"] / "outputs").glob("*.png"))[-1])
    served = [str(canary), os.path.abspath("app.py")]
    forged = [{"image": own, "inputs": {},
               "metadata": {"mode": mode, "seed": 1, "request": {"prompt": "x", "seed": 1, "references": served,
                                                                 "image": served[0], "structure_image": served[1]}}}
              for mode in ("vl", "img2img")]
    dep = next(d for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "restore")
    for index in (0, 1):
        reply = httpx.post(hosted["url"] + "gradio_api/run/predict", timeout=30,
                           json={"fn_index": dep["id"], "data": [forged], "event_data": {"index": index, "value": None},
                                 "session_hash": "attacker"})
        assert reply.status_code == 200, reply.text
        assert "Restored" in reply.json()["data"][0]  # the restore itself went through
        text = reply.text.replace("\\/", "/")
        assert "canary" not in text and "app.py" not in text
        for url in re.findall(r'"url":\s*"([^"]+)"', text):
            assert b"CANARY-RESTORE" not in httpx.get(url, timeout=30).content


# ---- rewrite: no URL, no environment variable --------------------------------------------------------
def test_a_client_cannot_send_the_servers_secrets_anywhere(hosted, listeners):
    operator, attacker = listeners
    before = len(operator.requests)
    for fields, named in (({"base_url": _url(attacker), "api_key_env": CANARY}, "base_url"),
                          ({"base_url": _url(attacker)}, "base_url"),
                          ({"server": "lab", "api_key_env": CANARY}, "api_key_env"),
                          ({"server": "lab", "base_url": _url(attacker)}, "base_url"),
                          ({"server": ""}, "server")):
        message = _message(lambda: _rewrite(hosted["client"], **fields))
        assert f"- {named}: " in message and "hosted" in message
    assert attacker.requests == [] and len(operator.requests) == before


def test_a_configured_server_is_chosen_by_name(hosted, listeners):
    operator, _ = listeners
    text, _, meta = _rewrite(hosted["client"], server="lab")
    assert text == openai_server.REPLY and meta["model"] == "lab: stream"
    assert operator.requests[-1]["auth"] == "Bearer operator-key"
    assert "canary" not in json.dumps(operator.requests)
    assert "not configured here" in _message(lambda: _rewrite(hosted["client"], server="elsewhere"))
    assert "model='gpt-4' is not offered by server 'lab'" in _message(
        lambda: _rewrite(hosted["client"], server="lab", model="gpt-4"))


def test_upstream_error_bodies_are_never_echoed_when_hosted(hosted):
    message = _message(lambda: _rewrite(hosted["client"], server="lab", model="secret-error"))
    assert "HTTP 500" in message and "HUNTER2" not in message and "127.0.0.1" not in message


def test_429_and_5xx_are_retried_with_backoff(hosted):
    text, _, _ = _rewrite(hosted["client"], server="lab", model="flaky")
    assert text == openai_server.REPLY


def test_locally_the_user_may_choose_a_url_and_a_key_variable(local, listeners):
    _, attacker = listeners
    text, _, _ = _rewrite(local["client"], base_url=_url(attacker), api_key_env=CANARY)
    assert text == openai_server.REPLY and attacker.requests[-1]["auth"] == "Bearer canary-7f3a"


# ---- LoRAs: names from the operator's folder only ----------------------------------------------------
def _upload(url, path) -> str:
    with open(path, "rb") as f:
        reply = httpx.post(url + "gradio_api/upload", files={"files": (Path(path).name, f)}, timeout=30)
    reply.raise_for_status()
    return reply.json()[0]


def test_loras_are_chosen_by_name_and_no_path_is_probed(hosted, lora_file, tmp_path):
    client = hosted["client"]
    uploaded = _upload(hosted["url"], lora_file)
    probes = ["/etc/shadow", "/etc/passwd", "/nonexistent/x.safetensors", uploaded, "../loras/watercolour",
              "watercolour.safetensors"]
    messages = {p: _message(lambda p=p: _txt2img(client, loras=f"{p}:0.5")) for p in probes}
    shapes = {m.replace(repr(p), "ENTRY") for p, m in messages.items()}
    assert len(shapes) == 1, shapes  # existing, missing and unreadable files answer alike
    assert "- loras: loras: ENTRY is not one of the LoRAs this app offers: choose from watercolour" in shapes.pop()
    _, _, meta = _txt2img(client, loras="watercolour:0.5")
    assert meta["loras"] == [{"name": "watercolour", "scale": 0.5}]
    _txt2img(client)  # no LoRA requested: the adapter leaves the shared DiT
    assert hosted["manager"].pipeline().get_list_adapters().get("transformer", []) == []


# ---- no server paths shown ---------------------------------------------------------------------------
def test_results_and_saved_pngs_carry_no_server_paths(hosted):
    path, _, meta = _txt2img(hosted["client"])
    root = str(hosted["root"])
    assert root not in json.dumps(meta)
    saved = sorted((hosted["root"] / "outputs").glob("*.png"))[-1]
    assert root not in Image.open(saved).text[JSON_KEY] and "/tmp" not in Image.open(saved).text[JSON_KEY]


def test_another_visitors_files_cannot_be_fetched_by_guessing_their_names(hosted, tmp_path):
    """The output folder is served (allowed_paths: results stored outside gradio's temp folder must
    be returnable). A PNG named by time and seed, or an export named by time alone, would be
    fetched by anyone who tries each second of a day; hosted names carry 64 random bits."""
    client, url, outputs = hosted["client"], hosted["url"], hosted["root"] / "outputs"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "ref.png")
    before = time.time()
    _txt2img(client, seed=7)
    client.predict(references=[handle_file(str(tmp_path / "ref.png"))], prompt="a private reference",
                   api_name="/vl_extract")
    after = time.time()

    def fetch(name):
        return httpx.get(f"{url}gradio_api/file={outputs / name}", timeout=30)

    # the attacker knows the folder (a Space's layout is public) and tries every second of the window
    for second in range(int(before) - 1, int(after) + 2):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(second))
        for guess in (f"{stamp}-txt2img-7.png", f"{stamp}-vl-conditioning.safetensors"):
            assert fetch(guess).status_code in (403, 404), guess
    made = sorted(p.name for p in outputs.iterdir() if p.stat().st_mtime >= before - 1)
    png = next(n for n in made if re.fullmatch(r"\d{8}-\d{6}-txt2img-7-[0-9a-f]{16}\.png", n))
    assert any(re.fullmatch(r"\d{8}-\d{6}-vl-conditioning-[0-9a-f]{16}\.safetensors", n) for n in made), made
    assert fetch(png).status_code == 200  # the folder is served: only the name protects a file


def test_upload_errors_name_the_original_file_not_the_server_path(hosted, tmp_path):
    broken = tmp_path / "holiday.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    message = _message(lambda: hosted["client"].predict(image=handle_file(str(broken)), prompt="a cat", height=64,
                                                        width=64, api_name="/img2img"))
    assert "- image: image: holiday.png is not a readable image" in message
    assert "/tmp" not in message and "gradio" not in message


def test_model_load_errors_name_no_server_path(tiny_cache, tmp_path):
    settings = Settings(model_path="/srv/models/zimage-private", hosting="hosted", output_dir=str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        ModelManager(settings).pipeline()
    assert "/srv" not in str(info.value) and "server log" in str(info.value)
    with pytest.raises(ModelLoadError, match="/srv/models/zimage-private"):  # locally the path helps
        ModelManager(Settings(model_path="/srv/models/zimage-private", hosting="local")).pipeline()


def test_model_ids_shown_are_base_names_when_hosted():
    hosted, local = Policy(hosted=True, reason=""), Policy(hosted=False, reason="")
    assert hosted.public_name("/srv/models/Z-Image-Turbo") == "Z-Image-Turbo"
    assert hosted.public_name("Tongyi-MAI/Z-Image-Turbo") == "Tongyi-MAI/Z-Image-Turbo"  # a hub id stays
    assert local.public_name("/srv/models/Z-Image-Turbo") == "/srv/models/Z-Image-Turbo"


# ---- uploads -------------------------------------------------------------------------------------------
def test_uploads_are_capped(hosted, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 2**20))
    with open(big, "rb") as f:
        reply = httpx.post(hosted["url"] + "gradio_api/upload", files={"files": ("big.png", f)}, timeout=30)
    assert reply.status_code == 413


def test_auto_passes_gradio_the_share_link_it_decided():
    """`launch()` is told share=True/False explicitly: gradio never opens a link the policy missed."""
    assert launch_options(Settings(), environ={"GRADIO_SHARE": "True"})["share"] is True
    assert launch_options(Settings(), environ={})["share"] is False


def test_mcp_is_refused_on_a_hosted_app():
    """gradio's MCP server puts every MCP client in one session: hosted, it is refused at start-up."""
    with pytest.raises(ValueError, match=r"^mcp_server: this app is hosted \(--hosting hosted\).*leave out --mcp-server"):
        launch_options(Settings(hosting="hosted", mcp_server=True), environ={})
    assert launch_options(Settings(hosting="local", mcp_server=True), environ={})["mcp_server"] is True


# ---- budgets: checked before the queue -----------------------------------------------------------------
def _bomb(path: Path, side: int = 13376) -> Path:
    """A 16-bit greyscale PNG of side² zero pixels, 348 KB on disk, 358 MB decoded (the deflate
    stream is one block repeated: a full flush makes identical input compress identically)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row, rows = b"\0" * (1 + side * 2), 64
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row * rows) + deflate.flush(zlib.Z_FULL_FLUSH)
    total = len(row) * side
    stream = (b"\x78\xda" + block * (side // rows) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
              + struct.pack(">I", (total % 65521) << 16 | 1))  # adler32 of zeros
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return path


def _peak_rss_growth(call):
    """(the highest rise of this process's RSS while `call()` ran, sampled every 5 ms; its result):
    the server runs in this process, and a decode's memory is given back once the request ends."""
    import threading

    import psutil

    process, done = psutil.Process(), threading.Event()
    before = process.memory_info().rss
    peak = [before]

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = call()
    finally:
        done.set()
        watcher.join()
    return peak[0] - before, result


@pytest.mark.parametrize("api,args", [
    ("/img2img", lambda f: {"image": f, "prompt": "x", "height": 64, "width": 64}),
    ("/vl_generate", lambda f: {"references": [f], "prompt": "x", "height": 64, "width": 64}),
    ("/vl_encode", lambda f: {"reference": f}),
    ("/rewrite", lambda f: {"image": f, "prompt": "x", "backend": "openai", "server": "lab", "model": "stream"}),
])
def test_a_decompression_bomb_is_refused_from_its_header(hosted, tmp_path, api, args):
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 400_000
    started = time.monotonic()
    growth, message = _peak_rss_growth(
        lambda: _message(lambda: hosted["client"].predict(**args(handle_file(str(bomb))), api_name=api)))
    print(f"{api}: bomb refused in {time.monotonic() - started:.2f} s, RSS peak +{growth / 2**20:.0f} MB")
    assert "bomb.png is 13376×13376 px (170.6 MP); this app takes at most 16.0 MP" in message
    assert growth < 200 * 2**20  # decoded, it is 358 MB (16-bit) at least


def test_an_oversized_request_is_refused_before_the_queue(hosted):
    client, manager = hosted["client"], hosted["manager"]
    _txt2img(client)
    calls = []
    hook = manager.pipeline().transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert "- height: height=4096, width=4096: 16.0 MP per image is over this app's budget of 4.0 MP" in _message(
            lambda: _txt2img(client, height=4096, width=4096, num_inference_steps=100))
        assert "- num_inference_steps: num_inference_steps=100 is over this app's budget of 50 steps" in _message(
            lambda: _txt2img(client, num_inference_steps=100))
    finally:
        hook.remove()
    assert calls == []  # nothing reached the DiT


def test_a_1024_cell_sweep_is_refused_before_the_queue(hosted, tmp_path):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "ref.png")
    values = ",".join(str(s) for s in range(32))
    message = _message(lambda: hosted["client"].predict(
        references=[handle_file(str(tmp_path / "ref.png"))], x_axis="seed", x_values=values, y_axis="alpha",
        y_values=",".join(f"{a / 31:.4f}" for a in range(32)), cell_limit=1024, prompt="x", height=64, width=64,
        api_name="/compare"))
    assert "this sweep has 1024 cells, over this app's budget of 64 cells per sweep" in message
    # within the cell budget, the cells' work together is what counts
    message = _message(lambda: hosted["client"].predict(
        references=[handle_file(str(tmp_path / "ref.png"))], x_axis="seed", x_values=",".join(map(str, range(60))),
        cell_limit=64, prompt="x", height=1024, width=1024, num_inference_steps=8, api_name="/compare"))
    assert "cell_limit: this sweep's 60 cells are 480 megapixel-steps of work, over this app's budget of 400" in message


def test_an_inline_data_url_over_the_body_budget_is_refused(hosted, tmp_path):
    """The upload cap (1 MB here) also binds an image sent inline as a data: URL in the JSON body;
    an inline image is checked from its header like an upload, and a small one is queued."""
    import base64

    index = next(d["id"] for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "img2img")
    from ui.tabs.img2img import FIELDS as IMG2IMG

    def join(payload: bytes):
        url = "data:image/png;base64," + base64.b64encode(payload).decode()
        data = [{"url": url, "path": "inline.png"}, None] + [  # no FileData meta: gradio moves nothing, preprocess gets the URL; no mask
            {"prompt": "x", "height": 64, "width": 64}.get(f, field_meta(f)["default"]) for f in IMG2IMG]
        return httpx.post(hosted["url"] + "gradio_api/queue/join", timeout=60,
                          json={"data": data, "fn_index": index, "session_hash": "inline"})

    big = join(b"\x89PNG" + os.urandom(3 * 2**20))
    assert big.status_code == 413 and "over this app's budget of 2,446,677 bytes per request" in big.text
    bomb = join(_bomb(tmp_path / "bomb.png").read_bytes())  # under the body budget: refused from its header
    assert bomb.status_code == 422 and "13376×13376 px (170.6 MP)" in bomb.text
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(small)
    assert join(small.read_bytes()).status_code == 200


def test_a_long_session_hash_is_refused_before_gradio_keeps_it(hosted):
    """Gradio keeps each session's state by its hash: a 1 MB hash was 1 MB held per request. A hash
    over 128 characters is refused (400) in a body, a query and the heartbeat's path; a normal one
    is served."""
    index = next(d["id"] for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "txt2img")
    long = "x" * 129
    joined = httpx.post(hosted["url"] + "gradio_api/queue/join", timeout=30,
                        json={"data": [], "fn_index": index, "session_hash": long})
    assert joined.status_code == 400 and "session_hash: longer than 128 characters" in joined.text
    streamed = httpx.get(hosted["url"] + "gradio_api/queue/data", params={"session_hash": long}, timeout=30)
    assert streamed.status_code == 400
    beat = httpx.get(hosted["url"] + f"gradio_api/heartbeat/{long}", timeout=30)
    assert beat.status_code == 400
    templates = next(d["id"] for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "templates")
    fine = httpx.post(hosted["url"] + "gradio_api/run/predict", timeout=30,
                      json={"data": [], "fn_index": templates, "session_hash": "a" * 128})
    assert fine.status_code == 200, fine.text


def test_every_queued_event_without_a_validator_is_a_pre_check(hosted):
    """A queued event takes one of the queue's 32 places, and only a validator can refuse a client
    over its share: 1,447 joins of the validator-less read_study filled the queue. Every queued
    event has a validator, but the page's pre-checks (their own unlimited group, answered at once)."""
    fns = hosted["demo"].fns.values()
    queued = [fn for fn in fns if fn.fn is not None and fn.queue is not False]
    unguarded = sorted(fn.api_name for fn in queued if fn.validator is None and fn.concurrency_id != "checks")
    assert unguarded == []
    assert {fn.api_name for fn in queued if fn.concurrency_id == "checks"} >= {"txt2img_check", "compare_check"}


def test_a_visitor_never_finds_another_visitors_prompt_in_the_cache(hosted):
    """A shared text cache told a visitor that someone else had sent a prompt (its encode took
    0.0002 s instead of a fresh one's 0.3-1 s). Hosted, each visitor's encodes are their own: the
    same prompt from another session is encoded again; from the same session it is found."""
    cache = hosted["manager"].text_cache
    secret = f"a private prompt {uuid.uuid4().hex}"
    victim, attacker = hosted["client"], Client(hosted["url"], verbose=False)
    _txt2img(victim, prompt=secret)
    misses = cache.misses
    _txt2img(victim, prompt=secret)
    assert cache.misses == misses  # the visitor's own repeat: found
    *_, meta = _txt2img(attacker, prompt=secret)
    assert cache.misses == misses + 1  # another visitor: encoded afresh
    assert meta["timeline"]


# ---- a broken checkpoint -------------------------------------------------------------------------------
def test_a_truncated_shard_does_not_stop_start_up(zimage_dir, manager, tmp_path):
    """An interrupted download (a DiT shard cut in half): the app starts, the plan names the file,
    the first generation's message names it with both sizes and the fix, and once the file is
    repaired the next request works without a restart."""
    broken = tmp_path / "zimage"
    shutil.copytree(zimage_dir, broken)
    shard = sorted((broken / "transformer").glob("*.safetensors"))[-1]
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    settings = Settings(model_path=str(broken), vl_model_path=manager.vl_source, hosting="hosted",
                        output_dir=str(tmp_path / "outputs"))
    served = ModelManager(settings)
    demo, url = _serve(settings, served)  # start-up goes on
    try:
        assert f"transformer/{shard.name} could not be read" in "\n".join(served.memory_plan().lines())
        client = Client(url, verbose=False)
        message = _message(lambda: _txt2img(client))
        assert (f"transformer/{shard.name} is {len(whole) // 2:,} bytes, its header declares {len(whole):,}"
                in message and "re-download" in message and str(tmp_path) not in message)
        shard.write_bytes(whole)  # the operator re-downloads the file
        assert _txt2img(client)[2]["forwards"] == 8
    finally:
        demo.close()


# ---- what a visitor sees of the others ------------------------------------------------------------------
def test_hosted_status_shows_only_the_visitors_own_timeline(hosted):
    """Another visitor's stage timings would tell whether their prompt was cached (encode 0.0002 s
    against 0.43 s): hosted, the status tab's timeline is the asking session's own."""
    url = hosted["url"]
    visitor, stranger = Client(url, verbose=False), Client(url, verbose=False)
    _txt2img(visitor, prompt="a private prompt")
    show = next(d["id"] for d in _config(url)["dependencies"] if d.get("api_name") == "show")

    def timeline(session):
        reply = httpx.post(url + "gradio_api/run/predict", timeout=30,
                           json={"fn_index": show, "data": [], "session_hash": session})
        assert reply.status_code == 200, reply.text
        return reply.json()["data"][2]

    assert "| encode |" in timeline(visitor.session_hash)
    assert "(no generation yet)" in timeline(stranger.session_hash)


def test_every_model_touching_event_is_in_the_gpu_group(hosted):
    """The VL blend preview encodes the prompt: it queues with the generations (and their
    validator), never beside them."""
    fns = {fn.api_name: fn for fn in hosted["demo"].fns.values()}
    for name in ("vl_preview", "vl_generate", "vl_extract", "compare", "vl_encode", "encode", "img2img", "txt2img"):
        assert fns[name].concurrency_id == "gpu" and fns[name].validator is not None, name


@pytest.mark.parametrize("flags,message", [
    ({"max_steps": -2}, r"^max_steps=-2: use -1 \(the mode's default\), 0 \(no budget\) or a positive budget"),
    ({"trusted_proxy": "proxy.local"}, r"^trusted_proxy='proxy.local' is not an IP address or network"),
])
def test_budget_and_proxy_flags_are_checked_at_start_up(flags, message):
    with pytest.raises(ValueError, match=message):
        Settings(**flags)


def test_budgets_follow_the_mode_and_the_operator():
    from llm_dit.serving.policy import from_settings

    hosted, local = from_settings(Settings(hosting="hosted")), from_settings(Settings(hosting="local"))
    assert (hosted.budgets.steps, hosted.budgets.cells, local.budgets.steps, local.budgets.cells) == (50, 64, 0, 0)
    assert from_settings(Settings(hosting="hosted", max_steps=0, max_cells=16)).budgets.steps == 0
    assert from_settings(Settings(hosting="hosted", max_steps=0, max_cells=16)).budgets.cells == 16
    assert hosted.budgets.body_bytes == local.budgets.body_bytes == 50 * 2**20 * 4 // 3 + 2**20


def test_the_png_info_tab_reads_a_bomb_without_decoding_it(hosted, tmp_path):
    """PNG info reads text chunks; Pillow finds those after the pixels only by decoding them."""
    uploaded = _upload(hosted["url"], _bomb(tmp_path / "bomb.png"))
    dep = next(d for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "load_png")
    growth, reply = _peak_rss_growth(lambda: httpx.post(
        hosted["url"] + "gradio_api/run/predict", timeout=60,
        json={"fn_index": dep["id"], "data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]
              + [None] * (len(dep["inputs"]) - 1), "session_hash": "bomber"}))
    assert reply.status_code == 200, reply.text
    assert growth < 200 * 2**20


def _cache_bytes() -> int:
    from gradio.utils import get_upload_folder

    return sum(p.stat().st_size for p in Path(get_upload_folder()).rglob("*") if p.is_file())


def test_a_permitted_sweep_grows_gradios_cache_linearly_in_its_cells(hosted, tmp_path):
    """Every cached copy is kept a day: a sweep that sent its whole grid after each cell grew the
    cache quadratically (16 / 64 / 256 cells: 1.9 / 25 / 371 MiB). Cells go as they finish, grids
    once at the end, so four times the cells costs about four times the bytes."""
    Image.new("RGB", (64, 64), (20, 160, 90)).save(tmp_path / "ref.png")
    grown = {}
    for cells, offset in ((4, 100), (16, 200)):  # other seeds each time: no copy is shared with the other run
        before = _cache_bytes()
        progress, grids, *_ = hosted["client"].predict(
            references=[handle_file(str(tmp_path / "ref.png"))], x_axis="seed",
            x_values=",".join(str(offset + s) for s in range(cells)), prompt="a pond", height=64, width=64,
            num_inference_steps=2, cell_limit=cells, api_name="/compare")
        assert f"{cells} / {cells} cells" in progress and len(grids) == 1
        grown[cells] = _cache_bytes() - before
    ratio = grown[16] / grown[4]
    print(f"\ncache growth: 4 cells {grown[4] / 1e3:.0f} kB, 16 cells {grown[16] / 1e3:.0f} kB (x{ratio:.1f})")
    assert ratio < 6, grown  # linear: about 4 (3.9 here); a grid re-sent after every cell gave 9.0


def test_png_info_never_hands_out_another_visitors_reference(hosted, tmp_path):
    """A shared VL output records its references' sha256: loading it on a hosted server must not
    find the (often private) reference among every visitor's uploads and return its path."""
    import json

    from PIL import PngImagePlugin

    from llm_dit.core.images import image_sha256, load_image
    from llm_dit.core.pnginfo import JSON_KEY

    private = tmp_path / "my_private_photo.png"
    Image.new("RGB", (64, 64), (12, 34, 56)).save(private)
    victims = _upload(hosted["url"], private)  # the victim's upload, in gradio's cache
    info = PngImagePlugin.PngInfo()
    info.add_text(JSON_KEY, json.dumps({"mode": "vl", "request": {"prompt": "x"}, "vl": {"references": [
        {"sha256": image_sha256(load_image(str(private))), "size": [64, 64]}]}}))
    shared = tmp_path / "shared.png"
    Image.new("RGB", (64, 64)).save(shared, pnginfo=info)
    dep = next(d for d in _config(hosted["url"])["dependencies"] if d.get("api_name") == "load_png")
    reply = httpx.post(hosted["url"] + "gradio_api/run/predict", timeout=60, json={
        "fn_index": dep["id"], "data": [{"path": _upload(hosted["url"], shared), "meta": {"_type": "gradio.FileData"}}]
        + [None] * (len(dep["inputs"]) - 1), "session_hash": "stranger"})
    assert reply.status_code == 200, reply.text
    assert victims not in reply.text and "my_private_photo" not in reply.text
    assert "does not look references up among its visitors' files" in reply.text
