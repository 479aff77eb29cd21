"""The Language models page in a real browser (Chromium): two LM runs (forward KL and reverse KL students of the
bundled teacher), every tab opened, no error shown and a figure in each."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

REPO = Path(__file__).resolve().parents[2]
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'
TABS = ["Next-token distributions", "Per-token KL", "Samples", "Attention", "Curves"]


@pytest.fixture
def lm_server(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    from explorer.config import RunConfig
    from explorer.engine import run
    for methods in ([{"key": "kd", "params": {"temperature": 1.0}}], [{"key": "rkl"}]):
        assert run(RunConfig.from_dict(dict(dataset="pydoc", n_train=32, epochs=1, batch_size=16, optimizer="adamw",
                                            methods=methods)))["status"] == "completed"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, KD_EXPLORER_HOME=str(home), KD_EXPLORER_WORKER_IDLE_S="2")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "Home.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true"], cwd=REPO, env=env,
                            stdout=open(tmp_path / "streamlit.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_every_lm_view_renders_in_a_browser(lm_server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lm_server}/Language_models")
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
