"""The logic behind the app's pages, with no Streamlit in it: tests call it directly, pages stay thin.

- the Train form <-> a run config (one naming scheme for widget keys, both directions here)
- teachers from a finished run or an uploaded file (checked, weights-only, saved under the store home)
- live progress of a run, read from the store's step/epoch metrics
- tables, exports and comparisons of runs; picking probes and samples for the analysis pages
"""
from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from .config import RunConfig
from .store import FINAL, Store, safe_name
from .uploads import UploadError

MAX_UPLOAD_BYTES = 200 * 2**20          # the same limit as .streamlit/config.toml's maxUploadSize
UPLOAD_SUFFIXES = (".pt", ".pth")
TEACHER_SOURCES = {
    "default": "the dataset's default teacher (bundled, or reused from an earlier run)",
    "run": "the model of a finished run",
    "train": "another architecture, trained now (once; reused later)",
    "upload": "upload a checkpoint (a state_dict .pt file)",
}
K = "train."   # every Train-page widget key starts with this


# ---------------------------------------------------------------------- the Train form <-> a config
def _hp_type(default):
    return bool if isinstance(default, bool) else type(default)


def form_state(config: Mapping) -> dict[str, Any]:
    """Widget values (key -> value) that show `config` on the Train page: a preset's prefill."""
    from .kd import get_method
    from .schemes import get_scheme
    cfg = RunConfig.from_dict(dict(config))
    s: dict[str, Any] = {
        K + "name": cfg.name or "", K + "dataset": cfg.dataset, K + "data_root": cfg.data_root or "",
        K + "student": cfg.student, K + "scheme": cfg.scheme, K + "epochs": cfg.epochs, K + "n_train": cfg.n_train,
        K + "batch_size": cfg.batch_size, K + "lr": cfg.lr, K + "seed": cfg.seed, K + "device": cfg.device,
        K + "ce_custom": cfg.ce_weight is not None, K + "ce_weight": 1.0 if cfg.ce_weight is None else cfg.ce_weight,
        K + "methods": [m.key for m in cfg.methods],
        K + "teacher_source": "train" if (cfg.teacher or cfg.teacher_epochs) and not cfg.teacher_ckpt else
                              "upload" if cfg.teacher_ckpt else "default",
        K + "teacher": cfg.teacher, K + "teacher_epochs": cfg.teacher_epochs, K + "teacher_ckpt": cfg.teacher_ckpt,
    }
    for m in cfg.methods:
        info = get_method(m.key).describe()
        s[f"{K}w.{m.key}"] = float(info["default_weight"] if m.weight is None else m.weight)
        for h in info["hparams"]:
            s[f"{K}hp.{m.key}.{h['name']}"] = m.params.get(h["name"], h["default"])
    for h in get_scheme(cfg.scheme).describe()["hparams"]:
        s[f"{K}sp.{cfg.scheme}.{h['name']}"] = cfg.scheme_params.get(h["name"], h["default"])
    return {k: v for k, v in s.items() if v is not None}


def config_from_form(state: Mapping[str, Any]) -> dict:
    """The run config (a dict RunConfig.from_dict accepts) the Train page's widgets describe.
    Hyperparameters equal to their default are left out, so a stored config lists what was chosen."""
    from .kd import get_method
    from .schemes import get_scheme
    g = lambda name, default=None: state.get(K + name, default)   # noqa: E731
    cfg: dict[str, Any] = {"dataset": g("dataset", "digits"), "scheme": g("scheme", "offline")}
    for field in ("student", "epochs", "n_train", "batch_size", "lr", "seed", "device"):
        if g(field) not in (None, ""):
            cfg[field] = g(field)
    for field in ("name", "data_root"):
        if (g(field) or "").strip():
            cfg[field] = g(field).strip()
    source = g("teacher_source", "default")
    if source == "train":
        cfg["teacher"] = g("teacher")
        if g("teacher_epochs"):
            cfg["teacher_epochs"] = int(g("teacher_epochs"))
    elif source in ("run", "upload"):
        if not g("teacher_ckpt"):
            raise ValueError("choose a finished run or upload a checkpoint for the teacher, "
                             "or pick the default teacher")
        cfg["teacher"], cfg["teacher_ckpt"] = g("teacher"), g("teacher_ckpt")
    scheme = get_scheme(cfg["scheme"]).describe()
    defaults = {h["name"]: h["default"] for h in scheme["hparams"]}
    sp = {name: g(f"sp.{cfg['scheme']}.{name}", d) for name, d in defaults.items()}
    cfg["scheme_params"] = {name: _hp_type(defaults[name])(v) for name, v in sp.items() if v != defaults[name]}
    methods = []
    for key in (g("methods") or []) if scheme["uses_methods"] else []:
        info = get_method(key).describe()
        term: dict[str, Any] = {"key": key}
        w = g(f"w.{key}")
        if w is not None and not math.isclose(float(w), float(info["default_weight"])):
            term["weight"] = float(w)
        params = {}
        for h in info["hparams"]:
            v = g(f"hp.{key}.{h['name']}", h["default"])
            if v != h["default"]:
                params[h["name"]] = _hp_type(h["default"])(v)
        if params:
            term["params"] = params
        methods.append(term)
    cfg["methods"] = methods
    if g("ce_custom"):
        cfg["ce_weight"] = float(g("ce_weight", 1.0))
    return cfg


