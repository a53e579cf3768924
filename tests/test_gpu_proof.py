"""The GPU proof's CPU dry run: the same command, the tiny architectures, seconds. It keeps the
one-command proof from rotting until a GPU is lent."""

import json

from llm_dit import bench


def test_gpu_proof_dry_run_writes_json_and_table(tmp_path):
    out, md = tmp_path / "proof.json", tmp_path / "proof.md"
    result = bench.main(["gpu-proof", "--dry-run", "--image", "64", "--json", str(out), "--md", str(md)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    parts = result["parts"]
    assert set(parts) == {"install", "stages", "P5", "caps", "compile"} and "error" not in str(parts)
    # Measured (MemTracker on the real tensors) equals traced (fake tensors), and the planner's
    # estimate (its terms fitted to the released architectures) is not below it (1 % for rounding).
    assert len(parts["stages"]) == 5
    for name, row in parts["stages"].items():
        assert row["measured_mib"] == row["traced_mib"] > 0, name
        assert row["planned_mib"] >= 0.99 * row["traced_mib"], name
    assert parts["P5"]["native"]["seconds_per_image"] > 0
    assert [row["plan"] for row in parts["caps"].values()] == [
        "all on the GPU", "all on the GPU", "all on the GPU"]  # the tiny models fit any card
    assert set(result["seconds"]) == {"stages", "P5", "caps", "compile"}
    assert "| stages | DiT step 64x64 |" in md.read_text()


def test_gpu_proof_stops_at_its_time_limit(tmp_path):
    result = bench.main(["gpu-proof", "--dry-run", "--limit-s", "0", "--json", str(tmp_path / "p.json"),
                         "--md", str(tmp_path / "p.md")])
    assert all(result["parts"][p] == {"skipped": "time limit reached"} for p in ("stages", "P5", "caps", "compile"))
