"""Train: choose data, teacher, student, scheme and knowledge terms (widgets from the registries), launch a
job, and watch it live (each loss term, accuracy, images/s, ETA) with the queue beside it."""
from dataclasses import replace

import streamlit as st
import torch
import yaml

from explorer import teachers, tuned
from explorer.app import form as F
from explorer.app import live
from explorer.app.roots import allowed_or_none
from explorer.app.text_upload import TYPES as TEXT_TYPES, save_text_upload
from explorer.app.runs import run_label
from explorer.app import widgets as W
from explorer.checkpoints import CheckpointError
from explorer.data import get_dataset_spec, list_datasets
from explorer.kd import get_method, list_methods
from explorer.models import list_models
from explorer.presets import DEFAULT_PRESET, method_preset, preset_configs, scheme_preset
from explorer.schemes import get_scheme, list_schemes

K, KEEP = F.K, W.KEEP

store = W.setup_page("Train")
W.begin_form()
st.title("Train a student")

# ---------------------------------------------------------------- prefill: a preset, a method, a run's config
prefill = st.session_state.pop("train_prefill", None)
qp = {k: st.query_params.get(k) for k in ("preset", "method", "scheme") if st.query_params.get(k)}
if prefill is None and qp and st.session_state.get("_applied_query") != qp:   # a shared link: ?method=at
    st.session_state["_applied_query"] = qp
    try:
        prefill = (preset_configs(qp["preset"])[0] if "preset" in qp else
                   method_preset(qp["method"]) if "method" in qp else scheme_preset(qp["scheme"]))
    except KeyError as e:
        st.warning(str(e))
ORIGIN = "train_origin"      # the run whose config a new tab's form started from (shown until another prefill)
if prefill is None and K + "dataset" not in st.session_state:   # a new tab: the store's last launch, if any
    last = F.last_launched(store)
    try:
        if last is not None:
            st.session_state.update(F.form_state(F.as_chosen(last["config"])))
            st.session_state[ORIGIN] = last["name"]
    except (ValueError, KeyError, TypeError):       # a method or dataset gone since: the default experiment
        last = None
    if last is None:
        prefill = preset_configs(DEFAULT_PRESET)[0]     # a first visit on an empty store: the default experiment
if prefill is not None:
    st.session_state.pop(ORIGIN, None)
    st.session_state.update(F.form_state(prefill))


def _to_default_preset():
    st.session_state["train_prefill"] = preset_configs(DEFAULT_PRESET)[0]


if st.session_state.get(ORIGIN):
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    c1.caption(f"The form starts from your last launch: **{st.session_state[ORIGIN]}** (the run store's newest "
               "run; change anything below, or start again from the default experiment).")
    c2.button("Default preset", key="train.to_default", on_click=_to_default_preset, icon=":material/restart_alt:",
              help="fill the form with the default experiment instead")


def _model_field(name: str, where, models) -> str:
    """The zoo's models in a picker, and under it any timm model by name (`timm:NAME`), checked live by the
    same resolver as every field (its error shows beside the picker)."""
    arch = W.field_widget(name, where, F.model_options(models, st.session_state.get(K + name)))
    where.text_input("… or a timm model by name", key=K + name + ".other", placeholder="timm:resnet10t",
                     on_change=F.use_named_model, args=(st.session_state, name),
                     help="any timm model as timm:NAME (options after ?, e.g. timm:vit_tiny_patch16_224?patch_size=4"
                          "), random init unless its weights are in your local cache; press Enter to use it")
    return arch


def _defaults_changed():
    """Tuned <-> benchmark: the methods' widgets start again from the chosen values."""
    for k in [k for k in st.session_state if k.startswith((K + "w.", K + "hp.", K + "sp."))]:
        del st.session_state[k]


