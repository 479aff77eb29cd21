"""KD Explorer's entry point (`streamlit run Home.py`): the navigation, declared once. Each page is a file
in pages/ that lays out widgets and figures; the logic it calls lives in explorer/app/."""
import streamlit as st

st.set_page_config(page_title="KD Explorer", page_icon=":material/school:", layout="wide")
st.navigation([
    st.Page("pages/0_Welcome.py", title="Home", icon=":material/school:", default=True),
    st.Page("pages/1_Train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/2_Runs.py", title="Runs", icon=":material/table_rows:"),
    st.Page("pages/3_Attention_maps.py", title="Attention maps", icon=":material/visibility:"),
    st.Page("pages/4_Feature_similarity.py", title="Feature similarity", icon=":material/compare:"),
    st.Page("pages/5_Relation_matrices.py", title="Relation matrices", icon=":material/grid_on:"),
    st.Page("pages/6_Logits_and_calibration.py", title="Logits and calibration", icon=":material/bar_chart:"),
    st.Page("pages/7_Embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("pages/8_Benchmark.py", title="Benchmark", icon=":material/leaderboard:"),
    st.Page("pages/9_Language_models.py", title="Language models", icon=":material/text_fields:"),
]).run()
