"""Metadata lives in pyproject.toml; this file only adds one build step. A wheel must run `kd-explorer app`
without the checkout, so the app's files that sit at the top of the repository (Home.py, pages/,
.streamlit/config.toml, data/teachers/: explorer.resources.APP_FILES) are copied into the package as
explorer/_app/, where explorer.resources finds them once installed. Editable installs use the checkout's own."""
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
APP_FILES = runpy.run_path(str(HERE / "explorer" / "resources.py"))["APP_FILES"]   # no torch needed here


class build_py_with_app(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "explorer" / "_app"
        for pattern in APP_FILES:
            files = sorted(HERE.glob(pattern))
            if not files:
                raise SystemExit(f"setup.py: no file matches {pattern}; the app would be incomplete")
            for src in files:
                dest = target / src.relative_to(HERE)
                self.mkpath(str(dest.parent))
                self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": build_py_with_app})