def _defaults_choice(dataset: str, scheme: str, methods: list[str]) -> None:
    """Which defaults the knowledge terms start from, and what that means for these settings."""
    settings = {"dataset": dataset, "scheme": scheme, "methods": methods}
    choices = tuned.defaults_choices(settings)
    if st.session_state.get(K + "defaults") not in choices:
        st.session_state[K + "defaults"] = choices[0]
    W.field_widget("defaults", None, choices, on_change=_defaults_changed,
                   format_func=lambda c: {"tuned": f"tuned for {dataset}", "benchmark": "benchmark (published)"}[c])
    if st.session_state[K + "defaults"] == "benchmark" and "tuned" in choices:
        st.caption("benchmark: the published values (the values tuned for this dataset are one click away)")
    else:
        st.caption(tuned.defaults_label(settings))


def _folder_upload(label: str, types: list[str], key: str, help_: str, save, what: str) -> None:
    """An upload that, once checked and saved by `save(name, bytes) -> (folder, what it holds)`, fills in the
    Data folder; a refusal says why (UploadError, or a folder the reader refuses) and fills in nothing."""
    up = st.file_uploader(label, type=types, key=K + key, help=help_)
    if up is not None and st.session_state.get(K + "_zip_done") != up.file_id:
        try:
            folder, seen = save(up.name, up.getvalue())
            st.session_state[K + "data_root"] = folder
            st.session_state[K + "_zip_done"] = up.file_id
            st.session_state[K + "_zip_seen"] = f"{seen}; saved as {folder}"
        except (ValueError, OSError) as e:
            st.session_state.pop(K + "_zip_seen", None)
            st.error(f"{what} refused: {e}")
    if up is not None and st.session_state.get(K + "_zip_seen"):
        st.success(st.session_state[K + "_zip_seen"])


def _image_zip_seen(name: str, data: bytes) -> tuple[str, str]:
    folder, seen = F.save_image_zip(store, name, data, st.session_state.get(K + "image_size"))
    return folder, (f"{name}: {seen['images']} images in {len(seen['classes'])} classes "
                    f"({', '.join(seen['classes'][:8])}{' …' if len(seen['classes']) > 8 else ''})"
                    + (f", {seen['skipped']} files skipped" if seen["skipped"] else ""))


def _dataset_changed():
    for k in ("student", "teacher", "n_train", "data_root", "teacher_ckpt", "_zip_done", "_zip_seen"):   # an upload refills
        st.session_state.pop(K + k, None)