def validate(cfg: dict) -> RunConfig:
    """RunConfig.from_dict plus the scheme's own hyperparameter check: raises with the field named."""
    from .schemes import get_scheme
    rc = RunConfig.from_dict(cfg)
    scheme = get_scheme(rc.scheme)
    if hasattr(scheme, "check_params"):
        scheme.check_params(rc.scheme_params)
    return rc


def comparison_config(cfg: dict) -> dict:
    """The same run without distillation: the student alone (offline scheme, no knowledge terms)."""
    out = dict(cfg, scheme="offline", methods=[], scheme_params={})
    out.pop("ce_weight", None)
    out["name"] = f"{cfg.get('name') or 'run'} · student alone"
    return out


def find_same_run(store: Store, cfg: dict) -> dict | None:
    """A completed run whose config equals `cfg` (defaults filled, names ignored): reused, not re-trained."""
    from .train import fill_defaults
    want = fill_defaults(RunConfig.from_dict(cfg)).to_dict()
    want.pop("name")
    for run in reversed(store.list_runs(status="completed", role="distill")):
        have = dict(run["config"])
        have.pop("name", None)
        if have == want:
            return run
    return None


# ---------------------------------------------------------------------- teachers
def teacher_runs(store: Store, dataset: str) -> list[dict]:
    """Finished runs on `dataset` whose model can serve as a teacher, newest first."""
    runs = [r for r in store.list_runs(status="completed") if r["dataset"] == dataset
            and "model" in store.artifacts(r["id"])]
    return runs[::-1]


def default_teacher(store: Store, dataset: str, data_root: str | None = None) -> dict:
    """The dataset's default teacher and where a run would get it: {arch, source, test_acc}."""
    import json

    from .train import bundled_teacher, fill_defaults, recipe_hash, teacher_config
    tcfg = fill_defaults(teacher_config(fill_defaults(RunConfig(dataset=dataset, data_root=data_root))))
    rhash = recipe_hash(tcfg)
    found = store.find_completed(rhash)
    if found is not None:
        return {"arch": tcfg.student, "source": f"reused from run {found['id']}",
                "test_acc": found["summary"].get("test_acc")}
    path = bundled_teacher(rhash)
    if path is not None:
        info = path.with_suffix(".json")
        acc = json.loads(info.read_text()).get("test_acc") if info.is_file() else None
        return {"arch": tcfg.student, "source": "bundled with KD Explorer", "test_acc": acc}
    return {"arch": tcfg.student, "source": f"trained by the first run ({tcfg.epochs} epochs), then reused",
            "test_acc": None}


def model_params(arch: str, dataset: str, data_root: str | None = None) -> int | None:
    from .models import model_info
    try:
        meta = dataset_meta(dataset, data_root)
        return model_info(arch, len(meta["classes"]), meta["shape"][0], meta["shape"][1])["params"]
    except Exception:   # a folder not given yet, a model that does not fit the input: no count
        return None


def teacher_from_run(store: Store, run_id: str) -> tuple[str, str]:
    """(architecture, checkpoint path) of a finished run's student, saved as a plain state_dict
    under <home>/teachers/ (the trainer loads teacher checkpoints as plain state_dicts)."""
    import torch

    from .checkpoints import read_state_dict
    run = store.get_run(run_id)
    out = store.home / "teachers" / f"{safe_name(run['id'])}-student.pt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        state = read_state_dict(store.artifacts(run["id"])["model"], key="student")
        tmp = out.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(out)
    return run["config"]["student"], str(out)


