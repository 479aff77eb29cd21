"""`kd-explorer app`: recover the job queue, then start Streamlit on Home.py (pages/ beside it).

Streamlit runs with the repository root as its working directory so .streamlit/config.toml
(headless, no file watcher, no usage stats) applies.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY = REPO / "Home.py"


def streamlit_command(host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(ENTRY), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true"]


def launch(host: str = "127.0.0.1", port: int = 8501) -> int:
    """Run the app until it is stopped (Ctrl-C); returns Streamlit's exit code."""
    from .jobs import recover
    if not ENTRY.is_file():
        print(f"error: the app's entry script {ENTRY} is missing; is this a complete checkout?", file=sys.stderr)
        return 2
    # Runs whose worker died while the app was down become `interrupted` (resumable); queued runs get a worker.
    interrupted = recover()
    if interrupted:
        print(f"{len(interrupted)} run(s) were interrupted while the app was down and can be resumed: "
              + ", ".join(interrupted), file=sys.stderr)
    print(f"KD Explorer on http://{host}:{port}  (Ctrl-C stops the app; queued and running jobs go on)",
          file=sys.stderr, flush=True)
    try:
        return subprocess.call(streamlit_command(host, port), cwd=REPO)
    except KeyboardInterrupt:
        return 0
