"""Language models: what a distilled LM learnt, token by token -- next-token distributions of the teacher and two
students on the same context (forward KL covers the teacher's modes, reverse KL seeks one), the per-token KL over
a text, samples with their perplexity under the teacher, attention per head, and the training curves."""
import streamlit as st

from explorer.analysis import lm as L
from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.app.analysis import lm_runs
from explorer.app.runs import run_label
from explorer.data.text import tokenizer_of
from explorer.plots import cka_heatmap
from explorer.plots.lm import attention_heads, kl_strip, lm_curves, next_token_bars, show_char

store = W.setup_page("Language models")
st.title("Language models")
st.caption("Runs on a text dataset (pydoc, text-folder): small causal transformers distilled token by token. "
           "Every view is computed from the runs' final models on the CPU.")

runs = lm_runs(store)
if not runs:
    st.info("No finished language-model run yet. On **Train**, pick the preset *Forward vs reverse KL* (about a "
            "minute on a laptop CPU): it trains a student with forward KL and one with reverse KL from the bundled "
            "teacher, and this page compares them.")
    st.page_link(W.TRAIN, label="Go to Train", icon=":material/model_training:")
    st.stop()

by_id = {r["id"]: r for r in runs}
ids = list(by_id)


def _methods(run) -> set:
    return {m["key"] if isinstance(m, dict) else m for m in run["config"].get("methods") or []}


def _default(key: str, fallback: int) -> int:
    hit = [i for i, r in enumerate(runs) if key in _methods(r)]
    return hit[0] if hit else min(fallback, len(ids) - 1)


c1, c2 = st.columns(2)
a = c1.selectbox("Student A (e.g. forward KL)", ids, index=_default("kd", 0), format_func=lambda i: run_label(by_id[i]),
                 key="lm.a")
b = c2.selectbox("Student B (e.g. reverse KL)", ids, index=_default("rkl", 1), format_func=lambda i: run_label(by_id[i]),
                 key="lm.b")
W.figure_runs([by_id[a], by_id[b]])
ma, mb = C.models(str(store.home), a), C.models(str(store.home), b)
teacher = ma["teacher"] or mb["teacher"]
cfg = by_id[a]["config"]
meta = C.dataset_meta(cfg["dataset"], cfg.get("data_root"))
context = int(meta["shape"][0])
label_a = f"A: {'+'.join(sorted(_methods(by_id[a]))) or 'alone'}"
label_b = f"B: {'+'.join(sorted(_methods(by_id[b]))) or 'alone'}"
if label_a == label_b:
    label_a, label_b = f"{label_a} [{a[-6:]}]", f"{label_b} [{b[-6:]}]"
students = {label_a: ma["student"], label_b: mb["student"]}
models = ({"teacher": teacher} if teacher is not None else {}) | students
if teacher is None:
    st.warning("These runs' teacher could not be loaded (a student trained alone, or its file is gone): the views "
               "that compare with the teacher are left out.")


@st.cache_data(max_entries=4, show_spinner=False)
def _test_windows(dataset: str, data_root, n: int = 8):
    """The dataset's tokenizer (its extras: characters, BPE merges) and its first n test windows."""
    from explorer.data import load_dataset
    data = load_dataset(dataset, data_root)
    return {k: data.extras.get(k) for k in ("vocab", "merges")}, data.test.x[:n].clone()


tok_extras, test_ids = _test_windows(cfg["dataset"], cfg.get("data_root"))
tok = tokenizer_of(tok_extras)   # characters, or the run's BPE (a -bpe dataset)
flat_ids = test_ids.reshape(-1)
text = tok.decode(flat_ids)
tabs = st.tabs(["Next-token distributions", "Per-token KL", "Samples", "Attention", "Curves"])