def save_upload(store: Store, filename: str, data: bytes, arch: str, dataset: str,
                data_root: str | None = None) -> str:
    """Check an uploaded teacher checkpoint (explorer.uploads: size, type by content, weights_only,
    sanitised name) and that it fits `arch` on `dataset`; leaves nothing behind when refused."""
    from .uploads import check_fits, save_upload as save_checked
    if Path(filename).suffix.lower() not in UPLOAD_SUFFIXES:
        raise UploadError(f"{filename!r} is not a .pt or .pth file; save the model with "
                          "torch.save(model.state_dict(), 'teacher.pt')")
    out = save_checked(filename, data, "checkpoint", store.home)
    try:
        meta = dataset_meta(dataset, data_root)
        check_fits(out, arch, len(meta["classes"]), meta["shape"][0], meta["shape"][1])
    except Exception:
        out.unlink(missing_ok=True)
        raise
    return str(out)


# ---------------------------------------------------------------------- live progress
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


def gap_rows(store: Store, run_ids: list[str]) -> list[dict]:
    """Teacher, then each finished run's student: {label, run, acc, kind} for the teacher–student gap.
    kind: teacher | distilled | student alone; labels are short ("kd<br>cnn_tiny"), made unique."""
    rows, teacher = [], None
    for rid in run_ids:
        run = store.get_run(rid)
        s, cfg = run["summary"], run["config"]
        if run["status"] != "completed" or s.get("test_acc") is None:
            continue
        if s.get("teacher_acc") is not None and teacher is None:
            teacher = {"label": f"teacher<br>{cfg.get('teacher')}", "run": f"teacher of {run_label(run)}",
                       "acc": s["teacher_acc"], "kind": "teacher"}
        alone = is_alone(run)
        what = "student alone" if alone else run["methods"] if run["methods"] != "none" else cfg.get("scheme")
        rows.append({"label": f"{what}<br>{cfg.get('student')}", "run": run_label(run), "acc": s["test_acc"],
                     "kind": "student alone" if alone else "distilled", "id": run["id"]})
    labels = [r["label"] for r in rows]
    for r in rows:
        if labels.count(r["label"]) > 1:
            r["label"] += f" [{r['id'][-6:]}]"
    return ([teacher] if teacher else []) + rows


def gap_closed(rows: list[dict]) -> float | None:
    """The fraction of the gap between the student alone and the teacher that distillation closed
    (1 = the distilled student matches the teacher, 0 = no better than alone); None if a part is missing."""
    acc = {r["kind"]: r["acc"] for r in reversed(rows)}    # the first row of each kind
    t, a, d = acc.get("teacher"), acc.get("student alone"), acc.get("distilled")
    if t is None or a is None or d is None or t <= a:
        return None
    return (d - a) / (t - a)


# ---------------------------------------------------------------------- runs: table, compare, export
RUN_COLUMNS = ["name", "status", "dataset", "scheme", "methods", "student", "teacher", "test_acc", "teacher_acc",
               "role", "created", "id", "message"]


def runs_table(store: Store, datasets=None, statuses=None, methods=None) -> pd.DataFrame:
    """The Runs page's table, newest first, filtered by dataset, status and method (any of the given)."""
    df = store.runs_df()
    if df.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    for col in RUN_COLUMNS:
        if col not in df.columns:
            df[col] = None
    if datasets:
        df = df[df["dataset"].isin(datasets)]
    if statuses:
        df = df[df["status"].isin(statuses)]
    if methods:
        df = df[df["methods"].apply(lambda m: bool(set(str(m).split("+")) & set(methods)))]
    return df[RUN_COLUMNS].sort_values("created", ascending=False).reset_index(drop=True)


def run_label(run: Mapping) -> str:
    name = run.get("name") or run["id"]
    return name if name == run["id"] else f"{name} [{run['id'][-6:]}]"


def compare_metrics(store: Store, run_ids: list[str], scope: str = "epoch") -> pd.DataFrame:
    """Long metrics (run label, epoch, name, value) of several runs, for training_curves."""
    df = store.metrics_df(run_ids, scope)
    labels = {rid: run_label(store.get_run(rid)) for rid in run_ids}
    return df.assign(run=df["run_id"].map(labels)) if not df.empty else df.assign(run=[])


