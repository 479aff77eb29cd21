"""A wheel built from the repository runs the app without the checkout: `pip wheel` carries the entry script,
the pages, the Streamlit settings and the bundled teachers inside the package (setup.py copies
explorer.resources.APP_FILES to explorer/_app/), and `kd-explorer app` installed from it into a fresh venv,
started from a folder outside the checkout, serves every page and finds the bundled teachers.

Nothing is downloaded: the wheel is built without build isolation from a copy of the source (the checkout gets
no build/ folder) and installed with `--no-deps --no-index`; torch, Streamlit and the other dependencies come
from this test's environment through a .pth line appended after the fresh venv's own site-packages (so the
wheel's `explorer` is the one imported; .pth files of that environment, an editable install's finder among
them, are not run from there).
"""
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from explorer import resources
from support.browser import CHROMIUM, launch_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SKIP_TOP = {".venv", ".git", "build", "dist", "test-artifacts", ".pytest_cache", ".hypothesis", "tests"}


def _ignore(folder, names):
    here = Path(folder).resolve()
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if here == REPO:
        skip |= SKIP_TOP & set(names)
    if here == REPO / "data":
        skip |= {"home"} & set(names)
    return skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, the wheel's path, a folder outside the checkout) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=_ignore, symlinks=True)
    run = dict(capture_output=True, text=True, timeout=180)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(tmp / "dist")], cwd=tmp, **run)
    assert p.returncode == 0, p.stdout + p.stderr
    (wheel,) = (tmp / "dist").glob("kd_explorer-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, **run).stdout.strip()
    deps = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    (Path(purelib) / "_kd_explorer_test_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                        "-q", str(wheel)], **run)
    assert p.returncode == 0, p.stdout + p.stderr
    outside = tmp / "elsewhere"
    outside.mkdir()
    return python, wheel, outside


def venv_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("STREAMLIT_")}
    return dict(env, KD_EXPLORER_HOME=str(tmp / "home"), KD_EXPLORER_WORKER_IDLE_S="2")


def test_the_wheel_carries_the_app_files(installed):
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"explorer/_app/{p.relative_to(REPO)}" for pattern in resources.APP_FILES for p in REPO.glob(pattern)}
    assert "explorer/_app/Home.py" in expected and any(n.endswith(".pt") for n in expected)
    assert expected <= names, sorted(expected - names)
    assert not any(n.startswith("explorer/_app/data/home") for n in names)   # a user's runs never travel


def test_the_installed_package_finds_its_files_without_the_checkout(installed, tmp_path):
    python, _, outside = installed
    code = ("import json, explorer, streamlit; from explorer import teachers, resources, app_launcher as L; "
            "print(json.dumps({'explorer': explorer.__file__, 'bundled': str(teachers.BUNDLED), "
            "'pt': sorted(p.name for p in teachers.BUNDLED.glob('*.pt')), 'entry': str(L.ENTRY), "
            "'root': str(L.ROOT), 'pages': sorted(p.name for p in (resources.ROOT / 'pages').glob('*.py'))}))")
    p = subprocess.run([str(python), "-c", code], cwd=outside, env=venv_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.splitlines()[-1])
    venv = python.parent.parent
    for key in ("explorer", "bundled", "entry", "root"):
        assert Path(got[key]).is_relative_to(venv) and not Path(got[key]).is_relative_to(REPO), (key, got[key])
    assert got["pt"] == sorted(p.name for p in (REPO / "data" / "teachers").glob("*.pt")) and got["pt"]
    assert got["pages"] == sorted(p.name for p in (REPO / "pages").glob("*.py"))
    assert Path(got["entry"]).is_file()


def test_the_installed_app_renders_every_page(installed, tmp_path):
    """Each page from the installed copy under AppTest, in the fresh venv: a title and no error."""
    python, _, outside = installed
    code = ("import json; from streamlit.testing.v1 import AppTest; from explorer import resources as R\n"
            "at = AppTest.from_file(str(R.ENTRY), default_timeout=120).run(); out = {}\n"
            "for page in sorted((R.ROOT / 'pages').glob('*.py')):\n"
            "    at.switch_page(f'pages/{page.name}').run()\n"
            "    out[page.name] = {'title': [t.value for t in at.title],\n"
            "                      'errors': [str(e.value) for e in [*at.exception, *at.error]]}\n"
            "print(json.dumps(out))")
    p = subprocess.run([str(python), "-c", code], cwd=outside, env=venv_env(tmp_path), capture_output=True,
                       text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.splitlines()[-1])
    assert set(got) == {p.name for p in (REPO / "pages").glob("*.py")}
    for page, seen in got.items():
        assert seen["title"] and not seen["errors"], (page, seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return 0


def url_paths() -> list[str]:
    """Each page's URL path as Streamlit names it from the file (`3_Attention_maps.py` -> Attention_maps);
    Home.py's default page (the first) is ''."""
    names = [re.sub(r"^\d+_", "", p.stem) for p in sorted((REPO / "pages").glob("*.py"))]
    return [""] + names[1:]


def test_installed_kd_explorer_app_serves_every_page(installed, tmp_path):
    python, _, outside = installed
    port = free_port()
    log = tmp_path / "app.log"
    proc = subprocess.Popen([str(python.parent / "kd-explorer"), "app", "--port", str(port)], cwd=outside,
                            env=venv_env(tmp_path), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while get(f"{url}/_stcore/health") != 200:
            assert proc.poll() is None and time.monotonic() - t0 < 90, log.read_text()[-3000:]
            time.sleep(0.1)
        assert f"KD Explorer on {url}" in log.read_text()
        for path in url_paths():
            assert get(f"{url}/{path}") == 200, path
        if CHROMIUM.exists():
            _every_page_in_a_browser(url)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
            deadline = time.monotonic() + 15
            while get(f"{url}/_stcore/health") and time.monotonic() < deadline:
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    assert get(f"{url}/_stcore/health") == 0
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _every_page_in_a_browser(url: str):
    """Streamlit answers 200 for any path; a page it cannot find shows 'Page not found' and runs the main page.
    Each page must keep its URL, show a title and no error (a missing page is caught: the last check)."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()

            def visit(path: str) -> tuple[bool, str]:
                page.goto(f"{url}/{path}")
                page.locator("h1").first.wait_for(timeout=60_000)
                page.wait_for_timeout(300)
                found = page.get_by_text("Page not found").count() == 0 and page.url.rstrip("/") == f"{url}/{path}".rstrip("/")
                errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
                return found, " | ".join(errors.all_inner_texts())

            for path in url_paths():
                found, errors = visit(path)
                assert found and not errors, (path, found, errors)
            assert visit("No_such_page")[0] is False            # the check above would see a missing page
        finally:
            browser.close()
