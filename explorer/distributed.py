"""Scale-out on PyTorch's distributed engine: the same run, N processes, DistributedDataParallel.

    torchrun --nproc_per_node 4 -m explorer run --dataset cifar100 --method kd     # 4 GPUs (NCCL) or CPU (gloo)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; the Trainer calls `setup()`, which returns None in a
plain process (nothing changes) and a `Dist` under torchrun. The rules (docs/distributed.md):

- batch_size is the *global* batch. All ranks draw the same shuffled, augmented global batch from the
  same seeded generator and each takes its own contiguous 1/N of it, so the ranks' samples are disjoint,
  the run takes the same steps and learning-rate schedule as on one process, and DDP's gradient average
  over ranks is the gradient of the whole batch. batch_size must divide by N; each epoch's last partial
  batch is dropped (a different few images each epoch, as the order is reshuffled).
- the scheme -- every learning model and every trainable part of the methods -- is wrapped in DDP once,
  after rank 0's state (its teacher, its resumed checkpoint) is broadcast to every rank.
- rank 0 alone records: the run row, metrics, checkpoints, probes and the final model. Other ranks get a
  FollowerStore, which records nothing, so a run (and a teacher it trains) is one row in the store.
  Epoch train metrics are summed over ranks; validation and test accuracy are rank 0's model's.
- a cancel takes effect at the end of an epoch, decided together (one collective), so no rank is left
  waiting on the others. Batch-norm running statistics are each rank's own (DDP's broadcast_buffers off,
  which would otherwise also overwrite per-rank memory banks); rank 0's are evaluated and saved.
"""
from __future__ import annotations

import atexit
import dataclasses
import inspect
import os
import re
import shutil
import signal
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError, RunInterrupted

TIMEOUT = timedelta(minutes=60)   # rank 0 evaluates and writes checkpoints while the others wait at a collective


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batches):
        """This rank's contiguous 1/N of every global batch (a Batch; every per-sample tensor is sliced)."""
        for batch in batches:
            n = len(batch.y)   # the global batch: full (drop_last), or the one short batch of a tiny dataset
            k = n // self.world_size
            if k == 0:
                raise ValueError(f"a batch of {n} images cannot be split over {self.world_size} processes; "
                                 f"use a larger --batch-size or --n-train, or fewer processes")
            part = slice(self.rank * k, (self.rank + 1) * k)
            yield dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[part]
                                                for f in dataclasses.fields(batch)
                                                if isinstance(getattr(batch, f.name), torch.Tensor)})

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            lo = batch_size - batch_size % self.world_size
            raise ConfigError("batch_size", f"{batch_size} is the global batch and must divide by the "
                              f"{self.world_size} processes; use --batch-size {lo or self.world_size} or {lo + self.world_size}")

    def wrap(self, scheme: nn.Module) -> nn.Module:
        """Broadcast rank 0's whole state (parameters and buffers: the teacher it loaded, a resumed
        checkpoint) to every rank, then wrap the scheme so that backward averages gradients over ranks.
        Call the result with a Batch: it runs scheme.train_step."""
        with torch.no_grad():
            for tensor in scheme.state_dict().values():   # views of the live tensors: updated in place
                if isinstance(tensor, torch.Tensor):
                    dist.broadcast(tensor, src=0)
        # Buffers are not synced at each forward (each rank keeps its own BN statistics and memory banks);
        # torch >= 2.13 names that forward_sync_buffers, older versions broadcast_buffers.
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                   inspect.signature(nn.parallel.DistributedDataParallel).parameters else {"broadcast_buffers": False})
        return _DDPStep(_TrainStep(scheme), device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=True, **no_sync)   # a method may leave a part unused on some steps

    def sum_epoch(self, sums: dict, correct: torch.Tensor, seen: int):
        """The epoch's loss sums, correct count and images, added up over ranks (one collective)."""
        keys = list(sums)
        flat = torch.stack([sums[k].float() for k in keys] +
                           [correct.float(), torch.tensor(float(seen), device=correct.device)])
        dist.all_reduce(flat)
        return dict(zip(keys, flat[:len(keys)])), flat[-2], int(flat[-1].item())

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any (e.g. rank 0 saw a cancel request)."""
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def from_main(self, obj):
        """Rank 0's value of a small picklable object, on every rank (rank 0 is the trusted peer)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


class _TrainStep(nn.Module):
    """DDP wraps a module's forward; a scheme's step is train_step, so this forward is that."""

    def __init__(self, scheme: nn.Module):
        super().__init__()
        self.scheme = scheme

    def forward(self, batch):
        return self.scheme.train_step(batch)


class _DDPStep(nn.parallel.DistributedDataParallel):
    """What the loop's training_step calls: `.train_step(batch)` goes through DDP's forward."""

    def train_step(self, batch):
        return self(batch)