def metrics_csv(store: Store, run_ids: list[str]) -> bytes:
    df = pd.concat([store.metrics_df(run_ids, scope) for scope in ("epoch", "step", "final")], ignore_index=True)
    return df.to_csv(index=False).encode()


def configs_yaml(store: Store, run_ids: list[str]) -> str:
    """Each run's config as YAML (several runs: one document each); `kd-explorer run --config` reads one."""
    docs = [yaml.safe_dump(store.get_run(r)["config"], sort_keys=False) for r in run_ids]
    return "---\n".join(docs)


# ---------------------------------------------------------------------- analysis: runs, probes, samples
def is_alone(run: Mapping) -> bool:
    """A student trained without distillation (the comparison run of a preset)."""
    cfg = run["config"]
    return cfg.get("scheme", "offline") == "offline" and not cfg.get("methods")


def analysis_runs(store: Store) -> list[dict]:
    """Completed runs that recorded probes, newest first; distilled runs before students trained alone
    (a preset's comparison run finishes last, but the distilled run is the one to look at)."""
    from .analysis.probes import list_probes
    runs = [r for r in reversed(store.list_runs(status="completed")) if r["run_dir"] and list_probes(r["run_dir"])]
    return sorted(runs, key=is_alone)


def nearest(values: list[int], want: int) -> int:
    return min(values, key=lambda v: (abs(v - want), -v))


@lru_cache(maxsize=4)
def dataset_meta(name: str, data_root: str | None = None) -> dict:
    """Class names, image shape and normalisation of a dataset (read once per process)."""
    import torch

    from .data import get_dataset_spec, load_dataset
    spec = get_dataset_spec(name)
    try:
        data = load_dataset(name, data_root or spec.default_root, None, torch.device("cpu"))
        classes, shape = list(data.classes), tuple(data.shape)
    except Exception:   # the files moved since the run: the registry still knows the shape
        if spec.num_classes is None or spec.shape is None:
            raise
        classes, shape = [str(i) for i in range(spec.num_classes)], spec.shape
    c = shape[0]
    mean = spec.mean if len(spec.mean) == c else spec.mean[:1] * c
    std = spec.std if len(spec.std) == c else spec.std[:1] * c
    return {"classes": [str(k) for k in classes], "shape": tuple(shape), "mean": tuple(mean), "std": tuple(std)}


SAMPLE_MODES = {"all": "all probe samples", "class": "by class", "index": "by index",
                "disagree": "where they disagree most"}


def sample_positions(probe: Mapping, mode: str, value: Any = None, k: int = 8) -> np.ndarray:
    """Rows of a probe to show: all, the first k of one class, given rows, or the k with the largest
    teacher–student disagreement (different top-1 first, then by KL)."""
    from .analysis import disagreements
    y = np.asarray(probe["y"]).reshape(-1)
    n = y.size
    if mode == "all":
        return np.arange(n)
    if mode == "class":
        return np.flatnonzero(y == int(value))[:k]
    if mode == "index":
        return np.array([int(i) for i in (value or []) if 0 <= int(i) < n], dtype=int)
    if mode == "disagree":
        df = disagreements(probe["teacher"]["logits"], probe["student"]["logits"], y, k=k)
        return df["position"].to_numpy()
    raise ValueError(f"sample mode must be one of {list(SAMPLE_MODES)}, got {mode!r}")


def subset(probe: Mapping, pos) -> dict:
    """A probe restricted to rows `pos` (every per-sample tensor sliced the same way)."""
    import torch
    idx = torch.as_tensor(np.array(pos, dtype=np.int64))   # a copy: `pos` may be a read-only pandas view

    def side(s):
        return {"logits": s["logits"][idx], "stages": [f[idx] for f in s["stages"]],
                "stage_names": list(s["stage_names"]), "embedding": s["embedding"][idx]}
    return {"epoch": probe["epoch"], "x": probe["x"][idx], "y": probe["y"][idx], "index": probe["index"][idx],
            "student": side(probe["student"]), "teacher": side(probe["teacher"])}


def stage_pairs(probe: Mapping) -> list[tuple[str, str]]:
    """(student stage, teacher stage) names paired by relative depth (the stage counts may differ)."""
    s, t = list(probe["student"]["stage_names"]), list(probe["teacher"]["stage_names"])
    if not s or not t:
        return []
    if len(s) == 1:
        return [(s[0], t[-1])]
    return [(s[i], t[round(i * (len(t) - 1) / (len(s) - 1))]) for i in range(len(s))]


