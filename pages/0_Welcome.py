"""Home: what knowledge distillation is, one-click experiments, the map of methods and schemes (from the
registries), and a temperature playground on a real teacher's outputs."""
import streamlit as st

from explorer.app import widgets as W
from explorer.app.analysis import playground_logits, taxonomy
from explorer.kd import get_method
from explorer.plots.app_extras import taxonomy_sunburst, temperature_playground
from explorer.presets import DEFAULT_PRESET, list_presets, method_preset, scheme_preset
from explorer.schemes import get_scheme

store = W.setup_page("Home")
st.title("KD Explorer")
st.markdown(
    "**Knowledge distillation** trains a small *student* network to imitate a large *teacher*: besides the "
    "true labels, the student learns from what the teacher knows — its softened outputs (which wrong classes "
    "look alike), its features, or how it relates samples to each other. Here you run it on real data and "
    "look at where the student's knowledge still differs from the teacher's.")

# ---------------------------------------------------------------- one click
presets = list_presets()
default = next(p for p in presets if p["key"] == DEFAULT_PRESET)
st.subheader("Try it: one click")
c1, c2 = st.columns([2, 3])
if c1.button(f"Run: {default['title']}", type="primary", icon=":material/play_arrow:",
             key="preset.run." + default["key"],
             help="digits, the bundled teacher, a 10-epoch student — under a minute on a laptop CPU"):
    W.launch_preset(store, default["key"])
c2.markdown(f"**What to look for:** {default['look_for']}")
with st.expander("More experiments", expanded=False):
    for p in presets:
        if p["key"] == DEFAULT_PRESET:
            continue
        a, b = st.columns([2, 5])
        if a.button(p["title"], icon=":material/play_arrow:", key="preset.run." + p["key"]):
            W.launch_preset(store, p["key"])
        b.markdown(p["look_for"])
    st.caption("The CIFAR-100 benchmark protocol (the CRD recipe; it needs the data and a GPU) runs from the "
               "Benchmark page, beside the published results.")

# ---------------------------------------------------------------- the map
st.subheader("The map: what is transferred, and how")
st.caption("Knowledge types (response, feature, relation) × schemes (offline, online, self) and the algorithms "
           "built on them, as registered in this installation. Pick one to read about it and try it.")
tax = taxonomy()
left, right = st.columns([3, 2])
with left:
    W.chart(taxonomy_sunburst(tax), key="home.map")
with right:
    rows = tax.to_dict("records")
    pick = st.selectbox("Method or scheme", range(len(rows)), key="home.pick",
                        format_func=lambda i: f"{rows[i]['key']} — {rows[i]['name']} ({rows[i]['branch']}: "
                                              f"{rows[i]['category']})")
    row = rows[pick]
    info = (get_method(row["key"]) if row["branch"] == "knowledge" else get_scheme(row["key"])).describe()
    if info.get("paper"):
        st.markdown(f"**{info['name']}** — *{info['paper']}*, {info['authors'].split(',')[0]} et al., "
                    f"{info['venue']} {info['year']}" + (f" · [arXiv:{info['arxiv']}](https://arxiv.org/abs/"
                                                         f"{info['arxiv']})" if info.get("arxiv") else ""))
    if info.get("equation"):
        W.latex(info["equation"])
    if info.get("notes"):
        st.caption(info["notes"])
    if info["hparams"]:
        st.dataframe([{k: (str(v) if k == "default" else v) for k, v in h.items()} for h in info["hparams"]],
                     hide_index=True)
    if row["branch"] == "knowledge":
        W.published_panel(store, row["key"])   # the published figures, cited, beside the user's runs
    config = method_preset(row["key"]) if row["branch"] == "knowledge" else scheme_preset(row["key"])
    if st.button(f"Try {row['key']} on the Train page →", key="home.try"):
        W.open_in_train(config)

# ---------------------------------------------------------------- temperature playground
st.subheader("Temperature playground: dark knowledge")
st.caption("A trained teacher's outputs on real test images. Dividing the logits by a temperature T > 1 "
           "softens the distribution and reveals which wrong classes the teacher finds similar — the "
           "'dark knowledge' a KD student learns from.")
play = playground_logits(store, n=4)
if play is None:
    st.info("No trained teacher yet: run the experiment above and come back.")
else:
    T = st.slider("Temperature T", 0.5, 20.0, 4.0, 0.5, key="home.T")
    st.caption(f"Source: {play['source']}.")
    W.chart(temperature_playground(play["logits"], T, play["y"], play["classes"], play["x"], play["mean"],
                                   play["std"]), key="home.playground")
