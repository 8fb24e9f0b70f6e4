"""ragchat web app: `streamlit run app.py` (or `make run`)."""

import streamlit as st

from rag.errors import RagError
from ui.app import run
from ui.resources import resources

st.set_page_config(page_title="ragchat", page_icon=":material/forum:", layout="wide")
try:
    shared = resources()
except RagError as exc:  # a bad setting or an unreadable index: say so, keep serving
    st.error(str(exc))
    st.stop()
run(shared)
