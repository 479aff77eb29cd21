"""Train: choose data, teacher, student, scheme and knowledge terms (widgets from the registries), launch a
job, and watch it live (each loss term, accuracy, images/s, ETA) with the queue beside it."""
import streamlit as st
import torch
import yaml

from explorer import app_state as S
from explorer import app_widgets as W
from explorer import jobs
from explorer.checkpoints import CheckpointError
from explorer.data import get_dataset_spec, list_datasets
from explorer.kd import get_method, list_methods
from explorer.models import list_models
from explorer.plots import training_curves
from explorer.plots.app_extras import gap_bars
from explorer.presets import DEFAULT_PRESET, method_preset, preset_configs, scheme_preset
from explorer.schemes import get_scheme, list_schemes

K = S.K
KEEP = "session"   # widget values survive a visit to another page

store = W.setup_page("Train")
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
if prefill is None and K + "dataset" not in st.session_state:
    prefill = preset_configs(DEFAULT_PRESET)[0]     # a first visit shows the default experiment
if prefill is not None:
    st.session_state.update(S.form_state(prefill))


def _dataset_changed():
    for k in ("student", "teacher", "n_train", "data_root", "teacher_ckpt"):
        st.session_state.pop(K + k, None)


live_slot = st.container()      # filled last: a launch below shows up there in the same run
form, side = st.columns([3, 2], gap="large")
with form:
    # ------------------------------------------------------------ 1 data
    st.markdown("#### 1 · Data")
    c1, c2 = st.columns(2)
    dataset = c1.selectbox("Dataset", list_datasets(), key=K + "dataset", on_change=_dataset_changed,
                           persist_state=KEEP, help="from the dataset registry")
    spec = get_dataset_spec(dataset)
    c2.caption(spec.description)
    defaults = {"epochs": spec.recipe["epochs"], "teacher_epochs": spec.recipe["teacher_epochs"], "n_train": None,
                "batch_size": None, "lr": None, "seed": 0, "ce_weight": 1.0, "name": ""}
    for name, value in defaults.items():
        st.session_state.setdefault(K + name, value)     # defaults via state: a prefill may have set them
    if spec.needs_root or spec.default_root:
        if K + "data_root" not in st.session_state:
            st.session_state[K + "data_root"] = spec.default_root or ""
        st.text_input("Data folder", key=K + "data_root", persist_state=KEEP,
                      help="a folder on this machine holding the dataset's files")
    root = (st.session_state.get(K + "data_root") or "").strip() or None

    # ------------------------------------------------------------ 2 teacher
    st.markdown("#### 2 · Teacher")
    source = st.radio("Teacher", list(S.TEACHER_SOURCES), format_func=S.TEACHER_SOURCES.get,
                      key=K + "teacher_source", persist_state=KEEP, label_visibility="collapsed")
    models = list_models()
    if source == "default":
        t = S.default_teacher(store, dataset, root)
        acc = f", test accuracy {t['test_acc']:.3f}" if t["test_acc"] is not None else ""
        st.caption(f"**{t['arch']}** — {t['source']}{acc}.")
    elif source == "run":
        runs = S.teacher_runs(store, dataset)
        if not runs:
            st.info(f"No finished run on {dataset} yet; pick another teacher source.")
        else:
            by_id = {r["id"]: r for r in runs}
            rid = st.selectbox("Finished run", list(by_id), format_func=lambda i: S.run_label(by_id[i]) +
                               f" — {by_id[i]['config'].get('student')}, test acc "
                               f"{by_id[i]['summary'].get('test_acc', float('nan')):.3f}", key=K + "teacher_run")
            st.session_state[K + "teacher"], st.session_state[K + "teacher_ckpt"] = S.teacher_from_run(store, rid)
    else:
        if st.session_state.get(K + "teacher") not in models:
            st.session_state[K + "teacher"] = spec.default_teacher
        c1, c2 = st.columns(2)
        arch = c1.selectbox("Teacher architecture", models, key=K + "teacher", persist_state=KEEP)
        n = S.model_params(arch, dataset, root)
        c2.caption(f"{n / 1e3:,.0f}k parameters" if n else "")
        if source == "train":
            c2.number_input("Teacher epochs", 1, 10_000, key=K + "teacher_epochs",
                            persist_state=KEEP, help=f"the {dataset} recipe uses {spec.recipe['teacher_epochs']}; "
                            "a teacher with the same recipe is trained once and reused")
        else:
            up = st.file_uploader("Teacher checkpoint (.pt / .pth state_dict)", type=["pt", "pth"],
                                  key=K + "upload", max_upload_size=S.MAX_UPLOAD_BYTES // 2**20,
                                  help="torch.save(model.state_dict(), 'teacher.pt'); loaded weights-only, "
                                       "never as code")
            if up is not None:
                try:
                    st.session_state[K + "teacher_ckpt"] = S.save_upload(store, up.name, up.getvalue(), arch,
                                                                         dataset, root)
                    st.success(f"{up.name} fits {arch}; saved as {st.session_state[K + 'teacher_ckpt']}")
                except (CheckpointError, ValueError, OSError) as e:
                    st.session_state.pop(K + "teacher_ckpt", None)
                    st.error(f"Checkpoint refused: {e}")
            elif st.session_state.get(K + "teacher_ckpt"):
                st.caption(f"Using {st.session_state[K + 'teacher_ckpt']}")

    # ------------------------------------------------------------ 3 student
    st.markdown("#### 3 · Student")
    if st.session_state.get(K + "student") not in models:
        st.session_state[K + "student"] = spec.default_student
    c1, c2 = st.columns(2)
    student = c1.selectbox("Student architecture", models, key=K + "student", persist_state=KEEP)
    n = S.model_params(student, dataset, root)
    c2.caption(f"{n / 1e3:,.1f}k parameters" if n else "")

    # ------------------------------------------------------------ 4 scheme & knowledge
    st.markdown("#### 4 · Scheme and knowledge")
    schemes = list_schemes()
    scheme = st.selectbox("Scheme", schemes, key=K + "scheme", persist_state=KEEP,
                          format_func=lambda k: f"{k} — {get_scheme(k).name} ({get_scheme(k).category})")
    sinfo = get_scheme(scheme).describe()
    if sinfo["notes"]:
        st.caption(sinfo["notes"])
    if sinfo["hparams"]:
        with st.expander(f"{scheme} hyperparameters", expanded=scheme != "offline"):
            for h in sinfo["hparams"]:
                W.hparam_widget(h, f"{K}sp.{scheme}.{h['name']}")
    if sinfo["uses_methods"]:
        methods = st.multiselect(
            "Knowledge terms (empty = the student alone)", list_methods(), key=K + "methods", persist_state=KEEP,
            format_func=lambda k: f"{k} — {get_method(k).name} ({get_method(k).category})",
            help="each term adds weight × its loss to the student's cross-entropy")
        for key in methods:
            info = get_method(key).describe()
            with st.expander(f"{key} — {info['name']} ({info['authors'].split(',')[0]} et al., {info['year']})",
                             expanded=len(methods) == 1):
                st.latex(info["equation"])
                W.hparam_widget({"name": "weight", "default": float(info["default_weight"]), "low": 0.0, "high": 1e6,
                                 "help": "multiplies every loss term of this method"}, f"{K}w.{key}")
                for h in info["hparams"]:
                    W.hparam_widget(h, f"{K}hp.{key}.{h['name']}")
                if info["notes"]:
                    st.caption(info["notes"])
        c1, c2 = st.columns(2)
        if c1.checkbox("Set the cross-entropy weight", key=K + "ce_custom", persist_state=KEEP,
                       help="default: the methods' benchmark value (KD: 0.1, the others 1)"):
            c2.number_input("CE weight", 0.0, 1000.0, key=K + "ce_weight", persist_state=KEEP)
    else:
        st.caption("This scheme brings its own losses; knowledge terms do not apply.")

    # ------------------------------------------------------------ 5 budget
    st.markdown("#### 5 · Budget")
    c1, c2, c3 = st.columns(3)
    c1.number_input("Epochs", 1, 10_000, key=K + "epochs", persist_state=KEEP)
    c2.number_input("Training images (empty = all)", 10, 10_000_000, key=K + "n_train",
                    persist_state=KEEP, help="a stratified subset of the training split, for quick runs")
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if st.session_state.get(K + "device") not in devices:
        st.session_state[K + "device"] = "auto"
    c3.selectbox("Device", devices, key=K + "device", persist_state=KEEP)
    with st.expander("Optimisation (empty = the dataset's recipe)"):
        c1, c2, c3 = st.columns(3)
        c1.number_input("Batch size", 2, 65_536, key=K + "batch_size", persist_state=KEEP,
                        placeholder=str(spec.recipe["batch_size"]))
        c2.number_input("Learning rate", 0.0, 1000.0, key=K + "lr", format="%g", persist_state=KEEP,
                        placeholder=str(spec.recipe["lr"]))
        c3.number_input("Seed", 0, 2**31 - 1, key=K + "seed", persist_state=KEEP)
    st.text_input("Run name (optional)", key=K + "name", persist_state=KEEP)