def reference_name(run: Mapping) -> str:
    """What a probe's "teacher" side is for this run: the teacher, or (no teacher) the scheme's reference."""
    from .schemes import get_scheme
    try:
        return "teacher" if get_scheme(run["config"].get("scheme", "offline")).needs_teacher else "reference peer"
    except KeyError:
        return "teacher"


def rebuild_models(store: Store, run: Mapping) -> dict:
    """The run's final student and its teacher as CPU modules in eval mode (for Grad-CAM / saliency):
    {"student": model, "teacher": model or None}. Weights are read weights-only."""
    from .checkpoints import load_checkpoint_into
    from .models import create_model
    cfg = run["config"]
    meta = dataset_meta(cfg["dataset"], cfg.get("data_root"))
    make = lambda arch: create_model(arch, num_classes=len(meta["classes"]), in_channels=meta["shape"][0],  # noqa
                                     image_size=meta["shape"][1])
    out = {"student": load_checkpoint_into(make(cfg["student"]), store.artifacts(run["id"])["model"], "student"),
           "teacher": None}
    src = run.get("teacher_run") or ""
    path = None
    if src.startswith("bundled:"):     # see train.bundled_teacher
        path = Path(__file__).resolve().parents[1] / "data" / "teachers" / safe_name(src[8:])
    elif src.startswith("file:"):
        path = Path(src[5:])
    elif src:
        try:
            path = Path(store.artifacts(src)["model"])
        except KeyError:
            path = None
    if path is not None and path.is_file() and cfg.get("teacher"):
        out["teacher"] = load_checkpoint_into(make(cfg["teacher"]), path, "student")
    for m in out.values():
        if m is not None:
            m.eval()
    return out


# ---------------------------------------------------------------------- the concept map & playground
def taxonomy() -> pd.DataFrame:
    """The survey's map from the registries: knowledge types (methods) and schemes/algorithms."""
    from .kd import get_method, list_methods
    from .schemes import get_scheme, list_schemes
    rows = []
    for k in list_methods():
        d = get_method(k).describe()
        rows.append({"branch": "knowledge", "category": d["category"], "key": k, "name": d["name"],
                     "year": d["year"], "venue": d["venue"], "paper": d["paper"]})
    for k in list_schemes():
        d = get_scheme(k).describe()
        rows.append({"branch": "scheme", "category": d["category"], "key": k, "name": d["name"],
                     "year": d["year"], "venue": d["venue"], "paper": d["paper"]})
    return pd.DataFrame(rows)


def playground_logits(store: Store, n: int = 6) -> dict | None:
    """A real teacher's logits on a few test images: from the newest run's probe, else the bundled
    digits teacher run on the first test images. None when neither exists."""
    from .analysis.probes import list_probes, load_probe
    for run in analysis_runs(store):
        if reference_name(run) != "teacher":
            continue
        epoch, path = list_probes(run["run_dir"])[-1]
        p = load_probe(path)
        meta = dataset_meta(run["config"]["dataset"], run["config"].get("data_root"))
        return {"logits": p["teacher"]["logits"][:n], "x": p["x"][:n], "y": p["y"][:n], **meta,
                "source": f"teacher {run['config'].get('teacher')} of run {run_label(run)}"}
    return _bundled_playground(n)


@lru_cache(maxsize=1)
def _bundled_playground(n: int) -> dict | None:
    import torch

    from .checkpoints import load_checkpoint_into
    from .data import load_dataset
    from .models import create_model
    from .train import bundled_teacher, fill_defaults, recipe_hash, teacher_config
    tcfg = fill_defaults(teacher_config(fill_defaults(RunConfig(dataset="digits"))))
    path = bundled_teacher(recipe_hash(tcfg))
    if path is None:
        return None
    data = load_dataset("digits", None, None, torch.device("cpu"))
    model = create_model(tcfg.student, num_classes=data.num_classes, in_channels=data.shape[0],
                         image_size=data.shape[1])
    load_checkpoint_into(model, path, "student").eval()
    x = data.normalize(data.test.x[:n])
    with torch.no_grad():
        logits = model(x)
    meta = dataset_meta("digits")
    return {"logits": logits, "x": x, "y": data.test.y[:n], **meta,
            "source": f"the bundled digits teacher ({tcfg.student})"}
