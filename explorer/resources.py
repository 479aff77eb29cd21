"""Where the app's own files are, decided here only: the entry script, the pages, the Streamlit settings and
the bundled teachers.

In a source checkout (an editable install too) they are the checkout's Home.py, pages/, .streamlit/ and
data/teachers/. A wheel carries copies of the same files inside the package, under explorer/_app/ (setup.py's
build step copies APP_FILES there), so an installed `kd-explorer app` needs no checkout.

This module imports nothing from the package: setup.py reads APP_FILES from it without importing torch.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent
INSTALLED = PACKAGE / "_app"      # in a built wheel only
# the files the app needs at run time, as globs relative to the checkout root (kept in that layout in a wheel)
APP_FILES = ("Home.py", "pages/*.py", ".streamlit/config.toml", "data/teachers/*.pt", "data/teachers/*.json",
             "data/published/*.yaml", "data/text/*.txt.gz", "data/text/SOURCE.md", "data/tuned/*.yaml")


def app_root() -> Path:
    """The folder holding Home.py, pages/, .streamlit/config.toml and data/teachers/: the checkout when this
    package is imported from one, else the copy installed with the package."""
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "Home.py").is_file():
        return CHECKOUT
    return INSTALLED


ROOT = app_root()
ENTRY = ROOT / "Home.py"
TEACHERS = ROOT / "data" / "teachers"
PUBLISHED = ROOT / "data" / "published"   # published results beside the user's runs (explorer/published.py)
