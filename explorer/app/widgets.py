"""Streamlit pieces every page shares: page setup, widgets generated from specs (RunConfig's FIELD_SPECS,
methods' and schemes' HParams: label, help, bounds and choices are never written in a page), the run /
epoch / sample pickers of the analysis pages, and launching runs. The logic they call has no Streamlit."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from ..config import FIELD_SPECS, WEIGHT
from ..spec import HParam
from ..store import Store, default_home
from . import cache as C
from .analysis import SAMPLE_MODES, analysis_runs, lm_runs, nearest, reference_name, sample_positions, subset
from .form import K, find_same_run
from .runs import run_label

KEEP = "session"   # widget values survive a visit to another page
TRAIN = "pages/1_Train.py"


# an equation still wider than its column (a narrow window) scrolls sideways instead of being cut off
EQUATION_CSS = "<style>.katex-display{overflow-x:auto;overflow-y:hidden;max-width:100%}</style>"


def latex(tex: str) -> None:
    """st.latex of a method's or scheme's equation, long ones on several lines (explorer/app/equations.py)."""
    from .equations import split_equation
    st.latex(split_equation(tex))


def setup_page(title: str) -> Store:
    st.set_page_config(page_title=f"{title} · KD Explorer", page_icon=":material/school:", layout="wide")
    st.markdown(EQUATION_CSS, unsafe_allow_html=True)
    store = C.store(str(default_home()))
    st.session_state[_EXPORTS] = {"figures": {}, "runs": {}}   # this page run's figures, for the zip
    figures_zip_button()
    interrupted = C.recovered(str(store.home))
    if interrupted and not st.session_state.get("_told_interrupted"):
        st.session_state["_told_interrupted"] = True
        st.toast(f"{len(interrupted)} run(s) were interrupted while the app was down; resume them on the Runs page.")
    return store


def chart(fig, key: str | None = None, downloads: bool = True) -> None:
    """A figure, with its downloads (standalone HTML; PNG where kaleido and a browser are on the server) and
    its place in the page's zip (the sidebar's "All figures")."""
    st.plotly_chart(fig, key=key, config={"displaylogo": False})
    page = _page_exports()
    name = key or f"figure{len(page['figures']) + 1}"
    page["figures"][name] = fig
    if not downloads:
        return
    from . import export as X
    try:
        cols = st.columns([1, 1, 6])
    except st.errors.StreamlitAPIException:   # already two columns deep: one under the other
        cols = [st, st]
    cols[0].download_button("HTML", lambda: X.figure_html(fig, page["runs"]), file_name=f"{X.safe_name(name)}.html",
                            mime="text/html", key=f"{name}.dl_html", on_click="ignore", icon=":material/download:",
                            help="this figure as one HTML file that opens offline (zoom, hover), with the runs' configs")
    why = X.png_missing()
    png = (lambda: X.figure_png(fig, page["runs"])) if why is None else b""
    cols[1].download_button("PNG", png, file_name=f"{X.safe_name(name)}.png",
                            mime="image/png", key=f"{name}.dl_png", on_click="ignore", icon=":material/image:",
                            disabled=why is not None, help=why or "this figure as a PNG image, the runs' configs "
                                                                  "in its metadata (key kd-explorer-config)")


_EXPORTS = "_page_exports"


def _page_exports() -> dict:
    """This page run's figures and the runs they show (for the sidebar zip); set up by setup_page."""
    return st.session_state.setdefault(_EXPORTS, {"figures": {}, "runs": {}})


def figure_runs(runs) -> None:
    """The runs the page's figures show: their configs go into the page's zip."""
    _page_exports()["runs"].update({r["id"]: r for r in runs})


def figures_zip_button() -> None:
    """The sidebar's download of every figure of this page (HTML, PNG where it runs) with the runs' configs.
    The zip is built when clicked, from the figures this page run drew."""
    from . import export as X
    page = _page_exports()
    st.sidebar.download_button("All figures of this page (zip)", lambda: X.figures_zip(page["figures"], page["runs"]),
                               file_name="kd-explorer-figures.zip", mime="application/zip", key="_figures_zip",
                               on_click="ignore", icon=":material/folder_zip:",
                               help="each figure as HTML" + (" and PNG" if X.png_missing() is None else
                                                              f" ({X.png_missing()})") +
                                    ", with the config of each run shown")


# ---------------------------------------------------------------------- widgets from specs
def _help(h: HParam, note: str = "") -> str | None:
    rng = h.range_text() if h.kind in ("int", "float", "str", "auto_number") else ""
    return " · ".join(p for p in (h.help, rng, note) if p) or None


