"""The GPU proof's CPU dry run: the same command, the tiny architectures, seconds. It keeps the
one-command proof from rotting until a GPU is lent."""

import json

from llm_dit import bench
from llm_dit.gpu_proof import Clock, table


def test_gpu_proof_dry_run_writes_json_and_table(tmp_path, tiny_cache):
    out, md = tmp_path / "proof.json", tmp_path / "proof.md"
    result = bench.main(["gpu-proof", "--dry-run", "--image", "64", "--cache-dir", str(tiny_cache),
                         "--json", str(out), "--md", str(md)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    parts = result["parts"]
    assert set(parts) == {"install", "stages", "P5", "VL", "caps", "compile"} and "error" not in str(parts)
    # Measured (MemTracker on the real tensors) equals traced (fake tensors), and the planner's
    # estimate (its terms fitted to the released architectures) is not below it (1 % for rounding).
    assert len(parts["stages"]) == 5
    for name, row in parts["stages"].items():
        assert row["measured_mib"] == row["traced_mib"] > 0, name
        assert row["planned_mib"] >= 0.99 * row["traced_mib"], name
    # P5: ours (the manager over the adopted models) beside raw diffusers, with the ratio.
    p5 = parts["P5"]["native"]
    assert p5["raw_s"] > 0 and p5["ours_s"] > 0 and p5["ours_over_raw"] == round(p5["ours_s"] / p5["raw_s"], 3)
    assert p5["raw_peak_gib"] > 0 and p5["ours_peak_gib"] > 0
    # The VL recipe end to end: extraction, blend and img2img ran through our pipeline.
    vl = parts["VL"]["img2img"]
    assert vl["seconds"] > 0 and vl["peak_gib"] > 0 and vl["vl_extract_s"] > 0 and vl["denoise_s"] > 0
    assert vl["model"] == "random-weight tiny architecture" and vl["vl_tokens"]
    # The caps: the plan at each budget (the tiny models fit any card), then both offloads, each
    # placed by our manager, run, and measured under its cap.
    caps = parts["caps"]
    assert list(caps) == ["24 GiB: plan", "16 GiB: plan", "12 GiB: plan", "16 GiB: model offload",
                          "12 GiB: group offload"]
    assert [row["plan"] for row in caps.values()][:3] == ["all on the GPU"] * 3
    assert [row["offload"] for row in caps.values()] == ["none", "none", "none", "model", "group"]
    assert all(row["measured_gib"] > 0 and row["under_cap"] for row in caps.values())
    assert [row["metadata_offload"] for row in caps.values()] == ["none", "none", "none", "model", "group"]
    assert set(result["seconds"]) == {"stages", "P5", "VL", "caps", "compile"}
    text = md.read_text()
    assert "| stages | DiT step 64x64 |" in text and "| caps | 12 GiB: group offload |" in text
    assert "| compile | | {'skipped': 'compilation is measured on a GPU only'} |" in text


def test_gpu_proof_stops_at_its_time_limit(tmp_path, tiny_cache):
    md = tmp_path / "p.md"
    result = bench.main(["gpu-proof", "--dry-run", "--limit-s", "0", "--cache-dir", str(tiny_cache),
                         "--json", str(tmp_path / "p.json"), "--md", str(md)])
    skipped = {"skipped": "time limit: 0 s of 0 s left"}
    assert all(result["parts"][p] == skipped for p in ("stages", "P5", "VL", "caps", "compile"))
    assert f"| VL | | {skipped} |" in md.read_text()


def test_a_part_starts_only_when_the_time_left_covers_its_budget():
    clock, parts = Clock(100, {"P5": 60, "caps": 150}), {}
    clock.run("P5", lambda: {"native": {"ours_s": 1.0}}, parts)
    clock.run("VL", lambda: 1 / 0, parts)  # a failing part keeps its error and stops nothing
    clock.run("caps", lambda: {"never": {}}, parts)
    assert parts["P5"] == {"native": {"ours_s": 1.0}}
    assert parts["VL"] == {"error": "ZeroDivisionError: division by zero"}
    assert parts["caps"]["skipped"].startswith("time limit: ") and parts["caps"]["skipped"].endswith(
        "s of 100 s left, the part needs ~150 s")
    text = table({"device": "cpu", "size": "tiny", "image": 64, "parts": parts, "seconds": clock.seconds})
    assert f"| caps | | {parts['caps']} |" in text
    assert "| compile | | {'skipped': 'not reached: the run stopped before it'} |" in text