with side:
    # ------------------------------------------------------------ launch
    st.markdown("#### Launch")
    try:
        config = S.config_from_form(st.session_state)
        S.validate(config)
        error = None
    except ValueError as e:    # ConfigError and a scheme's check name the field
        config, error = None, str(e)
    distils = config is not None and bool(config["methods"] or config["scheme"] != "offline")
    compare = st.checkbox("Also train the student alone, to see the gap distillation closes", value=True,
                          key=K + "compare", disabled=not distils, persist_state=KEEP)
    if error:
        st.error(error)
    if st.button("Launch", type="primary", icon=":material/rocket_launch:", disabled=config is None,
                 key="train.launch"):
        W.launch(store, [config] + ([S.comparison_config(config)] if compare and distils else []))
        st.session_state["_live_was_running"] = True
    if config is not None:
        st.caption("The run's config (`kd-explorer run --config FILE` reruns it):")
        st.code(yaml.safe_dump(config, sort_keys=False), language="yaml")


# ---------------------------------------------------------------- live progress and the queue
def _run_card(rid: str) -> dict:
    p = S.progress(store, rid)
    st.markdown(f"**{p['name']}** · `{p['status']}`")
    if p["status"] == "queued":
        st.caption(p["message"])
        if st.button("Cancel", key=f"cancel.{rid}"):
            jobs.cancel(rid, store)
    elif p["status"] == "running":
        label = f"epoch {p['epoch']}/{p['epochs']} · {100 * p['fraction']:.0f}% · ETA {S.format_seconds(p['eta_s'])}"
        st.progress(p["fraction"], text=label)
        losses = list(p["losses"].items())
        for row in range(0, len(losses), 4):          # every loss term, four to a row
            for col, (name, v) in zip(st.columns(4), losses[row:row + 4]):
                col.metric(name, f"{v:.4f}")
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        for col, (name, v) in zip(st.columns(4), (("val acc", fmt(p["val_acc"], ".3f")),
                                                  ("train acc", fmt(p["train_acc"], ".3f")),
                                                  ("images/s", fmt(p["images_per_s"], ",.0f")),
                                                  ("ETA", S.format_seconds(p["eta_s"])))):
            col.metric(name, v)
        if p["message"]:
            st.caption(p["message"])
        if st.button("Cancel", key=f"cancel.{rid}"):
            jobs.cancel(rid, store)
    elif p["status"] == "completed":
        s = p["summary"]
        st.caption(f"test accuracy {s.get('test_acc', float('nan')):.3f} · trained in "
                   f"{S.format_seconds(s.get('seconds'))}")
    else:
        st.warning(p["message"] or p["status"])
    return p