live_slot = st.container()      # filled last: a launch below shows up there in the same run
form, side = st.columns([3, 2], gap="large")
with form:
    # ------------------------------------------------------------ 1 data
    st.markdown("#### 1 · Data")
    c1, c2 = st.columns(2)
    dataset = W.field_widget("dataset", c1, list_datasets(), on_change=_dataset_changed)
    spec = get_dataset_spec(dataset)
    c2.caption(spec.description)
    defaults = {"epochs": spec.recipe["epochs"], "teacher_epochs": spec.recipe["teacher_epochs"], "n_train": None,
                "batch_size": None, "lr": None, "seed": 0, "ce_weight": 1.0, "name": ""}
    for name, value in defaults.items():
        st.session_state.setdefault(K + name, value)     # defaults via state: a prefill may have set them
    if spec.needs_root or spec.default_root:
        if K + "data_root" not in st.session_state:
            st.session_state[K + "data_root"] = spec.default_root or ""
        if dataset == "folder":    # before the Data folder box: a checked upload fills it in
            _folder_upload("Upload a zipped image folder (.zip, one subfolder of images per class)", ["zip"],
                           "zip_upload", "checked and unpacked under your data folder (only the images are kept); "
                           "the Data folder is then filled in", _image_zip_seen, "Zip")
        elif spec.modality == "text":   # text-folder and its -bpe forms
            _folder_upload("Upload your text (a .txt file, UTF-8, or a .zip of .txt files)", TEXT_TYPES,
                           "text_upload", "checked (UTF-8, size) and saved under your data folder (only the .txt "
                           "files are kept); the Data folder is then filled in",
                           lambda name, data: save_text_upload(store, name, data, dataset), "Text")
        W.field_widget("data_root")
    root = allowed_or_none(st.session_state.get(K + "data_root"), dataset)   # else Launch names the allowed roots

    # ------------------------------------------------------------ 2 teacher
    st.markdown("#### 2 · Teacher")
    # a scheme without a teacher (DML, KDCL, ONE, BYOT, CS-KD, TF-KD, PS-KD) gets no teacher picker
    _scheme_now = st.session_state.get(K + "scheme") or "offline"
    _no_teacher = _scheme_now in list_schemes() and not get_scheme(_scheme_now).needs_teacher
    if _no_teacher:
        st.caption(f"**{_scheme_now}** — {get_scheme(_scheme_now).name} — learns without a teacher: nothing to pick "
                   "here (its peers, heads or its own past predictions take the teacher's place).")
    models = list_models()
    if not _no_teacher:
        source = st.radio("Teacher", list(F.TEACHER_SOURCES), format_func=F.TEACHER_SOURCES.get,
                          key=K + "teacher_source", persist_state=KEEP, label_visibility="collapsed")
        W.error_slot(K + "teacher_source")
        models = list_models()
        if source == "default":
            try:
                t = teachers.locate_default(store, dataset, root)
                acc = f", test accuracy {t.test_acc:.3f}" if t.test_acc is not None else ""
                st.caption(f"**{t.arch}** — {t.describe()}{acc}.")
            except ValueError as e:      # ConfigError: a dataset folder not given yet, say
                st.caption(str(e))
        elif source == "run":
            runs = F.teacher_runs(store, dataset)
            if not runs:
                st.info(f"No finished run on {dataset} yet; pick another teacher source.")
            else:
                by_id = {r["id"]: r for r in runs}
                rid = st.selectbox("Finished run", list(by_id), format_func=lambda i: run_label(by_id[i]) +
                                   f" — {by_id[i]['config'].get('student')}, test acc "
                                   f"{by_id[i]['summary'].get('test_acc', float('nan')):.3f}", key=K + "teacher_run")
                st.session_state[K + "teacher"], st.session_state[K + "teacher_ckpt"] = F.teacher_from_run(store, rid)
        else:
            if st.session_state.get(K + "teacher") not in models and not F.is_named_model(st.session_state.get(K + "teacher")):
                st.session_state[K + "teacher"] = spec.default_teacher
            c1, c2 = st.columns(2)
            arch = _model_field("teacher", c1, models)
            n = F.model_params(arch, dataset, root)
            c2.caption(f"{n / 1e3:,.0f}k parameters" if n else "")
            if source == "train":
                W.field_widget("teacher_epochs", c2, note=f"the {dataset} recipe uses {spec.recipe['teacher_epochs']}; "
                               "a teacher with the same recipe is trained once and reused")
            else:
                up = st.file_uploader("Teacher checkpoint (.pt / .pth state_dict, or a run's model.pt)",
                                      type=["pt", "pth"], key=K + "upload", max_upload_size=F.MAX_UPLOAD_BYTES // 2**20,
                                      help="torch.save(model.state_dict(), 'teacher.pt'), or a file in KD Explorer's "
                                           "own layout {'student': state_dict} (a run's model.pt, a bundled teacher); "
                                           "loaded weights-only, never as code")
                if up is not None:
                    try:
                        st.session_state[K + "teacher_ckpt"] = F.save_upload(store, up.name, up.getvalue(), arch,
                                                                             dataset, root)
                        st.success(f"{up.name} fits {arch}; saved as {st.session_state[K + 'teacher_ckpt']}")
                    except (CheckpointError, ValueError, OSError) as e:
                        st.session_state.pop(K + "teacher_ckpt", None)
                        st.error(f"Checkpoint refused: {e}")
                elif st.session_state.get(K + "teacher_ckpt"):
                    st.caption(f"Using {st.session_state[K + 'teacher_ckpt']}")

    # ------------------------------------------------------------ 3 student
    st.markdown("#### 3 · Student")
    if st.session_state.get(K + "student") not in models and not F.is_named_model(st.session_state.get(K + "student")):
        st.session_state[K + "student"] = spec.default_student
    c1, c2 = st.columns(2)
    student = _model_field("student", c1, models)
    n = F.model_params(student, dataset, root)
    c2.caption(f"{n / 1e3:,.1f}k parameters" if n else "")

    # ------------------------------------------------------------ 4 scheme & knowledge
    st.markdown("#### 4 · Scheme and knowledge")
    schemes = list_schemes()
    scheme = W.field_widget("scheme", None, schemes,
                            format_func=lambda k: f"{k} — {get_scheme(k).name} ({get_scheme(k).category})")
    sinfo = get_scheme(scheme).describe()
    if sinfo["notes"]:
        st.caption(sinfo["notes"])
    _defaults_choice(dataset, scheme, list(st.session_state.get(K + "methods") or []) if sinfo["uses_methods"] else [])
    if sinfo["hparams"]:
        with st.expander(f"{scheme} hyperparameters", expanded=scheme != "offline"):
            shown = F.scheme_defaults(st.session_state, scheme)
            for h in get_scheme(scheme).hparams:
                W.hparam_widget(replace(h, default=shown[h.name]), f"{K}sp.{scheme}.{h.name}")
    if sinfo["uses_methods"]:
        methods = W.field_widget(
            "methods", None, list_methods(), multi=True,
            format_func=lambda k: f"{k} — {get_method(k).name} ({get_method(k).category})",
            note="each term adds weight × its loss to the student's cross-entropy; empty = the student alone")
        for key in methods:
            info = get_method(key).describe()
            shown = F.method_defaults(st.session_state, key)   # tuned for this dataset, or the benchmark's
            with st.expander(f"{key} — {info['name']} ({info['authors'].split(',')[0]} et al., {info['year']})",
                             expanded=len(methods) == 1):
                W.latex(info["equation"])
                W.weight_widget(key, shown["weight"])
                for h in get_method(key).hparams:
                    W.hparam_widget(replace(h, default=shown["params"][h.name]), f"{K}hp.{key}.{h.name}")
                if info["notes"]:
                    st.caption(info["notes"])
                W.published_panel(store, key)   # the published figures, cited, beside the user's runs
        c1, c2 = st.columns(2)
        if c1.checkbox("Set the cross-entropy weight", key=K + "ce_custom", persist_state=KEEP,
                       help="default: the methods' benchmark value (KD: 0.1, the others 1)"):
            W.field_widget("ce_weight", c2)
    else:
        st.caption("This scheme brings its own losses; knowledge terms do not apply.")

    # ------------------------------------------------------------ 5 budget
    st.markdown("#### 5 · Budget")
    c1, c2, c3 = st.columns(3)
    W.field_widget("epochs", c1)
    W.field_widget("n_train", c2)
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if st.session_state.get(K + "device") not in devices:
        st.session_state[K + "device"] = "auto"
    W.field_widget("device", c3, devices)
    with st.expander("Optimisation (empty = the dataset's recipe)"):
        c1, c2, c3 = st.columns(3)
        W.field_widget("batch_size", c1, placeholder=str(spec.recipe["batch_size"]))
        W.field_widget("lr", c2, placeholder=str(spec.recipe["lr"]))
        W.field_widget("seed", c3)
    F.follow_name(st.session_state)        # the name follows the config unless the user typed one
    W.field_widget("name")


with side:
    # ------------------------------------------------------------ launch
    st.markdown("#### Launch")
    check = F.check_form(st.session_state)     # recipes.resolve with the pairing check, on every change
    config = check["config"]
    distils = config is not None and bool(config["methods"] or config["scheme"] != "offline")
    compare = st.checkbox("Also train the student alone, to see the gap distillation closes", value=True,
                          key=K + "compare", disabled=not distils, persist_state=KEEP)
    if check["message"] and W.show_field_error(check["key"], check["message"]):
        st.caption(f":red[Launch is off until **{F.widget_label(check['key'])}** is fixed (marked on the left).]")
    elif check["message"]:
        st.error(check["message"])
    if st.button("Launch", type="primary", icon=":material/rocket_launch:", disabled=config is None,
                 key="train.launch") and config is not None:
        W.launch(store, [config] + ([F.comparison_config(config)] if compare and distils else []))
        st.session_state["_live_was_running"] = True
    if config is not None:
        st.caption("The run's config (`kd-explorer run --config FILE` reruns it):")
        st.code(yaml.safe_dump(config, sort_keys=False), language="yaml")


# ---------------------------------------------------------------- live progress and the queue
with live_slot:
    live.show(store)
