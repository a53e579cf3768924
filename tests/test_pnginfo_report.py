"""PNG info's report: what was read, the main settings at a glance, and what cannot be used."""

from llm_dit.core.pnginfo import Parameters
from ui.tabs.pnginfo import report, show_png


def test_the_report_says_what_can_and_cannot_be_used():
    clean = report(Parameters("img2img", {"prompt": "a fox", "width": 64, "height": 48, "seed": 3,
                                          "num_inference_steps": 8, "strength": 0.6}, "llm_dit"))
    assert "Everything in it can be used." in clean
    assert "prompt “a fox” · 64×48 · steps 8 · seed 3 · strength 0.6" in clean
    partial = report(Parameters("txt2img", {"prompt": "a fox"}, "a1111", unknown={"Sampler": "Euler"},
                                problems=["num_inference_steps=0 is out of range"]))
    assert "Everything in it can be used." not in partial
    assert "Not used (not parameters of this app): Sampler: Euler" in partial
    assert "Could not use num_inference_steps=0 is out of range" in partial


def test_a_file_that_is_not_a_readable_png_shows_why_and_no_button(tmp_path):
    bad = tmp_path / "not.png"
    bad.write_bytes(b"not a png at all")
    preview, text, raw, button, as_init = show_png(str(bad))
    assert preview is None and raw is None and text.startswith("⚠")
    assert button.visible is False and as_init.visible is False
