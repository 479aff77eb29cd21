"""The Train form <-> a run config, with no Streamlit in it: one naming scheme for widget keys, both
directions here; validation is one call to `recipes.resolve`. Also the form's teacher choices: a finished
run's model or an uploaded checkpoint (checked, weights-only, saved under the store home)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, MutableMapping

import torch

from ..checkpoints import read_state_dict
from ..config import FIELD_SPECS, RunConfig
from ..data import get_dataset_spec
from ..errors import ConfigError
from ..kd import get_method
from ..models import model_info
from ..recipes import check_pairing, resolve
from ..schemes import get_scheme
from ..store import Store, safe_name
from ..tuned import effective_values
from ..uploads import UploadError, check_fits, save_upload as save_checked
from .datasets import dataset_meta
from .messages import FORM_FIELDS, K, browser_message, name_widgets, widget_key, widget_label  # noqa: F401
from .roots import check_data_root

MAX_UPLOAD_BYTES = 200 * 2**20          # the same limit as .streamlit/config.toml's maxUploadSize
UPLOAD_SUFFIXES = (".pt", ".pth")
TEACHER_SOURCES = {
    "default": "the dataset's default teacher (bundled, or reused from an earlier run)",
    "run": "the model of a finished run",
    "train": "another architecture, trained now (once; reused later)",
    "upload": "upload a checkpoint (a state_dict .pt file, or a run's / bundled teacher's model.pt)",
}
NAME_AUTO = K + "_name_auto"   # the Run name the form filled in itself (not typed): it follows the config
NAME_OF = K + "_name_of"       # a prefilled name and the config (name left out) it describes


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
    if cfg.defaults:
        s[K + "defaults"] = cfg.defaults
    for m in cfg.methods:
        shown = effective_values(cfg.dataset, "methods", m.key, cfg.defaults, cfg)
        s[f"{K}w.{m.key}"] = float(shown["weight"] if m.weight is None else m.weight)
        for h in get_method(m.key).hparams:
            s[f"{K}hp.{m.key}.{h.name}"] = m.params.get(h.name, shown["params"][h.name])
    shown = effective_values(cfg.dataset, "schemes", cfg.scheme, cfg.defaults, cfg)["params"]
    for h in get_scheme(cfg.scheme).hparams:
        s[f"{K}sp.{cfg.scheme}.{h.name}"] = cfg.scheme_params.get(h.name, shown[h.name])
    s = {k: v for k, v in s.items() if v is not None}
    s[NAME_AUTO] = s[K + "name"]          # a preset's name describes the preset's config, and only that
    try:
        s[NAME_OF] = {"name": s[K + "name"], "config": _signature(config_from_form(s))}
    except ValueError:
        s[NAME_OF] = None
    return s


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
    if "data_root" in cfg:   # a browser names it: only folders on the allow-list (explorer/app/roots.py)
        check_data_root(cfg["data_root"], cfg["dataset"])
    source = g("teacher_source", "default")
    if source == "train":
        cfg["teacher"] = g("teacher")
        if g("teacher_epochs"):
            cfg["teacher_epochs"] = int(g("teacher_epochs"))
    elif source in ("run", "upload"):
        if not g("teacher_ckpt"):
            raise ConfigError("teacher_ckpt", "choose a finished run or upload a checkpoint for the teacher, "
                              "or pick the default teacher")
        cfg["teacher"], cfg["teacher_ckpt"] = g("teacher"), g("teacher_ckpt")
    scheme = get_scheme(cfg["scheme"]).describe()
    defaults = scheme_defaults(state, cfg["scheme"])
    sp = {name: g(f"sp.{cfg['scheme']}.{name}", d) for name, d in defaults.items()}
    cfg["scheme_params"] = {name: _hp_type(defaults[name])(v) for name, v in sp.items() if v != defaults[name]}
    if g("defaults"):
        cfg["defaults"] = g("defaults")
    methods = []
    for key in (g("methods") or []) if scheme["uses_methods"] else []:
        info = get_method(key).describe()
        shown = method_defaults(state, key)   # what the widgets start from: tuned or benchmark values
        term: dict[str, Any] = {"key": key}
        w = g(f"w.{key}")
        if w is not None and not math.isclose(float(w), float(shown["weight"])):
            term["weight"] = float(w)
        params = {}
        for h in info["hparams"]:
            v = g(f"hp.{key}.{h['name']}", shown["params"][h["name"]])
            if v != shown["params"][h["name"]]:
                params[h["name"]] = _hp_type(h["default"])(v)
        if params:
            term["params"] = params
        methods.append(term)
    cfg["methods"] = methods
    if g("ce_custom"):
        cfg["ce_weight"] = float(g("ce_weight", 1.0))
    return cfg


def method_defaults(state: Mapping[str, Any], key: str) -> dict:
    """{"weight", "params"} a method's widgets start from under the form's Defaults choice (tuned values for the
    dataset where there are some, else the benchmark's): a value equal to them is left to resolve() to fill."""
    return effective_values(state.get(K + "dataset", "digits"), "methods", key, state.get(K + "defaults"))


def scheme_defaults(state: Mapping[str, Any], scheme: str) -> dict:
    """A scheme's hyperparameters as its widgets start from them (tuned or benchmark, as method_defaults)."""
    return effective_values(state.get(K + "dataset", "digits"), "schemes", scheme, state.get(K + "defaults"))["params"]


def launchable(state: Mapping[str, Any]) -> tuple[dict | None, str | None]:
    """(the config the form describes, None) when it would run, else (None, the error naming the field).
    The check is recipes.resolve, the same pass the job queue and the trainer make (check_form)."""
    check = check_form(state)
    return check["config"], check["error"]


def check_form(state: Mapping[str, Any]) -> dict:
    """The Train form checked, on every change, as the engine will check it: recipes.resolve (every field,
    the data folder exists, the knowledge terms' pairing check), plus what only the form knows (a dataset
    that needs a folder has one; a folder dataset's images can be read, and its shape pairs). Returns
    {config: the config or None, error: the error naming the config field, key: the widget key it belongs
    to (None: no widget), message: the error as the browser shows it, naming the widget}."""
    try:
        config = config_from_form(state)
        cfg = resolve(config)
        spec = get_dataset_spec(cfg.dataset)
        if spec.needs_root and not cfg.data_root:
            raise ConfigError("data_root", f"{cfg.dataset} reads its files from a folder on this machine: name it")
        if spec.shape is None and cfg.data_root:    # known once the folder is read (cached per folder)
            try:
                meta = dataset_meta(cfg.dataset, cfg.data_root)
            except Exception as e:   # noqa: BLE001  (no images, unreadable files: the run would fail on them)
                raise ConfigError("data_root", str(e)) from None
            check_pairing(cfg, meta["shape"], len(meta["classes"]))
    except ValueError as e:        # ConfigError (a field named) or the form's own teacher choice
        field = getattr(e, "field", None)
        return {"config": None, "error": str(e), "key": widget_key(field, state),
                "message": browser_message(e, state)}
    return {"config": config, "error": None, "key": None, "message": None}


# ---------------------------------------------------------------------- a name that follows the config
def _signature(cfg: Mapping) -> str:
    """What a config runs, its name left out: resolved, so defaults the page fills in count as unchanged."""
    try:
        cfg = resolve(dict(cfg)).to_dict()
    except ValueError:
        pass
    return json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True, default=str)


