"""The Streamlit layer: one module per page, shared resources and the session state helper."""
