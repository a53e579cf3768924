"""While a generation runs, its progress bar stays on screen: a handler that yields nothing while
it works (ui/common.py). A heartbeat of empty updates every 0.1 s made gradio hide the bar on
each one, so it flickered (on screen in about half of the samples)."""

from playwright.sync_api import expect

from tests.test_browser import _set_size, page  # noqa: F401 - the shared page fixture

SAMPLE = """async () => {
  const seen = [];
  const bar = () => document.querySelector('#txt2img .progress-text, #txt2img .progress-level');
  const running = () => !document.querySelector('#txt2img-result img');
  while (!bar()) await new Promise(r => setTimeout(r, 20));
  for (let i = 0; i < 40 && running(); i++) {  // every 50 ms while the job runs, 2 s at most
    const b = bar();
    seen.push(!!b && b.getClientRects().length > 0);
    await new Promise(r => setTimeout(r, 50));
  }
  return seen;
}"""


def test_the_progress_bar_stays_on_screen_while_the_job_runs(page):
    page.get_by_role("tab", name="txt2img").click()
    # 1024² and 100 steps: longer than the 2 s of samples on any machine (at 512² and 60 steps a fast
    # one finished after 8 samples); Stop then ends it.
    _set_size(page, "txt2img", 1024)
    tab = page.locator("#txt2img")
    tab.get_by_label("number input for Steps").fill("100")
    tab.get_by_label("number input for Steps").press("Enter")
    tab.locator("textarea").first.fill("a long job to watch")
    page.locator("#txt2img-generate").click()
    seen = page.evaluate(SAMPLE)  # 40 samples over 2 s, from the bar's first appearance
    page.locator("#txt2img-stop").click()
    expect(page.locator("#txt2img-generate")).to_be_enabled(timeout=120_000)
    expect(page.locator("#txt2img-stop")).to_be_hidden(timeout=60_000)
    tab.get_by_label("number input for Steps").fill("8")
    tab.get_by_label("number input for Steps").press("Enter")
    assert len(seen) >= 10 and all(seen), f"the bar was on screen in {sum(seen)} of {len(seen)} samples"
