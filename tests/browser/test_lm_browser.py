"""The Language models page in a real browser (Chromium): two LM runs (forward KL and reverse KL students of the
bundled teacher), every tab opened, no error shown and a figure in each."""
import pytest

from support.lm import run_forward_and_reverse_kl
from test_browser import ERRORS, launch_chromium, server, sync_playwright  # noqa: F401 (server: the fixture)

pytestmark = pytest.mark.browser

TABS = ["Next-token distributions", "Per-token KL", "Samples", "Attention", "Curves"]
TINY = dict(dataset="pydoc", n_train=32, epochs=1, batch_size=16, optimizer="adamw")


def test_every_lm_view_renders_in_a_browser(server):  # noqa: F811 (the imported fixture)
    url, _ = server
    run_forward_and_reverse_kl(TINY)    # into the server's store (tmp_path/"home", as the fixture's)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/Language_models")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            for name in TABS:
                page.get_by_role("tab", name=name).click()
                panel = page.locator('[role="tabpanel"]:visible')
                if name == "Samples":
                    panel.get_by_text("perplexity under the teacher").first.wait_for(timeout=60_000)
                else:
                    panel.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                assert page.locator(ERRORS).count() == 0, name
        finally:
            browser.close()
