"""Scale-out: `torchrun --nproc_per_node 2 -m explorer run ...` with gloo on CPU.

1. The semantics, in-process with two spawned ranks: each rank takes a disjoint half of every global
   batch, and one DDP step equals one single-process step on the whole batch (the global batch size).
2. End to end through torchrun: the run completes with the single-process summary's keys and a sane
   accuracy, is recorded once (one distill row, one teacher row), and its checkpoint resumes.
3. A rank killed mid-run: rank 1 -> the run is recorded `interrupted` with a readable message; rank 0
   (which records) -> the next read of the store finds its owner gone and shows it `interrupted`.
"""
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from explorer import distributed
from explorer.kd.base import Batch
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyScheme(nn.Module):
    """The scheme contract at its smallest: a linear student, cross-entropy, no batch norm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Linear(6, 3)

    def train_step(self, batch):
        logits = self.student(batch.x)
        return logits, {"ce": nn.functional.cross_entropy(logits, batch.y)}


def _global_batches():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    return [Batch(x[i:i + 8], y[i:i + 8], torch.arange(i, i + 8)) for i in (0, 8)]


def _rank(rank, init_file, out):
    torch.set_num_threads(1)   # two ranks on a 2-core machine
    try:
        # a file rendezvous (no port to race for) and a short timeout: a stuck peer fails the test, not CI
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                                timeout=timedelta(seconds=90))
    except Exception:
        out.put((rank, "error", traceback.format_exc()))
        return
    try:
        d = distributed.Dist(rank, 2, rank, torch.device("cpu"), "gloo")
        scheme = TinyScheme()
        if rank == 1:   # a different init on rank 1: wrap must replace it by rank 0's state
            nn.init.zeros_(scheme.student.weight)
        step = d.wrap(scheme)
        opt = torch.optim.SGD(scheme.parameters(), lr=0.5)
        seen = []
        for batch in d.shard(_global_batches()):
            seen += batch.index.tolist()
            assert len(batch.y) == 4 and len(batch.x) == 4
            _, losses = step.train_step(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        sums, correct, n = d.sum_epoch({"loss": torch.tensor(float(rank + 1))}, torch.tensor(rank * 2.0), 8)
        # plain lists: a tensor sent through a queue is shared by file descriptor, gone once this process exits
        out.put((rank, "ok", seen, {k: v.tolist() for k, v in scheme.state_dict().items()},
                 (sums["loss"].item(), correct.item(), n), d.any(rank == 1), d.from_main({"who": rank})))
    except Exception:
        out.put((rank, "error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


def test_ddp_step_equals_a_single_process_step_on_the_global_batch(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    # daemon ranks: whatever happens to them, they can never keep pytest from exiting
    procs = [ctx.Process(target=_rank, args=(r, tmp_path / "rendezvous", out), daemon=True) for r in range(2)]
    try:
        for p in procs:
            p.start()
        replies = [out.get(timeout=240) for _ in procs]
        errors = [r[2] for r in replies if r[1] == "error"]
        assert not errors, "\n".join(errors)
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    results = {r[0]: r[2:] for r in replies}

    (seen0, state0, red0, any0, main0), (seen1, state1, red1, any1, main1) = results[0], results[1]
    assert seen0 == [0, 1, 2, 3, 8, 9, 10, 11] and seen1 == [4, 5, 6, 7, 12, 13, 14, 15]   # disjoint, covering
    assert red0 == red1 == (3.0, 2.0, 16)       # epoch sums added over ranks
    assert any0 is any1 is True                 # one rank's flag reaches all
    assert main0 == main1 == {"who": 0}         # rank 0's value everywhere

    single = TinyScheme()   # the same two steps, one process, whole batches of 8
    opt = torch.optim.SGD(single.parameters(), lr=0.5)
    for batch in _global_batches():
        _, losses = single.train_step(batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    for k, v in single.state_dict().items():
        torch.testing.assert_close(torch.tensor(state0[k]), v, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(torch.tensor(state1[k]), v, atol=1e-6, rtol=1e-5)


def test_not_launched_means_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.setup("cpu") is None and distributed.is_main()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")   # torchrun --nproc_per_node 1: nothing to distribute
    assert distributed.setup("cpu") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()


def test_batch_size_must_divide_over_the_ranks():
    from explorer.config import ConfigError
    d = distributed.Dist(0, 4, 0, torch.device("cpu"), "gloo")
    d.check_batch_size(64)
    with pytest.raises(ConfigError, match="use --batch-size 64 or 68") as e:
        d.check_batch_size(66)
    assert e.value.field == "batch_size"


# ---------------------------------------------------------------------- end to end
ARGS = ["--dataset", "digits", "--n-train", "400", "--epochs", "4", "--teacher-epochs", "3", "--batch-size", "32",
        "--json"]


def _explorer(home, *argv, nproc=None, timeout=500):
    env = dict(os.environ, KD_EXPLORER_HOME=str(home), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                str(_free_port()), "-m", "explorer"] if nproc else [sys.executable, "-m", "explorer"]
    p = subprocess.run(launcher + list(argv), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, p.stdout   # one result: only rank 0 prints
    return json.loads(lines[0]), p.stderr


def test_torchrun_two_processes_match_a_single_process_run(tmp_path):
    home = tmp_path / "home"
    ddp, err = _explorer(home, "run", *ARGS, nproc=2)
    assert ddp["status"] == "completed"
    assert err.count("training teacher") == 1 and err.count("epoch   4") == 1   # rank 0 alone reports
    store = Store(home)
    assert len(store.list_runs(role="distill")) == 1 and len(store.list_runs(role="teacher")) == 1
    teacher = store.list_runs(role="teacher")[0]
    assert ddp["teacher_run"] == teacher["id"] and teacher["status"] == "completed"

    single, _ = _explorer(home, "run", *ARGS)   # same home: reuses the teacher the two ranks trained
    assert single["teacher_run"] == teacher["id"]
    assert set(ddp) == set(single)
    assert ddp["teacher_acc"] == pytest.approx(single["teacher_acc"]) and ddp["teacher_acc"] > 0.5
    assert 0.2 < ddp["test_acc"] <= 1 and abs(ddp["test_acc"] - single["test_acc"]) < 0.3, (ddp, single)
    assert len(store.list_runs(role="distill")) == 2 and len(store.list_runs(role="teacher")) == 1
    print(f"\n2 ranks: test_acc {ddp['test_acc']:.3f} in {ddp['seconds']:.1f} s; 1 process: {single['test_acc']:.3f} "
          f"in {single['seconds']:.1f} s; teacher {ddp['teacher_acc']:.3f}")
    epochs = {m["epoch"] for m in store.metrics(ddp["run_id"], "epoch")}
    assert epochs == {1, 2, 3, 4}   # each epoch logged once, by rank 0

    # the checkpoint rank 0 wrote: a plain scheme state_dict (no DDP "module." prefix), resumable on 2 ranks
    ckpt = torch.load(Path(store.get_run(ddp["run_id"])["run_dir"]) / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and not any(k.startswith("module.") for k in ckpt["scheme"])
    store.set_status(ddp["run_id"], "interrupted")
    resumed, _ = _explorer(home, "resume", ddp["run_id"], "--json", nproc=2)
    assert resumed["run_id"] == ddp["run_id"] and resumed["status"] == "completed"
    assert resumed["test_acc"] == pytest.approx(ddp["test_acc"])   # the same weights, evaluated again
    assert len(store.list_runs()) == 3   # resuming created no row


# ---------------------------------------------------------------------- a rank that dies (issue 15, items 4 and 5)
KILL_ARGS = ["--dataset", "digits", "--n-train", "200", "--student", "cnn_tiny", "--epochs", "400",
             "--batch-size", "32", "--probe-size", "0", "--device", "cpu", "--json"]


def _rank_pids(launcher: int) -> dict[int, int]:
    """{RANK: pid} of the processes torchrun (pid `launcher`) started."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != launcher:
                continue
            env = dict(v.split("=", 1) for v in (stat.parent / "environ").read_text().split("\0") if "=" in v)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(stat.parent.name)
    return ranks


