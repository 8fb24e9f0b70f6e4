"""The web app over fakes, for streamlit.testing.v1.AppTest (no model, no network).

RAGCHAT_TEST_DIR names a folder for the index and conversations; RAGCHAT_TEST_MODE is
"ok" (a fake model answers), "cached" (with the response cache) or "down" (the
endpoint fails); RAGCHAT_TEST_PAGE picks the
page shown first.
"""

import os

import streamlit as st

from tests.ui_fakes import fake_resources
from ui.app import run

st.set_page_config(page_title="ragchat", layout="wide")
run(
    fake_resources(os.environ["RAGCHAT_TEST_DIR"], os.environ.get("RAGCHAT_TEST_MODE", "ok")),
    default=os.environ.get("RAGCHAT_TEST_PAGE", "chat"),
)
