"""Studio pieces without a browser: size presets, history, the ZeroGPU duration and settings."""

import pytest

from llm_dit.core.presets import load_resolutions
from llm_dit.core.request import GenerationRequest, VLRequest
from llm_dit.runtime.settings import load_settings
from ui import history
from ui.gpu import MAX_S, gpu_seconds

OFFICIAL = {
    1024: ["1024x1024", "1152x896", "896x1152", "1152x864", "864x1152", "1248x832", "832x1248", "1280x720",
           "720x1280", "1344x576", "576x1344"],
    1280: ["1280x1280", "1440x1120", "1120x1440", "1472x1104", "1104x1472", "1536x1024", "1024x1536", "1536x864",
           "864x1536", "1680x720", "720x1680"],
    1536: ["1536x1536", "1728x1344", "1344x1728", "1728x1296", "1296x1728", "1872x1248", "1248x1872", "2048x1152",
           "1152x2048", "2016x864", "864x2016"],
}
RATIOS = ["1:1", "9:7", "7:9", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"]


def test_resolution_presets_are_the_official_list():
    sizes = load_resolutions()
    assert len(sizes) == 33
    for tier, expected in OFFICIAL.items():
        got = [r for r in sizes if r.tier == tier]
        assert [f"{r.width}x{r.height}" for r in got] == expected
        assert [r.ratio for r in got] == RATIOS
    assert all(r.width % 16 == 0 and r.height % 16 == 0 for r in sizes)


def _entry(i, mode="txt2img"):
    return f"/tmp/{i}.png", {"mode": mode, "seed": i, "request": {"prompt": f"p{i}", "seed": i}}


def test_history_is_newest_first_and_capped():
    hist = []
    for i in range(5):
        hist = history.add(hist, *_entry(i), {}, cap=3)
    assert [e["metadata"]["seed"] for e in hist] == [4, 3, 2]
    assert history.add(hist, None, None, {}, cap=3) == hist  # a failed run adds nothing
    assert history.gallery_items(hist)[0] == ("/tmp/4.png", "p4 · txt2img · seed 4")


def test_history_restores_into_the_right_tab_with_its_inputs():
    hist = history.add([], *_entry(7, "vl"), {"references": ["/tmp/ref.png"], "structure_image": None}, cap=3)
    tab, values, inputs = history.restore(hist[0])
    assert tab == "vl" and values == {"prompt": "p7", "seed": 7} and inputs == {"references": ["/tmp/ref.png"]}


def test_history_from_the_browser_is_checked_entry_by_entry(tmp_path):
    """The list comes back from localStorage, i.e. from the client: only entries whose files lie in
    the allowed folders (and exist) survive; a bad image input is dropped from its entry."""
    allowed = tmp_path / "outputs"
    allowed.mkdir()
    good, ref = allowed / "a.png", allowed / "ref.png"
    good.write_bytes(b"png"), ref.write_bytes(b"png")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    meta = {"mode": "vl", "seed": 3, "request": {"prompt": "p", "seed": 3}}
    forged = [
        {"image": str(good), "metadata": meta, "inputs": {"references": [str(ref), str(secret)],
                                                           "structure_image": "/etc/passwd"}},
        {"image": str(secret), "metadata": meta, "inputs": {}},  # outside the allowed folders
        {"image": str(allowed / ".." / "secret.png"), "metadata": meta, "inputs": {}},  # climbs out
        {"image": str(allowed / "gone.png"), "metadata": meta, "inputs": {}},  # deleted since
        {"image": str(good), "metadata": {"mode": "vl"}, "inputs": {}},  # no request
        {"image": str(good), "metadata": meta, "inputs": "x"},
        "not an entry",
    ]
    kept = history.trusted(forged, [allowed], cap=10)
    assert kept == [{"image": str(good), "metadata": meta, "inputs": {"references": [str(ref)]}}]
    assert history.trusted({"image": str(good)}, [allowed], cap=10) == []
    assert len(history.trusted([forged[0]] * 20, [allowed], cap=5)) == 5


def test_history_remove_takes_out_one_entry():
    hist = []
    for i in range(3):
        hist = history.add(hist, *_entry(i), {}, cap=5)
    assert [e["metadata"]["seed"] for e in history.remove(hist, 1)] == [2, 0]
    assert history.remove(hist, 7) == hist and history.remove(hist, None) == hist


def test_gpu_duration_grows_with_the_work():
    base = gpu_seconds(GenerationRequest())
    assert gpu_seconds(GenerationRequest(num_inference_steps=16)) > base
    assert gpu_seconds(GenerationRequest(height=2048, width=2048)) > base
    assert gpu_seconds(GenerationRequest(), cells=6) > base
    assert gpu_seconds(VLRequest(), extractions=2) > base
    assert gpu_seconds(GenerationRequest(num_inference_steps=100, height=4096, width=4096), cells=64) == MAX_S
    assert gpu_seconds(None, new_tokens=512) >= 10


def test_zero_gpu_settings(monkeypatch):
    s = load_settings([], environ={"SPACES_ZERO_GPU": "true"})
    assert s.zero_gpu and not s.vl_auto_unload
    assert {s.text_encoder_device, s.transformer_device, s.vae_device, s.vl_device} == {"cuda"}
    assert not load_settings([], environ={}).zero_gpu


def test_spaces_gpu_is_inert_off_zero_gpu():
    from ui.gpu import on_gpu

    def work(request):
        return request.prompt

    assert on_gpu(work, duration=gpu_seconds) is work


@pytest.mark.parametrize("size", [0, -1])
def test_history_size_must_be_positive(size):
    with pytest.raises(ValueError, match=f"history_size={size} must be at least 1"):
        load_settings(["--history-size", str(size)], environ={})
