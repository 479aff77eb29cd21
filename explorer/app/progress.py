"""A run's live progress, read from the store alone (any process may be training it); no Streamlit."""
from __future__ import annotations

import math
import time

from ..store import FINAL, Store

_NOT_LOSSES = ("lr", "images_per_s", "epoch_seconds")


def progress(store: Store, run_id: str, now: float | None = None) -> dict:
    """Where a run stands, from the store alone (any process may be training it):
    status, fraction done, epoch, each loss term, accuracy, images/s and an ETA in seconds."""
    run = store.get_run(run_id)
    cfg = run["config"]
    epochs = int(cfg.get("epochs") or 1)
    steps = store.metrics(run["id"], "step")
    ep = store.metrics(run["id"], "epoch")
    last_epoch = max((m["epoch"] for m in ep), default=0)
    epoch_rows = {m["name"]: m["value"] for m in ep if m["epoch"] == last_epoch}
    last_step_no = max((m["step"] for m in steps + ep), default=0)
    newest = max((m["step"] for m in steps), default=None)
    step_rows = {m["name"]: m["value"] for m in steps if m["step"] == newest}
    # steps per epoch: an epoch row records the global step at its end
    spe = next((m["step"] / m["epoch"] for m in ep if m["epoch"] > 0 and m["name"] == "val/acc"), None)
    if spe is None and cfg.get("n_train") and cfg.get("batch_size"):
        spe = math.ceil(cfg["n_train"] / cfg["batch_size"])
    frac = min(1.0, last_step_no / (epochs * spe)) if spe else last_epoch / epochs
    if run["status"] == "completed":
        frac = 1.0
    now = time.time() if now is None else now
    elapsed = (now - run["started"]) if run.get("started") else 0.0
    first_metric = min((m["time"] for m in steps + ep), default=None)
    eta = None
    if run["status"] == "running" and 0 < frac < 1 and first_metric is not None:
        eta = (now - first_metric) / frac * (1 - frac)     # from the first step: setup time is not rate
    latest = step_rows or {k[6:]: v for k, v in epoch_rows.items() if k.startswith("train/")}
    losses = {k: v for k, v in latest.items() if k not in _NOT_LOSSES and k != "acc"}
    note = ""
    if run["status"] == "running" and not steps and not ep:
        teacher = [r for r in store.list_runs(status="running", role="teacher")
                   if (r["started"] or 0) >= (run["started"] or 0) - 1]
        note = (f"training its teacher first (run {teacher[0]['id']}, once; later runs reuse it)" if teacher
                else "loading the data and the teacher")
    elif run["status"] == "queued":
        note = "waiting for the worker"
    return {
        "id": run["id"], "name": run["name"], "status": run["status"], "message": run["message"] or note,
        "fraction": frac, "epoch": last_epoch, "epochs": epochs, "losses": losses,
        "val_acc": epoch_rows.get("val/acc"), "train_acc": epoch_rows.get("train/acc"),
        "images_per_s": step_rows.get("images_per_s", epoch_rows.get("images_per_s")),
        "eta_s": eta, "elapsed_s": elapsed, "summary": run["summary"], "final": run["status"] in FINAL,
    }


def any_active(store: Store, run_ids: list[str]) -> bool:
    for rid in run_ids:
        try:
            if store.get_run(rid)["status"] not in FINAL:
                return True
        except KeyError:    # deleted meanwhile
            pass
    return False


def format_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
