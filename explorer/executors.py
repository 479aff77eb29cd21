"""Where many runs are run: one after another in this process (`local`, the default) or as tasks on a
Ray cluster (`ray`, explorer/ray_executor.py). Everything that runs a grid -- `kd-explorer bench
methods|schemes`, `kd-explorer tune`, the app's queue under KD_EXPLORER_EXECUTOR=ray -- goes through
`run_many`, the single entry point:

    ids = run_many([RunConfig(seed=s) for s in range(3)], executor="ray", address="auto")

The run store stays the one record: the submitter creates every run's row (queued), the run itself
(here or on a Ray worker) trains against the same store, so its metrics stream in while it runs. With
Ray the store (KD_EXPLORER_HOME) and the data must be on a filesystem every node sees (docs/ray.md).
resume=True finds each config's earlier run of the same name and config: a completed one is reused as
it is, an interrupted, failed or cancelled one continues from its last checkpoint, and only configs
never run get a new run -- so a grid cut short (a killed worker, a lost node, Ctrl-C) is finished by
running the same command again with --resume.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .config import RunConfig
from .errors import ConfigError, RunFailed, explain
from .ray_executor import ENV_ADDRESS, default_address, queue_key  # noqa: F401  (ray itself loads on use)
from .recipes import recipe_hash, resolve
from .store import Store

EXECUTORS = ("local", "ray")
ENV_EXECUTOR = "KD_EXPLORER_EXECUTOR"        # local | ray: the default of run_many, and the app's queue
RESUMABLE = ("interrupted", "failed", "cancelled")
REFUSED = "refused before it ran: "          # the message of a config resolve() refused (no training done)


@dataclass
class Pending:
    """A run to execute: its row exists; resume continues it from its checkpoint."""
    run_id: str
    resume: bool = False


def default_executor() -> str:
    name = (os.environ.get(ENV_EXECUTOR) or "local").strip().lower()
    if name not in EXECUTORS:
        raise ConfigError("executor", f"{ENV_EXECUTOR}={name!r}: choose one of {', '.join(EXECUTORS)}")
    return name


def check_available(executor: str) -> None:
    """Refuse the ray executor where Ray is not installed (before any run is queued for it)."""
    import importlib.util
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ConfigError("executor", "ray needs Ray: pip install 'kd-explorer[ray]' (on every node)")


def run_many(configs: Iterable[RunConfig | dict], executor: str | None = None, address: str | None = None,
             store: Store | None = None, resume: bool = False, num_cpus: float = 1, retries: int = 1,
             log: Callable[[str], None] | None = None, **ray_options) -> list[str]:
    """Run every config (a grid) and return their run ids, in the configs' order, once all have ended.

    executor: "local" (one after another, here) or "ray" (in parallel, one Ray task per run, each asking
    for `num_cpus` CPUs and a GPU when its device resolves to cuda); default KD_EXPLORER_EXECUTOR, else local.
    address: the Ray cluster (default KD_EXPLORER_RAY_ADDRESS, else Ray's own: a cluster started on this
    machine, else a new local one). retries: how often Ray re-runs a run whose worker or node died, from
    its last checkpoint (0: leave it interrupted, for `--resume`). A config resolve() refuses is recorded as
    a failed run whose message starts with REFUSED, so every config has an id. Runs end completed, failed,
    cancelled or interrupted; read their results from the store. ray_options: ray_executor.run_on_ray's
    (via_actor=True: record through the store actor even on the store's host)."""
    store = store or Store()
    executor = (executor or default_executor()).lower()
    if executor not in EXECUTORS:
        raise ConfigError("executor", f"{executor!r}: choose one of {', '.join(EXECUTORS)}")
    check_available(executor)
    log = log or (lambda msg: None)
    ids, pending = prepare(configs, store, resume, queue=executor == "ray")
    if executor == "local":
        for p in pending:
            out = run_local(store, p)
            log(f"  run {p.run_id}: {out['status']}" + (f" test_acc={out['test_acc']:.4f}" if out.get("test_acc")
                                                      is not None else ""))
    elif pending:
        from .ray_executor import run_on_ray
        run_on_ray(store, pending, address or default_address(), num_cpus=num_cpus, retries=retries, log=log,
                   **ray_options)
    return ids


def prepare(configs: Iterable[RunConfig | dict], store: Store, resume: bool = False,
            queue: bool = False) -> tuple[list[str], list[Pending]]:
    """Create (or, resume: find) every config's run row. Returns all ids and the runs still to execute.
    queue: put each in its own Ray queue (ray_executor.queue_key), where exactly one task can claim it."""
    ids, pending = [], []
    for config in configs:
        try:
            cfg = resolve(config)
        except ConfigError as e:   # e.g. FSP on unequal channels (recipes.check_pairing): recorded, not run
            ids.append(_record_refused(store, config, e))
            continue
        earlier = find_earlier(store, cfg) if resume else None
        if earlier is not None and earlier["status"] == "completed":
            ids.append(earlier["id"])
            continue
        if earlier is not None and earlier["status"] == "queued" and _stranded(earlier, queue):
            ids.append(earlier["id"])   # its grid stopped before it started: run it now (ray: claimed once)
            pending.append(Pending(earlier["id"], False))
            continue
        if earlier is not None and earlier["status"] in RESUMABLE:
            run_id, again = earlier["id"], True
            if queue:
                if not store.requeue(run_id, queue_key(run_id), RESUMABLE):
                    raise RuntimeError(f"run {run_id} changed while the grid resumed it; try again")
            else:
                store.update_run(run_id, cancel_requested=0)
        else:   # new, or its earlier run is still queued/running elsewhere: leave that one alone
            run_id = store.create_run(cfg.to_dict(), status="queued",
                                      recipe_hash=recipe_hash(cfg) if cfg.role == "teacher" else None)
            again = False
            if queue:
                store.update_run(run_id, device=queue_key(run_id), queued_at=time.time(), resume=0)
        ids.append(run_id)
        pending.append(Pending(run_id, again))
    return ids, pending


def _stranded(run: dict, queue: bool) -> bool:
    """A queued run of an earlier grid, still waiting where this grid would put it (Ray: its own queue;
    local: no queue at all -- a job queue's run belongs to its worker)."""
    return run["device"] == queue_key(run["id"]) if queue else run["queued_at"] is None


def find_earlier(store: Store, cfg: RunConfig) -> dict | None:
    """The latest run named cfg.name whose stored config is cfg's (None: no name, or none such)."""
    if not cfg.name:
        return None
    try:
        run = store.get_run(cfg.name)   # the latest of that id or name
    except KeyError:
        return None
    return run if run["config"] == cfg.to_dict() else None


def run_local(store: Store, p: Pending) -> dict:
    """Train one prepared run in this process (Ctrl-C: the trainer records it interrupted, and it propagates)."""
    from .engine import Trainer
    run = store.get_run(p.run_id)
    try:
        return Trainer(RunConfig.from_dict(run["config"]), store).run(run["id"], resume=p.resume)
    except RunFailed as e:   # recorded as failed by the trainer
        return {"run_id": run["id"], "status": "failed", "message": str(e)}
    except Exception as e:   # before training started (a config that no longer validates): record it
        store.set_status(run["id"], "failed", message=explain(e))
        return {"run_id": run["id"], "status": "failed", "message": explain(e)}


def _record_refused(store: Store, config: RunConfig | dict, error: ConfigError) -> str:
    try:
        data = config.to_dict() if isinstance(config, RunConfig) else RunConfig.from_dict(config).to_dict()
    except ConfigError:
        data = {k: v for k, v in dict(config).items() if k != "methods"}
    run_id = store.create_run(data, status="queued")
    store.set_status(run_id, "failed", message=REFUSED + str(error))
    return run_id
