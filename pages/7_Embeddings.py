"""Embeddings: the teacher's and the student's penultimate features of the same samples, projected to 2-D
(PCA or t-SNE), side by side and coloured by class."""
import streamlit as st

from explorer.app import cache as C
from explorer.app import widgets as W
from explorer.plots import embedding_scatter

store = W.setup_page("Embeddings")
st.title("Embeddings")
st.caption("Each point is a test image. Tight, separated class clusters mean a feature space a linear "
           "classifier can use; distillation can pull the student's clusters toward the teacher's layout. "
           "The student's projection is rotated onto the teacher's so the panels line up.")

runs, probes, meta, pos = W.pick_analysis(store, "emb", k=16, allow_all=True)
method = st.radio("Projection", ["pca", "tsne"], horizontal=True, key="emb.method",
                  format_func={"pca": "PCA", "tsne": "t-SNE"}.get)
if len(pos) < 3:
    st.warning("A projection needs at least 3 samples; pick more.")
    st.stop()

for run, probe, sub, ref in W.side_by_side(runs, probes, pos):
    df = C.projection(sub, method, (ref, "student"))
    W.chart(embedding_scatter(df, meta["classes"], method={"pca": "PCA", "tsne": "t-SNE"}[method]),
            key=f"emb.{run['id']}")