def _kill_a_rank_once_training(home: Path, rank: int) -> tuple[dict, int]:
    """Start a 2-rank gloo run, SIGKILL `rank` once an epoch is recorded, wait for torchrun to end."""
    env = dict(os.environ, KD_EXPLORER_HOME=str(home), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "explorer", "run", *KILL_ARGS], env=env, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(home)
    try:
        deadline = time.monotonic() + 300
        while not any(store.metrics(r["id"], "epoch") for r in store.list_runs(role="distill")):
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
            time.sleep(0.1)
        (run,) = store.list_runs(role="distill")
        pids = _rank_pids(p.pid)
        assert set(pids) == {0, 1} and run["worker_pid"] == pids[0]   # rank 0 owns the run
        os.kill(pids[rank], signal.SIGKILL)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode != 0
    return store.get_run(run["id"]), pids[rank]


def test_killing_rank_1_records_the_run_interrupted_with_a_readable_message(tmp_path):
    run, _ = _kill_a_rank_once_training(tmp_path / "home", rank=1)
    print(f"\nrank 1 killed: {run['status']}: {run['message']}")
    assert run["status"] == "interrupted", run["message"]   # as docs/distributed.md says: resumable
    assert "a torchrun rank stopped" in run["message"] and "rank 1" in run["message"]
    assert f"kd-explorer resume {run['id']}" in run["message"]
    assert "pair.cc" not in run["message"] and "GLHF" not in run["message"]   # gloo's raw text stays out
    assert Store(tmp_path / "home").metrics(run["id"], "epoch")               # the epochs done are kept
    assert (Path(run["run_dir"]) / "checkpoint.pt").is_file()                # and its checkpoint, to resume


def test_killing_rank_0_leaves_no_run_running(tmp_path):
    """Rank 0 records the run; killed, it records nothing -- the next read sees its owner gone."""
    run, pid = _kill_a_rank_once_training(tmp_path / "home", rank=0)
    print(f"\nrank 0 killed: {run['status']}: {run['message']}")
    assert run["status"] == "interrupted" and f"pid {pid}" in run["message"]
    assert f"kd-explorer resume {run['id']}" in run["message"]
