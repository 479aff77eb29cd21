"""`kd-explorer app` honours Streamlit's own settings as Streamlit orders them: a flag (--host, --port) over
its environment variables (STREAMLIT_SERVER_PORT, ...) over the config files over its defaults, so the
launcher passes a flag on only when one was given; the URL it prints is the one Streamlit will use. The real
servers started here listen on loopback only and are stopped."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from explorer import app_launcher, cli

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def test_flags_are_passed_on_only_when_given():
    args = cli.build_parser().parse_args(["app"])
    assert (args.host, args.port) == (None, None)
    assert app_launcher.streamlit_command()[-2:] == ["run", str(app_launcher.ENTRY)]   # env and config decide
    args = cli.build_parser().parse_args(["app", "--port", "9001", "--host", "127.0.0.2"])
    cmd = app_launcher.streamlit_command(args.host, args.port)
    assert cmd[cmd.index("--server.port") + 1] == "9001" and cmd[cmd.index("--server.address") + 1] == "127.0.0.2"


def test_printed_address_is_flag_else_env_else_config_else_default(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "user"))   # no ~/.streamlit of the machine's
    root = tmp_path / "app"
    (root / ".streamlit").mkdir(parents=True)
    assert app_launcher.effective_server(env={}, root=root) == ("0.0.0.0", "8501")   # Streamlit's own defaults
    (root / ".streamlit" / "config.toml").write_text('[server]\naddress = "127.0.0.1"\nport = 8700\n')
    assert app_launcher.effective_server(env={}, root=root) == ("127.0.0.1", "8700")
    env = {"STREAMLIT_SERVER_PORT": "8800", "STREAMLIT_SERVER_ADDRESS": "127.0.0.3"}
    assert app_launcher.effective_server(env=env, root=root) == ("127.0.0.3", "8800")
    assert app_launcher.effective_server("127.0.0.4", 8900, env=env, root=root) == ("127.0.0.4", "8900")
    # the app's own config: local only unless told otherwise
    assert app_launcher.effective_server(env={})[0] == "127.0.0.1"


def start(tmp_path: Path, args: list[str], env_port: int):
    env = dict(os.environ, KD_EXPLORER_HOME=str(tmp_path / "home"), STREAMLIT_SERVER_PORT=str(env_port))
    env.pop("STREAMLIT_SERVER_ADDRESS", None)        # the app's config.toml: 127.0.0.1
    log = tmp_path / f"app-{env_port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "app", *args], cwd=tmp_path, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def stop(proc, port: int):
    """SIGTERM to the launcher and its Streamlit (one process group); waits until the port is closed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    deadline = time.monotonic() + 15
    while answers(port) and time.monotonic() < deadline:   # Streamlit shuts down a moment after the launcher
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)                # anything of ours left in the group
    except ProcessLookupError:
        pass


def wait_for(port: int, proc, log: Path, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and proc.poll() is None:
        if answers(port):
            return
        time.sleep(0.1)
    raise AssertionError(f"no server on {port}: " + log.read_text()[-2000:])


@pytest.mark.timeout(240)
def test_a_real_server_listens_on_the_env_port_unless_a_flag_says_otherwise(tmp_path):
    env_port = free_port()
    proc, log = start(tmp_path, [], env_port)          # STREAMLIT_SERVER_PORT and no flag
    try:
        wait_for(env_port, proc, log)
        text = log.read_text()
        assert f"KD Explorer on http://127.0.0.1:{env_port}" in text                  # the printed URL
        assert re.search(rf"started on 127\.0\.0\.1:{env_port}\b|URL: http://127\.0\.0\.1:{env_port}\b", text), text
    finally:
        stop(proc, env_port)
    assert not answers(env_port)

    env_port, flag_port = free_port(), free_port()
    proc, log = start(tmp_path, ["--port", str(flag_port)], env_port)   # both: the flag wins
    try:
        wait_for(flag_port, proc, log)
        assert not answers(env_port)
        assert f"KD Explorer on http://127.0.0.1:{flag_port}" in log.read_text()
    finally:
        stop(proc, flag_port)
    assert not answers(flag_port)