with tabs[0]:
    start = st.slider("Context: test-text position", context, len(text) - 1, min(context * 2, len(text) - 1),
                      key="lm.pos")
    T = st.slider("Temperature", 0.25, 4.0, 1.0, 0.25, key="lm.T",
                  help="softmax(z / T) of every model: T > 1 flattens, T < 1 sharpens")
    ctx_text = st.text_input("Context (edit freely; its last characters are read)", text[start - context:start],
                             key="lm.ctx")
    probs = L.next_token_probs(models, L.encode(tok, ctx_text, context), T)
    st.code(ctx_text[-context:] + "▌", language=None)
    W.chart(next_token_bars(probs, tok.tokens, 12, {n: L.entropy(p) for n, p in probs.items()}), key="lm.bars")
    st.caption("Forward KL (kd at T = 1) pays for every token the teacher finds likely that the student misses, so "
               "the student spreads its mass over all of them (higher entropy); reverse KL pays for mass where the "
               "teacher has little, so the student piles it on the teacher's main modes (lower entropy).")

with tabs[1]:
    if teacher is None:
        st.info("Needs the teacher.")
    else:
        which = st.radio("Student", list(students), horizontal=True, key="lm.klwho")
        k = st.slider("Windows of the test text", 1, 4, 2, key="lm.klw")
        for i in range(k):
            r = L.token_kl(teacher, students[which], test_ids[i:i + 1])
            chars = [tok.tokens[int(j)] for j in flat_ids[i * context + 1:(i + 1) * context + 1]]   # each one predicted
            W.chart(kl_strip(chars, r["kl"], r["differs"], title=f"window {i}: KL(teacher ‖ {which}) · "
                             f"{int(r['differs'].sum())} of {context} top-1 tokens differ"), key=f"lm.kl.{i}")
        st.caption("Each cell is the token (a character, or a BPE subword) to be predicted, coloured by the KL "
                   "between the teacher's and the "
                   "student's next-token distributions at that position.")

with tabs[2]:
    c1, c2, c3 = st.columns(3)
    prompt = c1.text_input("Prompt", "The \"if\" statement", key="lm.prompt")
    n = c2.slider("Tokens", 16, 200, 80, 8, key="lm.n")
    temp = c3.slider("Sampling temperature (0 = greedy)", 0.0, 2.0, 0.8, 0.1, key="lm.st")
    ref = teacher if teacher is not None else students[label_a]
    out = L.samples(models, ref, L.encode(tok, prompt, context), n, temp)
    for name, (cont, ppl) in out.items():
        st.markdown(f"**{name}** · perplexity under the {'teacher' if teacher is not None else label_a}: "
                    f"**{ppl:.2f}**")
        st.code(prompt + tok.decode(cont), language=None)

with tabs[3]:
    span = st.slider("Tokens shown", 8, context, min(24, context), key="lm.attn_n")
    att_ids = test_ids[:1, :span]
    maps = {name: L.attention(m, att_ids).numpy() for name, m in models.items()}
    W.chart(attention_heads(maps, [show_char(tok.tokens[int(j)]) for j in att_ids[0]]), key="lm.attn")
    st.caption("The last block's attention of every head: row = the query position, column = the key it reads "
               "(causal: nothing above the diagonal).")
    if teacher is not None:
        cka_ids = test_ids[:4]
        for name, m in students.items():
            W.chart(cka_heatmap(L.block_cka(teacher, m, cka_ids, name), f"Linear CKA of the block outputs, teacher vs "
                                f"{name} (the {4 * context} tokens of 4 test windows as samples)",
                                "student block", "teacher block"), key=f"lm.cka.{name}")

with tabs[4]:
    metrics = {}
    for rid, label in ((a, label_a), (b, label_b)):
        metrics[label] = store.metrics_df(rid)
    W.chart(lm_curves(metrics), key="lm.curves")
    rows = [{"run": label, "test perplexity": by_id[rid]["summary"].get("test_ppl"),
             "teacher agreement": by_id[rid]["summary"].get("test_agree"),
             "token accuracy": by_id[rid]["summary"].get("test_acc")}
            for rid, label in ((a, label_a), (b, label_b))]
    st.dataframe(rows, hide_index=True)
