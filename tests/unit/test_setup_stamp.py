"""scripts/setup.sh skips its pip install (so scripts/start.sh starts at once) only while the venv has
kd-explorer installed editable from this checkout and the stamp written after that install matches the
current pyproject.toml and setup.py (scripts/setup_stamp.py); anything else installs again.

Measured by hand on this 2-core machine: start.sh to the health check answering 9.1 s with the reinstall
(setup.sh alone 5.4-5.7 s), 3.1-3.6 s without (setup.sh 0.06 s)."""
import os
import runpy
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
S = runpy.run_path(str(REPO / "scripts" / "setup_stamp.py"))


def test_the_fingerprint_follows_pyproject_setup_py_and_the_checkout(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        shutil.copy(REPO / "pyproject.toml", root)
        shutil.copy(REPO / "setup.py", root)
    assert S["fingerprint"](a) == S["fingerprint"](a) != S["fingerprint"](b)       # another checkout: another
    before = S["fingerprint"](a)
    (a / "pyproject.toml").write_text((a / "pyproject.toml").read_text() + "\n# changed\n")
    assert S["fingerprint"](a) != before
    before = S["fingerprint"](a)
    (a / "setup.py").unlink()
    assert S["fingerprint"](a) != before


def test_a_stamp_counts_only_for_an_editable_install_from_that_checkout(tmp_path):
    stamp = tmp_path / "stamp"
    assert not S["is_current"](stamp, REPO)                      # no stamp yet: install
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(REPO / "pyproject.toml", other)
    S["write"](stamp, other)
    assert not S["is_current"](stamp, other)                     # nothing is installed from there
    if not S["editable_from"](REPO):
        pytest.skip("this environment does not have kd-explorer installed editable from the checkout")
    S["write"](stamp, REPO)
    assert S["is_current"](stamp, REPO)
    stamp.write_text("0" * 64 + "\n")                            # written for an older pyproject.toml
    assert not S["is_current"](stamp, REPO)


@pytest.mark.parametrize("current", [True, False])
def test_setup_sh_installs_only_when_the_stamp_is_not_current(tmp_path, current):
    """setup.sh run against a stand-in `python` that logs its calls: a current stamp ends it before pip."""
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    log = tmp_path / "calls"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                    f'[ "$*" = "scripts/setup_stamp.py check" ] && exit {0 if current else 1}\nexit 0\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, VIRTUAL_ENV=str(tmp_path), PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("KD_EXPLORER_REINSTALL", None)
    subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env, check=True, timeout=60)
    calls = log.read_text().splitlines()
    if current:
        assert calls == ["scripts/setup_stamp.py check"]
    else:
        assert calls[0] == "scripts/setup_stamp.py check" and "-m pip install -q -e .[test,png,ray]" in calls
        assert calls[-1] == "scripts/setup_stamp.py write"             # stamped after the install, not before
    log.unlink()
    subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=dict(env, KD_EXPLORER_REINSTALL="1"),
                   check=True, timeout=60)
    assert "-m pip install -q -e .[test,png,ray]" in log.read_text().splitlines()   # forced
