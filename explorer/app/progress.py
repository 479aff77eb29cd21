"""A run's live progress, read from the store alone (any process may be training it); no Streamlit.

Everything the Train page's live panel shows comes from here, so every tab -- one that launched the
runs, a second one, one opened after a refresh -- shows the same: `live_ids` (which runs), `progress`
(where each stands, including the teacher it is training first, or its assistant / synthesised images) and `queue_rows` (the queue)."""
from __future__ import annotations

import math
import time

from ..store import FINAL, Store

_NOT_LOSSES = ("lr", "images_per_s", "epoch_seconds")
SUB_RUN_ROLES = {"teacher": "teacher"}   # role of a run another run trains first -> what the card calls it


def progress(store: Store, run_id: str, now: float | None = None) -> dict:
    """Where a run stands, from the store alone (any process may be training it):
    status, fraction done, epoch, each loss term, accuracy, images/s and an ETA in seconds.

    The loss terms and images/s are the newest record: the last logging window of steps, or the last
    epoch's mean when that is newer (a short epoch logs no window of its own); `values_from` says which
    ("step 37" / "epoch 4 mean"). While the run trains its own teacher first, `sub` is that run's
    progress (its own fraction, epoch and ETA) and the message says so; so is the phase a scheme runs first
    through RunContext.progress (TAKD's assistant, DeepInversion's synthesis: `phase_progress`)."""
    run = store.get_run(run_id)
    cfg = run["config"]
    epochs = int(cfg.get("epochs") or 1)
    steps = store.metrics(run["id"], "step")
    ep = store.metrics(run["id"], "epoch")
    last_epoch = max((m["epoch"] for m in ep), default=0)
    epoch_rows = {m["name"]: m["value"] for m in ep if m["epoch"] == last_epoch}
    epoch_step = max((m["step"] for m in ep if m["epoch"] == last_epoch), default=None)
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
    # the newest of the step window and the epoch mean (an epoch row at the same step covers more)
    if epoch_rows and (newest is None or epoch_step >= newest):
        latest = {k[6:]: v for k, v in epoch_rows.items() if k.startswith("train/")}
        latest["images_per_s"] = epoch_rows.get("images_per_s")
        values_from = f"epoch {last_epoch} mean"
    elif step_rows:
        latest, values_from = step_rows, f"step {newest}"
    else:
        latest, values_from = {}, None
    losses = {k: v for k, v in latest.items() if k not in _NOT_LOSSES and k != "acc"}
    note, sub = "", None
    phase = phase_progress(store, run, now) if run["status"] == "running" else None
    if phase is not None:     # the scheme's own loop first (an assistant, image synthesis): its own progress
        sub = phase
        note = phase["note"] + f", then the student ({epochs} epochs)"
    elif run["status"] == "running" and not steps and not ep:
        child = sub_run(store, run)
        if child is not None:
            sub = progress(store, child["id"], now)
            what = SUB_RUN_ROLES.get(child["role"], child["role"])
            sub["what"] = what
            sub["arch"] = child["config"].get("student")
            note = (f"training its {what} {sub['arch']} first ({sub['epochs']} epochs, once; later runs reuse it), "
                    f"then the student ({epochs} epochs)")
        else:
            note = "loading the data and the teacher"
    elif run["status"] == "queued":
        note = "waiting for the worker"
    elif run["status"] == "running" and cfg.get("scheme") == "dafl":
        note = "each step trains the generator on the teacher, then the student on the generator's images"
    return {
        "id": run["id"], "name": run["name"], "label": live_name(run), "status": run["status"],
        "message": run["message"] or note,
        "fraction": frac, "epoch": last_epoch, "epochs": epochs, "step": last_step_no,
        "steps": int(epochs * spe) if spe else None, "losses": losses, "values_from": values_from,
        "val_acc": epoch_rows.get("val/acc"), "train_acc": epoch_rows.get("train/acc"),
        "images_per_s": latest.get("images_per_s"),
        "eta_s": eta, "elapsed_s": elapsed, "summary": run["summary"], "final": run["status"] in FINAL,
        "sub": sub,
    }


PHASES = {   # a scheme's own loop (RunContext.progress) -> (what the card calls it, what it does)
    "assistant": ("assistant", "distilling its assistant {arch} from the teacher first"),
    "synthesis": ("images synthesised from the teacher", "synthesising its training images from the teacher first"),
}


