"""Manual measurement (not a test): one rewrite in the browser vs the same request over gradio_client.

    python tests/bench_stream.py --backend qwen3 --tokens 128 512 --repeats 3
    python tests/bench_stream.py --backend openai --tokens 256
    OMP_NUM_THREADS=1 python tests/bench_stream.py   # on a small shared CPU (see below)

Builds the app on the tiny offline models (and, for `--backend openai`, the loopback fake server of
tests/openai_server.py), then for each token budget alternates: the API call (`gradio_client`,
submit -> final result) and the browser (type, click Rewrite, wait for the final metadata), and
prints the medians and the ratio browser / API. In the browser it also counts how many distinct
values the result box showed before the final one (0 = nothing streamed), and times the same
stream read in Python with no server ("alone").

On a 2-core machine shared with other work, torch's OpenMP threads (one per core) stall whenever
another process takes a core, so the model itself slows several-fold and the numbers swing from
run to run; OMP_NUM_THREADS=1 leaves a core to the browser and gives steadier ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.test_browser import ARGS, CHROMIUM  # noqa: E402 - after the path and the offline switch
from tests.test_stream_browser import STOP  # noqa: E402

WATCH = """(prompt) => {  // each distinct value of the result box, and when the final metadata shows
  const seen = window.__seen = [];
  const box = document.querySelector('#rewrite-result textarea');
  const meta = document.querySelector('#rewrite-metadata');
  window.__done = null;
  const tick = () => {
    const v = box.value;
    if (!seen.length || seen[seen.length - 1] !== v) seen.push(v);
    if (window.__done === null && meta.textContent.includes(prompt)) window.__done = performance.now();
    window.__watch = requestAnimationFrame(tick);
  };
  tick();
  window.__t0 = performance.now();
}"""

def _api(client, request: dict) -> tuple[float, float]:
    """Seconds to the final result, and the seconds the server's metadata reports."""
    start = time.perf_counter()
    _, _, metadata = client.predict(None, *request.values(), api_name="/rewrite")
    return time.perf_counter() - start, metadata["seconds"]


def _alone(manager, request: dict) -> float:
    """Seconds for the same stream read in Python: the model alone, no server, no browser."""
    from llm_dit.core.request import RewriteRequest
    from llm_dit.pipelines.rewrite import rewrite_stream

    start = time.perf_counter()
    for _ in rewrite_stream(manager, RewriteRequest(**request)):
        pass
    return time.perf_counter() - start


def _browser(page, request: dict) -> tuple[float, float, int, int]:
    """Seconds from the click to the final metadata, the server's seconds, how many values the
    box showed before its final one, and the final length."""
    from playwright.sync_api import expect

    tab = page.locator("#rewrite")
    tab.locator("textarea").first.fill(request["prompt"])
    for label, key in (("Max new tokens", "max_new_tokens"), ("Seed", "seed")):
        box = tab.get_by_label(f"number input for {label}") if key == "max_new_tokens" else tab.get_by_label(
            label, exact=True)
        box.fill(str(request[key]))
        box.press("Enter")
    if request["backend"] == "openai":
        base = tab.get_by_label("Server base URL (local only)")
        base.fill(request["base_url"])
        tab.get_by_label("Server model").fill(request["model"])
    page.locator("#rewrite-result textarea").fill("")
    page.evaluate(WATCH, request["prompt"])
    page.locator("#rewrite-go").click()
    metadata = page.locator("#rewrite-metadata")
    expect(metadata).to_contain_text(request["prompt"], timeout=300_000)  # each run has its own prompt
    page.wait_for_function("() => window.__done !== null")
    seconds = page.evaluate("() => (window.__done - window.__t0) / 1000")  # the page's clock: no polling delay
    values = [v for v in page.evaluate(STOP) if v]
    server = float(re.search(r'"seconds"\s*:\s*([\d.]+)', page.locator("#rewrite-metadata").inner_text()).group(1))
    return seconds, server, max(0, len(values) - 1), len(values[-1]) if values else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["qwen3", "openai"], default="qwen3")
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from llm_dit.runtime.models import ModelManager
    from llm_dit.core.request import RewriteRequest
    from llm_dit.runtime.settings import Settings
    from ui import build_demo, launch_options

    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    settings = Settings(tiny=True, cache_dir=os.environ.get("LLM_DIT_CACHE_DIR", ""), output_dir=str(folder))
    manager = ModelManager(settings)
    server = None
    if args.backend == "openai":
        from tests import openai_server

        server = openai_server.start()
    demo = build_demo(settings, manager)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(settings))
    client = Client(url, verbose=False)
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Prompt rewriting").click()
        page.locator("#rewrite").get_by_text("Sampling", exact=True).click()
        if server:
            page.locator("#rewrite").get_by_text("OpenAI-compatible server", exact=True).click()
            page.locator("#rewrite").get_by_label("Backend").click()
            page.get_by_role("option", name="openai").click()
        for tokens in args.tokens:
            request = {**RewriteRequest().__dict__, "prompt": "a fox in the snow", "max_new_tokens": tokens,
                       "seed": 5, "backend": args.backend}
            if server:
                request.update(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="stream")
            _api(client, request)  # warm-up: loads the model, compiles nothing twice
            runs = []
            for i in range(args.repeats):
                request["prompt"] = f"a fox in the snow, take {tokens}.{i}"
                runs.append((_alone(manager, request),) + _api(client, request) + _browser(page, request))
            alone, api, api_server, web, web_server, partial, length = (statistics.median(r) for r in zip(*runs))
            rows.append((tokens, alone, api, api_server, web, web_server, web / api, min(r[5] for r in runs), length))
        browser.close()
    demo.close()
    print(f"\nbackend={args.backend}, median of {args.repeats}")
    print("alone: the stream read in Python; api / browser: seconds to the final result (server: the "
          "seconds its metadata reports); ratio: browser / api")
    print(f"{'tokens':>6} {'alone s':>8} {'api s':>7} {'server':>7} {'browser s':>10} {'server':>7} {'ratio':>6} "
          f"{'partial values':>15} {'final chars':>12}")
    for tokens, alone, api, api_server, web, web_server, ratio, partial, length in rows:
        print(f"{tokens:>6} {alone:>8.2f} {api:>7.2f} {api_server:>7.2f} {web:>10.2f} {web_server:>7.2f} "
              f"{ratio:>6.2f} {partial:>15} {length:>12.0f}")


if __name__ == "__main__":
    main()
