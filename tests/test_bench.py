"""Smoke test: the benchmark runs end to end on tiny models and writes its table (no timing asserts)."""

import json

from llm_dit import bench


def test_benchmark_smoke(tiny_cache, tmp_path):
    out = tmp_path / "bench.json"
    results = bench.main(["--size", "tiny", "--image", "64", "--repeats", "1", "--cache-dir", str(tiny_cache),
                          "--json", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved) >= {"machine", "P1", "P2", "P3", "P4", "P5", "P6"}
    assert "failed" not in saved["P6"], saved["P6"]["failed"]  # the launch's own stderr tells why
    assert saved["P6"]["2_process"]["cells"] == saved["P6"]["1_process"]["cells"] == 8
    assert saved["P5"] == {"skipped": "no CUDA GPU on this machine"}
    assert set(saved["P1"]) == {"a_new_prompt", "b_text_encoder_on_cpu", "c_same_prompt"}
    assert saved["P1"]["c_same_prompt"]["encodes_run_by_ours"] == 1  # encoded once, then never again
    counts = saved["P2"]["counts_first_run"]
    assert counts["extractions_run"] == counts["distinct_extractions"] == 1
    assert counts["encodes_run"] == counts["distinct_texts"] == 1
    assert "| P1 a_new_prompt |" in bench.table(results)
    # P7: the bf16 CPU encode gives the hidden states the DiT reads within a few % of float32
    assert 0 < saved["P7"]["max_rel_diff"] < 0.05 and "| P7 CPU text encode" in bench.table(results)
