"""Drive every public endpoint of a running Z-Image VL Studio with gradio_client.

    python app.py --tiny &                      # or the real models, or a Space
    python examples/client_guide.py http://127.0.0.1:7860/ [--size 64] [--out client-outputs]

Each call prints what it got back. Parameter names are the request fields (see the README).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the app's address, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--size", type=int, default=1024, help="image side (multiple of 16; 64 for --tiny)")
    parser.add_argument("--out", default="client-outputs", help="where to copy the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    client = Client(args.url, verbose=False)
    size = {"height": args.size, "width": args.size}
    got = {}

    # 1. The templates (style templates for any tab, rewriters for /rewrite).
    templates = client.predict(api_name="/templates")
    got["templates"] = len(templates)
    print(f"templates: {len(templates)}, e.g. {templates[0]['name']!r} ({templates[0]['category']})")

    # 2. Rewrite a short idea into a detailed prompt with the loaded Qwen3 (streams in the UI).
    text, raw, meta = client.predict(prompt="a fox in a snowy forest", template="Concise expander",
                                     max_new_tokens=64, seed=1, api_name="/rewrite")
    got["rewrite"] = meta["backend"]
    print(f"rewrite ({meta['backend']}, {meta['seconds']} s): {text[:80]!r}")

    # 3. txt2img: a PNG with its parameters embedded, the seed used and the metadata.
    png, seed, meta = client.predict(prompt="a fox in a snowy forest, golden hour", seed=42,
                                     template="Golden hour landscape", **size, api_name="/txt2img")
    shutil.copy(png, out / "txt2img.png")
    got["txt2img"] = seed
    print(f"txt2img: seed {seed}, {meta['forwards']} forwards, sigmas {meta['sigmas']}")

    # 4. img2img from that PNG: strength 0.6 runs int(8 x 0.6) = 4 forwards from sigma 0.75.
    png2, seed2, meta2 = client.predict(image=handle_file(png), prompt="the same fox, as a watercolour",
                                        strength=0.6, seed=seed, **size, api_name="/img2img")
    shutil.copy(png2, out / "img2img.png")
    got["img2img"] = meta2["forwards"]
    print(f"img2img: {meta2['forwards']} forwards from sigma {meta2['start_sigma']}")

    # 5. VL conditioning: the reference's look through Qwen3-VL, blended at alpha 0.3.
    reference = out / "reference.png"
    Image.new("RGB", (256, 256), (230, 120, 40)).save(reference)
    png3, seed3, meta3, report, token_map, readout = client.predict(
        references=[handle_file(str(reference))], prompt="a fox in a snowy forest", alpha=0.3,
        strength=0.9, seed=seed, **size, api_name="/vl_generate")
    shutil.copy(png3, out / "vl.png")
    got["vl_generate"] = report["effective_alpha"]
    print(f"vl_generate: VL share {report['effective_alpha']} (alpha 0.3) after the DiT's caption RMSNorm")

    # 6. Extraction only: statistics and a .safetensors with the blended prompt_embeds.
    stats, export, token_map, readout = client.predict(
        references=[handle_file(str(reference))], prompt="a fox in a snowy forest", api_name="/vl_extract")
    shutil.copy(export, out / "conditioning.safetensors")
    got["vl_extract"] = stats["stats"]["vl_after_scaling"]["std"]
    print("vl_extract:", json.dumps(stats["stats"]["vl_after_scaling"])[:120])

    # 7. A layer scan: one VL forward, statistics of every hidden layer (CSV) and a suggested layer.
    correlation, outliers, scan_csv, suggestion = client.predict(
        references=[handle_file(str(reference))], prompt="a fox in a snowy forest", api_name="/vl_layer_scan")
    shutil.copy(scan_csv, out / "layer-scan.csv")
    got["vl_layer_scan"] = suggestion
    print(f"vl_layer_scan: {len(correlation['data'])} rows; {suggestion}")

    # 8. A comparison sweep: blend mode x alpha, one extraction and one encode for all cells.
    progress, grids, table, cells, files, counts = client.predict(
        references=[handle_file(str(reference))], x_axis="blend_mode", x_values="linear, linear_rms",
        y_axis="alpha", y_values="0.3, 0.6", prompt="a fox in a snowy forest", seed=seed, **size,
        api_name="/compare")
    shutil.copy(grids[0]["image"], out / "compare-grid.png")
    got["compare"] = counts
    print(f"compare: {counts['finished']} cells, {counts['extractions_run']} extraction(s), "
          f"{counts['encodes_run']} encode(s); table columns {table['headers']}")

    # 9. Encoders for another instance (--text-encoder-url / --vl-url): .safetensors files.
    encoding = client.predict(prompt="a fox in a snowy forest", hidden_layer=-2, api_name="/encode")
    extraction = client.predict(reference=handle_file(str(reference)), vl_text="a fox", api_name="/vl_encode")
    got["encode"], got["vl_encode"] = Path(encoding).name, Path(extraction).name
    print(f"encode: {got['encode']}; vl_encode: {got['vl_encode']}")

    # 10. Studies: run one from its TOML text (the format of presets/studies/*.toml) over your
    # references, list yours (the sweep above is one too), read one: study.json, summary, files.
    study = "seeds = [1, 2]\n[axes]\nalpha = [0.3, 0.6]\n[base]\nprompt = \"a fox in a snowy forest\"\n" + "".join(
        f"{k} = {v}\n" for k, v in size.items())
    progress, _ = client.predict(study, [handle_file(str(reference))], api_name="/run_study_text")
    mine = client.predict(api_name="/list_my_studies")
    summary, files = client.predict(mine[0]["name"], api_name="/read_study")
    got["run_study_text"], got["list_my_studies"], got["read_study"] = progress, len(mine), summary["info"]["status"]
    print(f"run_study_text: {progress}; list_my_studies: {len(mine)} studies; read_study: "
          f"{len(summary['summary'])} summary rows, {len(files)} files")
    return got


if __name__ == "__main__":
    main()