def auto_name(cfg: Mapping) -> str:
    """A run name made from its config: "kd+at · cnn_tiny · digits", "dml · cnn_tiny · digits"."""
    scheme = cfg.get("scheme", "offline")
    methods = "+".join(m["key"] if isinstance(m, Mapping) else str(m) for m in cfg.get("methods") or [])
    uses = get_scheme(scheme).uses_methods
    what = (f"{scheme} {methods}" if methods and uses else scheme) if scheme != "offline" else \
        methods or "student alone"
    student = cfg.get("student") or get_dataset_spec(cfg.get("dataset", "digits")).default_student
    return f"{what} · {student} · {cfg.get('dataset', 'digits')}"[:FIELD_SPECS["name"].max_len or 120]


def follow_name(state: MutableMapping[str, Any]) -> str:
    """Call before the Run name widget is drawn. Unless the user typed a name (the box holds something
    other than what the form last filled in), the name follows the configuration: a preset's name while
    the form still describes that preset, else one made from the config (auto_name). Returns the name."""
    typed = (state.get(K + "name") or "").strip()
    if typed and typed != state.get(NAME_AUTO):
        return typed
    try:
        cfg = config_from_form({k: v for k, v in state.items() if k != K + "name"})
    except ValueError:                  # the form cannot describe a config yet: keep the box as it is
        return typed
    named = state.get(NAME_OF) or {}
    name = (named.get("name") if named.get("config") == _signature(cfg) else None) or auto_name(cfg)
    state[K + "name"] = state[NAME_AUTO] = name
    return name


def last_launched(store: Store) -> dict | None:
    """The run last submitted to the store (a new tab's Train form starts from its config), or None on an
    empty store: the newest distillation run, a launch's "student alone" comparison (queued right after its
    run, named after it) skipped; teacher runs, which a run queues for itself, are not launches."""
    runs = store.list_runs(role="distill")
    for i in range(len(runs) - 1, -1, -1):
        run, cfg = runs[i], runs[i]["config"]
        if not (i and run["name"] == f"{runs[i - 1]['name']} · student alone"
                and cfg.get("scheme") == "offline" and not cfg.get("methods")):
            return run
    return None