def live_panel():
    ids = st.session_state.get("active_runs", [])
    cards = []
    for col, rid in zip(st.columns(max(len(ids), 1)), ids):
        with col:
            try:
                cards.append(_run_card(rid))
            except KeyError:      # deleted meanwhile
                pass
    running = [c for c in cards if not c["final"]]
    if running:
        df = S.compare_metrics(store, [c["id"] for c in cards])
        names = [n for n in ("train/loss", "val/acc") if not df.empty and n in set(df["name"])]
        if names:
            W.chart(training_curves(df, names=names, title="Live curves"), key="train.live_curves")
    elif cards:
        rows = S.gap_rows(store, [c["id"] for c in cards])
        if rows:
            teacher = rows[0]["acc"] if rows[0]["kind"] == "teacher" else None
            for col, r in zip(st.columns(len(rows)), rows):
                vs = None if teacher is None or r["kind"] == "teacher" else \
                    f"{100 * (r['acc'] - teacher):+.1f} pts vs teacher"
                col.metric(r["label"].replace("<br>", " · "), f"{r['acc']:.3f}", vs)
            closed = S.gap_closed(rows)
            if closed is not None and closed > 0:
                st.success(f"Distillation closed **{closed:.0%}** of the gap between the student trained alone "
                           "and the teacher.")
            elif closed is not None:
                st.info("This time the distilled student did no better than the student alone; short runs are "
                        "noisy — try more epochs or another seed.")
            W.chart(gap_bars(rows), key="train.gap")
            run = next((c["id"] for c in cards if c["status"] == "completed"), None)
            links = st.columns(6)
            for col, (page, label) in zip(links, (
                    ("pages/3_Attention_maps.py", "Attention maps"), ("pages/4_Feature_similarity.py", "CKA"),
                    ("pages/5_Relation_matrices.py", "Relations"), ("pages/6_Logits_and_calibration.py", "Logits"),
                    ("pages/7_Embeddings.py", "Embeddings"), ("pages/2_Runs.py", "All runs"))):
                col.page_link(page, label=label, icon=":material/search:",
                              query_params={"run": run} if run else None)
    q = jobs.queue(store)
    if q:
        st.markdown(f"**Queue** ({len(q)})")
        st.dataframe([{"#": r["position"], "run": S.run_label(r), "status": r["status"], "device": r["device"]}
                      for r in q], hide_index=True)
    was = st.session_state.get("_live_was_running", False)
    st.session_state["_live_was_running"] = bool(running or q)
    if was and not (running or q):
        st.rerun()            # the whole page: stop refreshing, show the results


with live_slot:
    if st.session_state.get("active_runs") or jobs.queue(store):
        st.markdown("#### Live")
        # refresh every second only while something is queued or running
        active = bool(jobs.queue(store)) or S.any_active(store, st.session_state.get("active_runs", []))
        st.fragment(live_panel, run_every=1.0 if active else None)()
        st.divider()