class FollowerStore:
    """The run store as ranks other than 0 see it: they record nothing (rank 0 records the run) and
    read nothing (rank 0's store may be on another machine); checkpoints come from rank 0 too."""

    def __init__(self, rank: int):
        self.rank = rank
        self.home = Path(tempfile.mkdtemp(prefix=f"kd-explorer-rank{rank}-"))
        atexit.register(shutil.rmtree, self.home, True)

    def create_run(self, config, status="queued", recipe_hash=None) -> str:
        return f"rank{self.rank}"

    def get_run(self, run_id) -> dict:
        return {"id": run_id, "run_dir": str(self.home)}

    def find_completed(self, recipe_hash):
        return None

    def cancel_requested(self, run_id) -> bool:
        return False

    def artifacts(self, run_id) -> dict:
        return {}

    def update_run(self, *args, **kwargs) -> None:
        pass

    set_status = log_metrics = add_artifact = delete_metrics_after = update_run


_DIST: Dist | None = None


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or another launcher setting its variables)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """Whether this process should print and record: not under torchrun, or its rank 0."""
    return not launched() or int(os.environ["RANK"]) == 0


def setup(device: str = "auto") -> Dist | None:
    """Join the process group torchrun describes (once per process); None when not launched by it.
    `device` is the config's: cpu -> gloo on CPU; auto/cuda with CUDA present -> NCCL on cuda:LOCAL_RANK."""
    global _DIST
    if _DIST is not None or not launched():
        return _DIST
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device == "mps":
        raise ConfigError("device", "distributed runs use CPU (gloo) or CUDA GPUs (NCCL), not mps; use --device cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{device!r} was asked for but CUDA is not available here; use --device cpu")
    if device != "cpu" and torch.cuda.is_available():   # one GPU per process: cuda:LOCAL_RANK, whatever cuda:N said
        if local >= torch.cuda.device_count():
            raise ConfigError("device", f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible: "
                              f"start at most --nproc_per_node {torch.cuda.device_count()} on this machine")
        dev, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(dev)
    else:
        dev, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT, device_id=dev if backend == "nccl" else None)
        atexit.register(_shutdown)
    if rank == 0 and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # torchrun stops the survivors with SIGTERM when a rank dies: record the run as interrupted (resumable)
        signal.signal(signal.SIGTERM, _interrupt)
    _DIST = Dist(rank, world, local, dev, backend)
    return _DIST


_DEFER = {"depth": 0, "pending": None}   # signals_deferred: a SIGTERM that came while a record was written


def _interrupt(signum, frame):
    if _DEFER["depth"]:
        _DEFER["pending"] = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def signals_deferred():
    """Hold back the SIGTERM torchrun sends the survivors of a dead rank until the block is done, so the
    run's last record is written whole; the interrupt is raised after it."""
    _DEFER["depth"] += 1
    try:
        yield
    finally:
        _DEFER["depth"] -= 1
        if not _DEFER["depth"] and _DEFER["pending"] is not None:
            signum, _DEFER["pending"] = _DEFER["pending"], None
            raise KeyboardInterrupt(f"signal {signum}")


# what gloo and NCCL say when a peer process went away (a killed rank, a lost node), not a bug in the run
_PEER_LOST = re.compile(r"Connection reset by peer|Connection closed by peer|Broken pipe|Connection refused|"
                        r"pair\.cc|NCCL communicator was aborted|remote process exited|ProcessGroupGloo|"
                        r"ProcessGroupNCCL.*(Watchdog|timeout|abort)", re.IGNORECASE)


def lost_peer(e: BaseException, d: Dist | None) -> str | None:
    """A few words on how this rank lost the others, if `e` is a collective failing because another rank
    stopped (gloo: "pair.cc:537 Read error ... Connection reset by peer"); None for any other error."""
    if isinstance(e, RunInterrupted):   # a teacher run inside this one was interrupted so
        return e.reason
    text = str(e)
    if not (isinstance(e, getattr(dist, "DistError", ())) or
            (isinstance(e, RuntimeError) and _PEER_LOST.search(text))):
        return None
    cause = next((m.group(0) for m in re.finditer(r"Connection (reset|closed) by peer|Broken pipe|"
                                                   r"Connection refused|timed? ?out|aborted", text, re.IGNORECASE)),
                 "the connection failed")
    if d is None:
        return f"a collective failed: {cause}"
    other = ("rank 1" if d.world_size == 2 and d.rank == 0 else "rank 0" if d.world_size == 2
             else f"another of the {d.world_size} ranks")
    return f"rank {d.rank} lost its connection to {other}, {d.backend}: {cause}"


def _shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()