def as_chosen(config: Mapping) -> dict:
    """A stored (resolved) config as the form would have described it: what resolve filled in from the
    dataset's recipe left out again (the default teacher, the recipe's batch size and learning rate), so the
    form shows "the dataset's default teacher" and empty recipe boxes, and launches the same run."""
    cfg = dict(config)
    try:
        spec = get_dataset_spec(cfg.get("dataset") or "digits")
    except (KeyError, ValueError):      # a dataset no longer registered: form_state says so
        return cfg
    r = spec.recipe
    if not cfg.get("teacher_ckpt") and cfg.get("teacher") in (None, spec.default_teacher) \
            and cfg.get("teacher_epochs") in (None, r["teacher_epochs"]):
        cfg.pop("teacher", None), cfg.pop("teacher_epochs", None)
    for field in ("batch_size", "lr"):
        if field in r and cfg.get(field) == r[field]:
            cfg.pop(field)
    return cfg


def comparison_config(cfg: dict) -> dict:
    """The same run without distillation: the student alone (offline scheme, no knowledge terms)."""
    out = dict(cfg, scheme="offline", methods=[], scheme_params={})
    out.pop("ce_weight", None)
    out.pop("defaults", None)    # tuned | benchmark concerns the knowledge terms: resolve picks it for none
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


# ---------------------------------------------------------------------- models by name (timm)
OTHER_MODEL = "timm:"   # the prefix of a model given by name (explorer/models/timm_models.py)


def is_named_model(arch) -> bool:
    """A model the form takes by name rather than from the zoo's list: `timm:NAME[?options]`."""
    return isinstance(arch, str) and arch.startswith(OTHER_MODEL) and len(arch) > len(OTHER_MODEL)


def model_options(models, current) -> list[str]:
    """The zoo's models, plus the model given by name when the field holds one (so the picker shows it)."""
    return list(models) + ([current] if is_named_model(current) and current not in models else [])


def use_named_model(state: MutableMapping[str, Any], field: str) -> None:
    """The "other model by name" box's callback: its text (trimmed) becomes the field's value, checked with
    the whole form (recipes.resolve names a bad name or a missing timm beside the field)."""
    name = str(state.get(K + field + ".other") or "").strip()
    if name:
        state[K + field] = name if is_named_model(name) or ":" in name else OTHER_MODEL + name


# ---------------------------------------------------------------------- the form's teacher choices
def teacher_runs(store: Store, dataset: str) -> list[dict]:
    """Finished runs on `dataset` whose model can serve as a teacher, newest first."""
    runs = [r for r in store.list_runs(status="completed") if r["dataset"] == dataset
            and "model" in store.artifacts(r["id"])]
    return runs[::-1]


def model_params(arch: str, dataset: str, data_root: str | None = None) -> int | None:
    try:
        meta = dataset_meta(dataset, data_root)
        from ..models.sequence import build_args   # text datasets: (T,) windows, the context as image_size
        return model_info(arch, **build_args(meta["shape"], len(meta["classes"])))["params"]
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
        from ..models.sequence import build_args
        check_fits(out, arch, **build_args(meta["shape"], len(meta["classes"])))
    except Exception:
        out.unlink(missing_ok=True)
        raise
    return str(out)


def save_image_zip(store: Store, filename: str, data: bytes, image_size: int | None = None) -> tuple[str, dict]:
    """Check an uploaded zip of an image folder (explorer.uploads: size, zip-bomb and path checks, only the
    images training reads are kept) and unpack it under the store home's uploads/image_zip, one of the
    folders the app may read (explorer/app/roots.py). Returns the Data folder to fill in -- the unpacked
    folder, or the one folder it holds when the zip wraps its class folders in a top folder -- and what
    the folder reader makes of it (`uploads.describe_image_folder`). Leaves nothing behind when refused."""
    from ..uploads import describe_image_folder
    if Path(filename).suffix.lower() != ".zip":
        raise UploadError(f"{filename!r} is not a .zip file: zip a folder holding one subfolder of images per class")
    folder = save_checked(filename, data, "image_zip", store.home)
    root = folder
    inner = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(inner) == 1 and inner[0].is_dir() and any(p.is_dir() for p in inner[0].iterdir()):
        root = inner[0]          # my_images.zip -> my_images/<class>/...: the classes are one level down
    check_data_root(root, "folder", store.home)
    return str(root), describe_image_folder(root, image_size or 32)