def hparam_widget(h: HParam | dict, key: str) -> Any:
    """One widget for a method's or scheme's hyperparameter: its default is shown in the label, the help
    text (and range) as the tooltip, the range enforced; the value survives page switches."""
    if isinstance(h, dict):   # a describe() entry
        h = HParam(h["name"], h["default"], h.get("low"), h.get("high"), h.get("help") or "",
                   choices=tuple(h["choices"]) if h.get("choices") else None)
    d = h.default
    label = f"{h.name} (default {d!r})" if isinstance(d, str) else f"{h.name} (default {d})" \
        if isinstance(d, bool) else f"{h.name} (default {d:g})"
    if key not in st.session_state:
        st.session_state[key] = d
    return _widget(st, h, label, key, _help(h))


def weight_widget(method_key: str, default: float) -> Any:
    """The run weight of a method (RunConfig's WEIGHT spec, with the method's own default)."""
    return hparam_widget(replace(WEIGHT, default=float(default)), f"{K}w.{method_key}")


def field_widget(name: str, where=None, options=None, note: str = "", multi: bool = False, **kw) -> Any:
    """The Train form's widget for RunConfig field `name` (key "train.<name>"): label, help and range or
    choices from FIELD_SPECS[name]; `options` for fields whose values come from a registry; `note` adds
    what only the page knows (the dataset's recipe) to the help."""
    h = FIELD_SPECS[name]
    label = kw.pop("label", None) or h.label or name
    return _widget(where or st, h, label, kw.pop("key", K + name), _help(h, note), options, multi, **kw)


def _widget(where, h: HParam, label: str, key: str, help_: str | None, options=None, multi=False, **kw) -> Any:
    """The widget, and under it the slot its error goes to (show_field_error). Numbers get no min/max in
    the widget: a browser keeps an out-of-range value to itself (the box turns red, the server keeps the
    old value), so the range is in the help and checked with the whole form (form.check_form)."""
    kw = dict(key=key, help=help_, persist_state=KEEP, **kw)
    if multi:
        value = where.multiselect(label, list(options), **kw)
    elif options is not None or h.choices:
        value = where.selectbox(label, list(options if options is not None else h.choices), **kw)
    elif h.kind == "bool":
        value = where.checkbox(label, **kw)
    elif h.kind == "int":
        value = where.number_input(label, step=1, **kw)
    elif h.kind == "float":
        value = where.number_input(label, format="%g", **kw)
    else:
        value = where.text_input(label, max_chars=h.max_len, **kw)
    error_slot(key, where)
    return value


# ---------------------------------------------------------------------- errors beside their fields
_SLOTS = "_field_error_slots"


def begin_form() -> None:
    """At the top of a form page: forget the previous run's error slots."""
    st.session_state[_SLOTS] = {}


def error_slot(key: str, where=None) -> None:
    """An empty place under the widget `key` where its error is shown (show_field_error)."""
    st.session_state.setdefault(_SLOTS, {})[key] = (where or st).empty()


def show_field_error(key: str | None, message: str) -> bool:
    """Show `message` under the widget `key`; False when that widget is not on the page this run."""
    slot = st.session_state.get(_SLOTS, {}).get(key) if key else None
    if slot is None:
        return False
    slot.error(message, icon=":material/error:")
    return True


# ---------------------------------------------------------------------- analysis pages
def pick_runs(store: Store, page: str) -> list[dict]:
    """The run to analyse (shared across pages via session state), optionally a second side by side.
    Stops the page with a hint when no run has probes yet."""
    runs = analysis_runs(store)
    text_runs = lm_runs(store)   # language models: not this page's (image) views
    if text_runs:
        st.info(f"{len(text_runs)} language-model run(s) on text data are not listed here: this page's views are "
                "for images. See the **Language models** page for them.")
    if not runs:
        st.info("No finished run with probes yet. Start one on the **Train** page (one click on Home: "
                "*KD vs student alone*); its figures appear here when it completes.")
        st.page_link(TRAIN, label="Go to Train", icon=":material/model_training:")
        st.stop()
    by_id = {r["id"]: r for r in runs}
    ids = list(by_id)
    want = st.query_params.get("run") or st.session_state.get("analysis_run")
    c1, c2, c3 = st.columns([3, 1, 3])
    first = c1.selectbox("Run", ids, index=ids.index(want) if want in by_id else 0,
                         format_func=lambda i: run_label(by_id[i]), key=f"{page}.run",
                         help="finished runs that recorded probes, newest first")
    st.session_state["analysis_run"] = first
    chosen = [by_id[first]]
    figure_runs(chosen)
    if len(ids) > 1 and c2.checkbox("compare", key=f"{page}.compare", help="show a second run side by side"):
        rest = [i for i in ids if i != first]
        want2 = st.session_state.get("analysis_run2")
        second = c3.selectbox("Second run", rest, index=rest.index(want2) if want2 in rest else 0,
                              format_func=lambda i: run_label(by_id[i]), key=f"{page}.run2")
        st.session_state["analysis_run2"] = second
        chosen.append(by_id[second])
        figure_runs(chosen)
    return chosen