def phase_progress(store: Store, run: dict, now: float | None = None) -> dict | None:
    """The unfinished phase a running scheme reports through RunContext.progress (TAKD's assistant,
    DeepInversion's synthesis), as a `sub` progress of its own: fraction, epoch/epochs (when it has
    epochs), step/steps, its ETA and its newest loss; None when no phase is under way."""
    rows = store.metrics(run["id"], "phase")
    if not rows:
        return None
    newest = max(rows, key=lambda m: (m["time"], m["step"]))
    name = newest["name"].rsplit("/", 1)[0]
    mine = [m for m in rows if m["name"].rsplit("/", 1)[0] == name]
    last = {m["name"].rsplit("/", 1)[1]: m["value"] for m in mine if m["step"] == newest["step"]}
    done, total, epochs = int(last.get("done", 0)), int(last.get("total", 0)), int(last.get("epochs", 0))
    if total <= 0 or done >= total:
        return None
    now = time.time() if now is None else now
    frac = done / total
    start = min(m["time"] for m in mine if m["name"].endswith("/done"))
    eta = (now - start) / frac * (1 - frac) if frac > 0 else None
    key, _, arch = name.partition(" ")
    what, does = PHASES.get(key, (name, f"running its {name} first"))
    arch = arch if key in PHASES and "{arch}" in does else ""
    return {"id": run["id"], "what": what, "arch": arch or None, "phase": key, "note": does.format(arch=arch),
            "fraction": frac, "epoch": int(done // (total / epochs)) if epochs else 0, "epochs": epochs or None,
            "step": done, "steps": total, "unit": "step" if epochs else "iteration",
            "losses": {k: v for k, v in last.items() if k not in ("done", "total", "epochs")},
            "values_from": f"{key} step {done}", "val_acc": None, "train_acc": None, "images_per_s": None,
            "eta_s": eta, "status": "running", "final": False}


def sub_run(store: Store, run: dict) -> dict | None:
    """The run `run` is training first (its own teacher), while both are running, else None.

    The trainer records it as the parent's teacher reference (source "train" with the sub-run's id) as
    soon as the sub-run starts; a teacher run trained later in the same run (a multi-teacher scheme's
    second teacher) is found as the running teacher run owned by the same process."""
    from .. import teachers
    if run["status"] != "running":
        return None
    ref = teachers.of_run(run)
    if ref is not None and ref.source == "train" and ref.run_id:
        try:
            child = store.get_run(ref.run_id)
        except KeyError:
            child = None
        if child is not None and child["status"] == "running":
            return child
    if not run.get("worker_pid"):
        return None
    same = [r for r in store.list_runs(status="running") if r["id"] != run["id"] and r["role"] in SUB_RUN_ROLES
            and r.get("worker_pid") == run["worker_pid"] and r.get("owner_host") == run.get("owner_host")
            and (r["started"] or 0) >= (run["started"] or 0) - 1]
    return max(same, key=lambda r: r["started"] or 0) if same else None


def sub_run_ids(store: Store, runs: list[dict]) -> set[str]:
    """The ids of the runs that `runs` are training first: shown inside their parent's card, not on their own."""
    out = set()
    for r in runs:
        child = sub_run(store, r)
        if child is not None:
            out.add(child["id"])
    return out


def live_name(run: dict) -> str:
    """A run's name for people: its name, else what it is ("teacher cnn_large · digits") -- never a bare id."""
    name = run.get("name")
    if name and name != run["id"]:
        return name
    cfg = run.get("config") or {}
    if run.get("role") == "teacher":
        what = "teacher"
    else:
        methods = "+".join(m["key"] for m in cfg.get("methods") or []) if isinstance(cfg.get("methods"), list) else ""
        scheme = cfg.get("scheme", "offline")
        what = scheme if scheme != "offline" else methods or "student alone"
    return " · ".join(str(p) for p in (what, cfg.get("student"), cfg.get("dataset")) if p)


def live_ids(store: Store, shown: list[str] | None = None) -> list[str]:
    """The runs a Train tab shows, from the store: the runs of `shown` (those this tab launched, picked or
    watched: finished ones too), in their order, then every other queued and running run (running first,
    in the order they will run). A run another one trains first (its teacher) is shown inside that run's
    card, not on its own."""
    from .. import jobs
    q = jobs.queue(store)
    subs = sub_run_ids(store, [r for r in q if r["status"] == "running"])
    ids = []
    for rid in shown or []:
        if rid in ids or rid in subs:
            continue
        try:
            store.get_run(rid)
        except KeyError:     # deleted meanwhile
            continue
        ids.append(rid)
    return ids + [r["id"] for r in q if r["id"] not in subs and r["id"] not in ids]


def queue_rows(store: Store) -> list[dict]:
    """The queue as the Train page lists it: one row per run, named (not an id), one position each (1 runs
    first); a run training its teacher says so on its own row instead of listing the teacher run apart."""
    from .. import jobs
    q = jobs.queue(store)
    running = [r for r in q if r["status"] == "running"]
    children = {r["id"]: sub_run(store, r) for r in running}
    subs = {c["id"] for c in children.values() if c is not None}
    rows = []
    for r in q:
        if r["id"] in subs:
            continue
        child = children.get(r["id"])
        status = r["status"] if child is None else f"running: training its teacher {child['config'].get('student')}"
        rows.append({"#": len(rows) + 1, "run": live_name(r), "status": status, "device": r["device"] or ""})
    return rows


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


def progress_text(p: dict) -> str:
    """The progress bar's label: "epoch 3/40 · step 71/880 · 8 % · ETA 40 s"."""
    parts = [f"epoch {p['epoch']}/{p['epochs']}"] if p.get("epochs") else []
    if p.get("steps"):
        parts.append(f"{p.get('unit', 'step')} {p['step']}/{p['steps']}")
    parts += [f"{100 * p['fraction']:.0f} %", f"ETA {format_seconds(p['eta_s'])}"]
    return " · ".join(parts)
