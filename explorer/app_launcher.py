"""`kd-explorer app`: recover the job queue, then start Streamlit on Home.py (pages/ beside it).

Streamlit runs with the app's folder (explorer.resources.ROOT: the checkout, or the copy inside an installed
wheel) as its working directory so its .streamlit/config.toml (headless, local address, no file watcher, no
usage stats) applies. Streamlit's own settings are honoured as Streamlit orders them: a flag given here
(--host, --port) over its environment variables (STREAMLIT_SERVER_PORT, STREAMLIT_SERVER_ADDRESS, ...) over
the config files; so a flag is passed on only when it was given.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .resources import ENTRY, ROOT

DEFAULT_PORT = 8501          # Streamlit's
DEFAULT_ADDRESS = "0.0.0.0"  # Streamlit's (every interface) where no config names one; the app's config.toml says 127.0.0.1


def streamlit_command(host: str | None = None, port: int | None = None) -> list[str]:
    """`streamlit run Home.py`, with --server.address/--server.port only where given (else Streamlit's
    environment variables and config files decide)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(ENTRY)]
    if host is not None:
        cmd += ["--server.address", host]
    if port is not None:
        cmd += ["--server.port", str(port)]
    return cmd


def _config_server(root: Path = ROOT) -> dict:
    """The [server] table of the config files Streamlit reads, later over earlier: ~/.streamlit/config.toml,
    then the app's own (Streamlit's cwd and the entry script's folder are both `root`)."""
    try:
        import tomllib
    except ImportError:          # Python 3.10: Streamlit's defaults are shown
        return {}
    server: dict = {}
    for path in (Path.home() / ".streamlit" / "config.toml", root / ".streamlit" / "config.toml"):
        try:
            server.update(tomllib.loads(path.read_text(encoding="utf-8")).get("server", {}))
        except (OSError, ValueError):
            continue
    return server


def effective_server(host: str | None = None, port: int | None = None, env: dict | None = None,
                     root: Path = ROOT) -> tuple[str, str]:
    """Where Streamlit will listen, decided as Streamlit does: the flag, else STREAMLIT_SERVER_ADDRESS /
    STREAMLIT_SERVER_PORT, else the config files, else Streamlit's defaults."""
    env = os.environ if env is None else env
    server = _config_server(root)
    address = host or env.get("STREAMLIT_SERVER_ADDRESS") or server.get("address") or DEFAULT_ADDRESS
    port_ = port if port is not None else (env.get("STREAMLIT_SERVER_PORT") or server.get("port") or DEFAULT_PORT)
    return str(address), str(port_)


def app_environment(data_roots: Sequence[str] = (), env: dict | None = None) -> dict:
    """The Streamlit process's environment: the --data-root folders (resolved) added to the allow-list
    variable explorer.app.roots reads (KD_EXPLORER_DATA_ROOTS)."""
    from .app.roots import ENV
    env = dict(os.environ if env is None else env)
    roots = [r for r in env.get(ENV, "").split(os.pathsep) if r.strip()]
    roots += [str(Path(r).expanduser().resolve()) for r in data_roots]
    if roots:
        env[ENV] = os.pathsep.join(dict.fromkeys(roots))
    return env


def launch(host: str | None = None, port: int | None = None, data_roots: Sequence[str] = ()) -> int:
    """Run the app until it is stopped (Ctrl-C); returns Streamlit's exit code. `host`/`port`: None leaves
    them to Streamlit's environment variables and config (127.0.0.1:8501 unless told otherwise).
    `data_roots`: folders the Data-folder box may read besides <home>/data and each dataset's default folder."""
    from .jobs import recover
    if not ENTRY.is_file():
        print(f"error: the app's entry script {ENTRY} is missing; is this a complete checkout "
              "or installation?", file=sys.stderr)
        return 2
    missing = [r for r in data_roots if not Path(r).expanduser().is_dir()]
    if missing:
        print(f"error: --data-root {missing[0]} is not a folder", file=sys.stderr)
        return 2
    # Runs whose worker died while the app was down become `interrupted` (resumable); queued runs get a worker.
    interrupted = recover()
    if interrupted:
        print(f"{len(interrupted)} run(s) were interrupted while the app was down and can be resumed: "
              + ", ".join(interrupted), file=sys.stderr)
    env = app_environment(data_roots)
    address, port_ = effective_server(host, port, env)
    print(f"KD Explorer on http://{address}:{port_}  (Ctrl-C stops the app; queued and running jobs go on)",
          file=sys.stderr, flush=True)
    try:
        return subprocess.call(streamlit_command(host, port), cwd=ROOT, env=env)
    except KeyboardInterrupt:
        return 0