def pick_probes(runs: list[dict], page: str) -> list[dict]:
    """One probe per run at the chosen epoch (the nearest recorded one for a second run)."""
    from ..analysis.probes import list_probes
    found = [dict(list_probes(r["run_dir"])) for r in runs]
    epochs = sorted(found[0])
    epoch = epochs[0] if len(epochs) == 1 else st.select_slider(
        "Epoch (recorded probes)", epochs, value=epochs[-1], key=f"{page}.epoch",
        help="0 = before training; the last one is the trained model")
    return [C.probe(f[nearest(sorted(f), epoch)]) for f in found]


def pick_analysis(store: Store, page: str, k: int = 4, allow_all: bool = False):
    """What every analysis page starts with: the run(s), their probes at the chosen epoch, the dataset's
    metadata and the probe rows to show. Returns (runs, probes, meta, positions)."""
    runs = pick_runs(store, page)
    probes = pick_probes(runs, page)
    meta = C.dataset_meta(runs[0]["config"]["dataset"], runs[0]["config"].get("data_root"))
    return runs, probes, meta, pick_samples(probes[0], meta["classes"], page, k=k, allow_all=allow_all)


def side_by_side(runs: list[dict], probes: list[dict], positions, detail=None):
    """One column per run: yields (run, its probe, the probe restricted to the picked rows, the reference name)
    inside that column, under a header naming the run, the epoch and `detail(run, probe, sub, ref)`
    (by default the number of picked samples)."""
    for col, run, probe in zip(st.columns(len(runs)), runs, probes):
        with col:
            sub = subset(probe, [p for p in positions if p < len(probe["y"])])
            ref = reference_name(run)
            info = detail(run, probe, sub, ref) if detail else f"{len(sub['y'])} samples"
            st.markdown(f"**{run_label(run)}** · epoch {probe['epoch']} · {info}")
            yield run, probe, sub, ref


PROBE_HELP = ("Probe samples: {n} test images fixed when the run started, whose features, attention maps and "
              "logits the run saved at every epoch (before training too), so any epoch can be shown without "
              "the model. Whole-test-split figures (calibration on the Logits page) say so where they are shown.")


def pick_samples(probe: dict, classes: list[str], page: str, k: int = 4, allow_all: bool = False):
    """Rows of the probe to show: by index, by class, where teacher and student disagree most (or all)."""
    modes = (["all"] if allow_all else []) + ["disagree", "class", "index"]
    c1, c2 = st.columns([2, 3])
    n = len(probe["y"])
    mode = c1.radio("Samples", modes, format_func=SAMPLE_MODES.get, key=f"{page}.mode", horizontal=True,
                    help=PROBE_HELP.format(n=n))
    c1.caption(f"From the run's {n} *probe samples*: the same fixed test images, recorded at every epoch.")
    value = None
    if mode == "class":
        value = c2.selectbox("Class", range(len(classes)), format_func=lambda i: classes[i], key=f"{page}.class")
    elif mode == "index":
        y = probe["y"].tolist()
        value = c2.multiselect(f"Probe samples (0–{n - 1}, test-set order)", list(range(n)),
                               default=list(range(min(k, n))), max_selections=max(k, 1) if not allow_all else None,
                               format_func=lambda i: f"#{i} · {classes[y[i]] if y[i] < len(classes) else y[i]}",
                               key=f"{page}.index")
    elif mode == "disagree":
        k = int(c2.number_input("How many", 1, n, value=min(k, n), key=f"{page}.k"))
    pos = sample_positions(probe, mode, value, k)
    if len(pos) == 0:
        st.warning("No samples match; pick another class or some indices.")
        st.stop()
    return pos


# ---------------------------------------------------------------------- launching runs
def launch(store: Store, configs: list[dict]) -> list[str]:
    """Queue the first config; comparison configs identical to a completed run reuse it instead.
    The ids become the Train page's live runs."""
    from ..jobs import submit
    ids = []
    for i, cfg in enumerate(configs):
        same = find_same_run(store, cfg) if i else None
        ids.append(same["id"] if same else submit(cfg, store))
    st.session_state["active_runs"] = ids
    return ids


def launch_preset(store: Store, key: str, data_root: str | None = None) -> None:
    """One click: queue the preset (and its comparison), then watch it on the Train page. data_root: the
    folder of a preset that needs one (checked against the app's allow-list by the caller)."""
    from ..presets import preset_configs
    configs = preset_configs(key, data_root)
    launch(store, configs)
    st.session_state["train_prefill"] = configs[0]
    st.switch_page(TRAIN)


def open_in_train(config: dict) -> None:
    st.session_state["train_prefill"] = config
    st.switch_page(TRAIN)


def published_panel(store: Store, method: str) -> None:
    """A method panel's published figures (each with its source; explorer/published.py) beside the user's
    own runs of the method (Home's map, the Train page's method expanders)."""
    from .benchmark import method_panel
    panel = method_panel(store, method)
    if not panel["published"] and not panel["yours"]:
        return
    st.caption("  \n".join(panel["published"] + (panel["yours"] or ["yours: no finished run of this method yet"]))
               + ("  \nAll published figures: the Benchmark page." if panel["published"] else ""))
