"""Real faults on disk: a full filesystem (a 3 MiB tmpfs, or a loop-mounted ext2 image, mounted here),
a damaged run store (garbage header, truncation, random bytes mid-file) and a damaged or hostile run
checkpoint. Each test checks the final state of the store and of the files, and what the user is told:
a message naming the path and the fix, never a traceback, never advice to load a file unsafely."""
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from explorer import cli
from explorer.config import RunConfig
from explorer.engine import Trainer
from explorer.errors import free_space
from explorer.store import Store, StoreDamaged, StoreFull
from explorer.storefile import RESERVE_NAME

REPO = Path(__file__).resolve().parents[2]
KD = [sys.executable, "-m", "explorer"]
TINY_FLAGS = ["--dataset", "digits", "--student", "cnn_tiny", "--n-train", "200", "--probe-size", "0",
              "--device", "cpu"]
TINY = dict(dataset="digits", student="cnn_tiny", n_train=200, probe_size=0, probe_epochs=[], device="cpu")
UNSAFE_ADVICE = re.compile(r"weights_only\W*(=|set to|to)\W*false|safe_globals|trusted source", re.I)


def kd_explorer(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (Store() opens the store anew, as a user's next command would)."""
    env = {**os.environ, "KD_EXPLORER_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*KD, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_clean_output(text: str) -> None:
    assert "Traceback" not in text, text
    assert not UNSAFE_ADVICE.search(text), text


# ---------------------------------------------------------------------- a real small filesystem
def _mount_small(where: Path, mib: int) -> str | None:
    """Mount a `mib` MiB filesystem at `where`: a size-limited tmpfs, else a loop-mounted ext2 image.
    Returns None when mounted, else why it could not be (for the skip)."""
    tried = []
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode == 0:
        return None
    tried.append(f"mount -t tmpfs: {r.stderr.strip() or r.returncode}")
    if shutil.which("mkfs.ext2"):
        image = where.with_suffix(".img")
        subprocess.run(["truncate", "-s", f"{mib}M", str(image)], check=True)
        r = subprocess.run(["mkfs.ext2", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run(["mount", "-o", "loop", str(image), str(where)], capture_output=True, text=True)
            if r.returncode == 0:
                return None
        tried.append(f"loop-mounted ext2: {r.stderr.strip() or r.returncode}")
    else:
        tried.append("no mkfs.ext2 for a loop-mounted image")
    return "cannot mount a small filesystem here (needs root or CAP_SYS_ADMIN): " + "; ".join(tried)


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no `mount` command: a full disk needs a real small filesystem")
    reason = _mount_small(mnt, 3)
    if reason:
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)   # lazily, if a process still holds it


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte with a file of its own."""
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(b"\xff" * size)
            except OSError:
                continue
    assert free_space(disk)[0] < 4096
    return filler


def test_full_disk_fails_the_run_cleanly_and_reading_still_works(small_disk, monkeypatch, capsys):
    home = small_disk / "home"
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    # a checkpoint of this run (~3 MB: student, optimiser, teacher-side state) cannot fit on 3 MiB
    code = cli.main(["run", *TINY_FLAGS, "--epochs", "3"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert_clean_output(err)
    store = Store(home)
    (run,) = store.list_runs()
    ckpt = Path(run["run_dir"]) / "checkpoint.pt"
    assert run["status"] == "failed"
    assert re.search(rf"disk full at {re.escape(str(ckpt))}, free \d+\.\d MB of 3\.\d MB", run["message"]), \
        run["message"]
    assert f"kd-explorer resume {run['id']}" in run["message"] and run["message"] in err
    assert not list(home.rglob("*.tmp")) and not ckpt.exists()        # the torn checkpoint was removed
    assert len(store.metrics(run["id"], "epoch")) > 0                  # epoch 1 was recorded before the save
    assert (home / RESERVE_NAME).exists()                              # recorded without needing the reserve

    # the disk full to the last byte: reading works, in fresh processes and in the app
    filler = fill(small_disk)
    before = store.path.read_bytes()
    r = kd_explorer(home, "runs")
    assert r.returncode == 0 and "failed" in r.stdout, r.stderr
    r = kd_explorer(home, "show", run["id"])
    assert r.returncode == 0 and "disk full at" in r.stdout, r.stderr
    r = kd_explorer(home, "runs", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["status"] == "failed"
    assert store.path.read_bytes() == before                            # reading wrote nothing
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(REPO / "Home.py"), default_timeout=180).run()
    at.switch_page("pages/2_Runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert run["id"] in list(at.dataframe[0].value["id"])

    # a write still fits: the reserve is given up for it (a run's final status must be recorded)
    store.update_run(run["id"], name="renamed on a full disk")
    assert not (home / RESERVE_NAME).exists()
    assert store.get_run(run["id"])["name"] == "renamed on a full disk"
    fill(small_disk)                                                   # and now nothing is left at all
    with pytest.raises(StoreFull, match=rf"run store {re.escape(str(store.path))} cannot be written: disk full"):
        store.update_run(run["id"], name="no room")
    assert store.get_run(run["id"])["name"] == "renamed on a full disk"
    r = kd_explorer(home, "run", *TINY_FLAGS, "--epochs", "1")         # a new run says why, without a traceback
    assert r.returncode == cli.EXIT_FAILED and "disk full at" in r.stderr, r.stderr
    assert_clean_output(r.stderr)
    assert kd_explorer(home, "runs").returncode == 0
    assert [x["status"] for x in Store(home).list_runs()] == ["failed"]   # the refused run left no record

    filler.unlink()                                                    # room again: the reserve comes back
    for f in small_disk.glob("filler-*"):
        f.unlink()
    Store(home)
    assert (home / RESERVE_NAME).stat().st_size > 0
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ---------------------------------------------------------------------- a damaged run store
def _store_with_runs(home: Path, n: int = 30) -> tuple[Store, list[str]]:
    store = Store(home)
    ids = []
    for i in range(n):
        run_id = store.create_run({"name": f"run {i}", "dataset": "digits", "methods": [{"key": "kd"}],
                                   "notes": "x" * 3000})
        store.log_metrics(run_id, "epoch", 1, 10, {f"m{j}": float(j) for j in range(50)})
        store.set_status(run_id, "completed", summary={"test_acc": 0.5})
        ids.append(run_id)
    return store, ids


def _damage(path: Path, how: str) -> bytes:
    data = bytearray(path.read_bytes())
    if how == "garbage header":
        data[:100] = b"\x13\x37" * 50
    elif how == "truncated":
        data = data[:len(data) // 3]
    elif how == "garbled record":   # sqlite's structure intact (integrity_check passes), one record's JSON not
        old = b'"name": "run 15", "dataset"'
        assert data.count(old) == 1
        data = bytearray(bytes(data).replace(old, b'"name": "run 15"# "dataset"'))
    else:   # random bytes mid-file: two pages of noise from a run's record on (runs and metrics pages)
        mid = data.find(b'"name": "run 15"')
        assert mid > len(data) // 4
        data[mid - 64:mid + 8128] = random.Random(15).randbytes(8192)
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("how", ["garbage header", "truncated", "random bytes mid-file", "garbled record"])
def test_damaged_store_is_named_checked_by_doctor_and_repaired_keeping_a_copy(tmp_path, monkeypatch, capsys, how):
    home = tmp_path / "home"
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    store, ids = _store_with_runs(home)
    damaged = _damage(store.path, how)
    folders = sorted(p.name for p in (home / "runs").iterdir())

    r = kd_explorer(home, "runs")                                        # a clear message, not a DatabaseError
    assert r.returncode == cli.EXIT_FAILED, r.stdout
    assert f"the run store {store.path} is damaged" in r.stderr and "kd-explorer doctor --repair" in r.stderr
    assert_clean_output(r.stderr)
    code, out, err = run_cli(capsys, "show", ids[0])                     # (run 0 may sit on a sound page)
    assert code == 0 or f"the run store {store.path} is damaged" in err, err
    assert_clean_output(out + err)
    with pytest.raises(StoreDamaged, match="is damaged"):
        Store(home).list_runs()

    code, out, err = run_cli(capsys, "doctor")
    assert code == cli.EXIT_FAILED and f"store {store.path}: DAMAGED" in out, out + err
    assert_clean_output(out + err)
    assert store.path.read_bytes() == damaged                            # checking wrote nothing

    code, out, err = run_cli(capsys, "doctor", "--repair", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["store_ok"] and report["repaired"]
    (aside,) = home.glob("runs.sqlite.broken-*")
    assert aside.read_bytes() == damaged                                 # the damaged store, kept as it was
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(p.name for p in (home / "runs").iterdir()) == folders  # run folders untouched
    fresh = Store(home)
    kept = fresh.list_runs()
    assert {r["id"] for r in kept} <= set(ids)
    for run in kept:                                                     # what was salvaged reads back whole
        assert fresh.get_run(run["id"])["config"]["name"].startswith("run ")
    if how == "random bytes mid-file":
        assert kept, "rows outside the damaged pages are kept"
    if how == "garbled record":                                          # every run but the garbled one
        assert {r["id"] for r in kept} == set(ids) - {ids[15]}
        assert len(fresh.metrics(ids[0], "epoch")) == 50
    assert run_cli(capsys, "runs")[0] == 0
    assert run_cli(capsys, "doctor")[0] == 0


# ---------------------------------------------------------------------- a damaged or hostile run checkpoint
class Payload:
    """Unpickling this runs a shell command that creates a marker file."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A real run with a real checkpoint, marked interrupted as a killed run is; copied for each test."""
    home = tmp_path_factory.mktemp("ckpt") / "home"
    store = Store(home)
    result = Trainer(RunConfig(**TINY, epochs=2, seed=5), store).run()
    store.set_status(result["run_id"], "interrupted", message="interrupted")
    return home, result["run_id"]


@pytest.mark.parametrize("damage", ["truncated", "malicious zip", "malicious legacy pickle", "not a run checkpoint"])
def test_resume_from_a_damaged_checkpoint_is_refused_with_what_to_do(tmp_path, monkeypatch, capsys, interrupted_run,
                                                                    damage):
    src, run_id = interrupted_run
    home = tmp_path / "home"
    shutil.copytree(src, home)
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    with sqlite3.connect(home / "runs.sqlite") as db:                    # the copy's paths point into the copy
        db.execute("UPDATE runs SET run_dir=replace(run_dir, ?, ?)", (str(src), str(home)))
        db.execute("UPDATE artifacts SET path=replace(path, ?, ?)", (str(src), str(home)))
    store = Store(home)
    ckpt = home / "runs" / run_id / "checkpoint.pt"
    assert store.artifacts(run_id)["checkpoint"] == str(ckpt)
    marker = tmp_path / "pwned"
    good = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(good[:len(good) // 2])
    elif damage == "not a run checkpoint":
        torch.save({"fc.weight": torch.zeros(2, 2)}, ckpt)
    else:
        buf = io.BytesIO()
        torch.save({"scheme": Payload(marker), "epoch": 0}, buf, _use_new_zipfile_serialization=damage == "malicious zip")
        ckpt.write_bytes(buf.getvalue())
    bad = ckpt.read_bytes()

    r = kd_explorer(home, "resume", run_id)
    assert r.returncode == cli.EXIT_FAILED
    out = r.stdout + r.stderr
    assert_clean_output(out)
    assert f"cannot resume run {run_id} from its checkpoint {ckpt}" in r.stderr, r.stderr
    assert f"mv {ckpt} {ckpt}.broken" in r.stderr
    assert not marker.exists(), "the checkpoint's code ran"
    run = store.get_run(run_id)
    assert run["status"] == "failed" and f"from its checkpoint {ckpt}" in run["message"]
    assert not UNSAFE_ADVICE.search(run["message"])
    assert ckpt.read_bytes() == bad                                       # left for the user to look at

    code, out, err = run_cli(capsys, "doctor")                            # doctor names the file too
    assert code == cli.EXIT_FAILED and f"run {run_id}: {ckpt}: " in out, out
    assert_clean_output(out + err)
    assert not marker.exists()

    ckpt.rename(ckpt.with_name("checkpoint.pt.broken"))                   # the advice works: the run starts over
    code, out, err = run_cli(capsys, "resume", run_id, "--json")
    assert code == 0, err
    assert store.get_run(run_id)["status"] == "completed"
    assert sorted(m["epoch"] for m in store.metrics(run_id, "epoch") if m["name"] == "val/acc") == [1, 2]
