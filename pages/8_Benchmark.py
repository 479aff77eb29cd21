"""Benchmark: the published CIFAR-100 results (each with its source and protocol) beside the user's runs of
the same method, pair and dataset, and the CIFAR-100 benchmark protocol (the CRD recipe) to run them."""
import streamlit as st

from explorer.app import widgets as W
from explorer.app.benchmark import benchmark_table
from explorer.app.roots import check_data_root
from explorer.bench import protocol as P
from explorer.errors import ConfigError
from explorer.presets import get_preset

store = W.setup_page("Benchmark")
st.title("Benchmark: published results beside yours")
r = P.recipe()
st.caption(f"CIFAR-100 top-1 accuracy (%). The published figures were measured under the CRD protocol: "
           f"{r['epochs']} epochs, batch {r['batch_size']}, SGD lr {r['lr']} ({P.SMALL_LR} for MobileNetV2/"
           f"ShuffleNets) ×0.1 at 150/180/210, weight decay {r['weight_decay']}. *Yours* are your finished runs "
           "of the same method, variant and pair on cifar100; *yours, CRD protocol* only those that used that "
           "recipe on the full training set. Compare like with like: a source's *reported* column says whether "
           "it is the last epoch or not stated.")

table = benchmark_table(store)
pairs = sorted({f"{t}→{s}" for t, s in zip(table["teacher"], table["student"])})
pick = st.multiselect("Pairs", pairs, default=pairs, key="bench.pairs")
shown = table[[f"{t}→{s}" in pick for t, s in zip(table["teacher"], table["student"])]]
st.dataframe(shown, hide_index=True, key="bench.table",
             column_config={"url": st.column_config.LinkColumn("code"),
                            "published (%)": st.column_config.NumberColumn(format="%.2f")})
st.markdown("**Sources**\n\n" + "\n".join(f"- {s} — <{u}>" for s, u in
                                            dict(zip(table["source"], table["url"])).items()))
st.caption("resnet56→resnet20 is part of the protocol, but no figure for it is on file with a citable source yet; "
           "NKD and WTTM figures (and CAT-KD on wrn_40_2→wrn_16_2) are left out until read from the papers' tables.")

# ---------------------------------------------------------------- run the protocol
st.subheader("Run the CIFAR-100 benchmark protocol")
preset = get_preset("cifar100-protocol")
st.markdown(f"**{preset['title']}** — {preset['look_for']} Each method runs with its official "
            "hyperparameters; the teacher is trained once by the same recipe and reused.")
c1, c2, c3 = st.columns(3)
pair = c1.selectbox("Pair", P.PAIRS, key="bench.pair")
method = c2.selectbox("Method", [m for m in P.methods() if m != "teacher"], key="bench.method",
                      index=[m for m in P.methods() if m != "teacher"].index("kd"))
root = c3.text_input("CIFAR-100 folder", key="bench.data_root",
                     help="`kd-explorer download cifar100 FOLDER` once; the app reads only allowed folders")
st.caption(f"From the command line: `kd-explorer bench protocol --pair {pair} --method {method} "
           f"--data-root {root or 'FOLDER'} --print-config`")
if st.button("Run the protocol (and the student alone)", icon=":material/play_arrow:", key="bench.run",
             disabled=not root.strip()):
    try:
        check_data_root(root.strip(), P.DATASET)
        if (pair, method) == ("resnet32x4:resnet8x4", "kd"):
            W.launch_preset(store, "cifar100-protocol", root.strip())
        else:
            configs = [P.config(pair, method, root.strip()), P.config(pair, "none", root.strip())]
            W.launch(store, configs if method != "none" else configs[:1])
            st.session_state["train_prefill"] = configs[0]
            st.switch_page(W.TRAIN)
    except (ConfigError, ValueError) as e:
        st.error(f"Not started: {e}")
