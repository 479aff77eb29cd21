"""The Train form <-> a run config, with no Streamlit in it: one naming scheme for widget keys, both
directions here; validation is one call to `recipes.resolve`. Also the form's teacher choices: a finished
run's model or an uploaded checkpoint (checked, weights-only, saved under the store home)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoints import read_state_dict
from ..config import RunConfig
from ..kd import get_method
from ..models import model_info
from ..recipes import resolve
from ..schemes import get_scheme
from ..store import Store, safe_name
from ..uploads import UploadError, check_fits, save_upload as save_checked
from .analysis import dataset_meta

K = "train."   # every Train-page widget key starts with this
MAX_UPLOAD_BYTES = 200 * 2**20          # the same limit as .streamlit/config.toml's maxUploadSize
UPLOAD_SUFFIXES = (".pt", ".pth")
TEACHER_SOURCES = {
    "default": "the dataset's default teacher (bundled, or reused from an earlier run)",
    "run": "the model of a finished run",
    "train": "another architecture, trained now (once; reused later)",
    "upload": "upload a checkpoint (a state_dict .pt file)",
}


# ---------------------------------------------------------------------- the form <-> a config
def _hp_type(default):
    return bool if isinstance(default, bool) else type(default)


def form_state(config: Mapping) -> dict[str, Any]:
    """Widget values (key -> value) that show `config` on the Train page: a preset's prefill."""
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


def launchable(state: Mapping[str, Any]) -> tuple[dict | None, str | None]:
    """(the config the form describes, None) when it would run, else (None, the error naming the field).
    The check is recipes.resolve, the same pass the job queue and the trainer make."""
    try:
        config = config_from_form(state)
        resolve(config)
    except ValueError as e:        # ConfigError (a field named) or the form's own teacher choice
        return None, str(e)
    return config, None


def comparison_config(cfg: dict) -> dict:
    """The same run without distillation: the student alone (offline scheme, no knowledge terms)."""
    out = dict(cfg, scheme="offline", methods=[], scheme_params={})
    out.pop("ce_weight", None)
    out["name"] = f"{cfg.get('name') or 'run'} · student alone"
    return out


def find_same_run(store: Store, cfg: dict) -> dict | None:
    """A completed run whose config equals `cfg` (defaults filled, names ignored): reused, not re-trained."""
    want = resolve(cfg).to_dict()
    want.pop("name")
    for run in reversed(store.list_runs(status="completed", role="distill")):
        have = dict(run["config"])
        have.pop("name", None)
        if have == want:
            return run
    return None


# ---------------------------------------------------------------------- the form's teacher choices
def teacher_runs(store: Store, dataset: str) -> list[dict]:
    """Finished runs on `dataset` whose model can serve as a teacher, newest first."""
    runs = [r for r in store.list_runs(status="completed") if r["dataset"] == dataset
            and "model" in store.artifacts(r["id"])]
    return runs[::-1]


def model_params(arch: str, dataset: str, data_root: str | None = None) -> int | None:
    try:
        meta = dataset_meta(dataset, data_root)
        return model_info(arch, len(meta["classes"]), meta["shape"][0], meta["shape"][1])["params"]
    except Exception:   # a folder not given yet, a model that does not fit the input: no count
        return None


def teacher_from_run(store: Store, run_id: str) -> tuple[str, str]:
    """(architecture, checkpoint path) of a finished run's student, saved as a plain state_dict
    under <home>/teachers/ (a config's teacher_ckpt is read as a plain state_dict)."""
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
