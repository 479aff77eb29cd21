"""Debian's Chromium as every browser test starts it: headless, with no background connections (this
machine's network is closed) and never `playwright install`."""
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def launch_chromium(p):
    """`p`: a started sync_playwright(); the browser to close when done."""
    return p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
