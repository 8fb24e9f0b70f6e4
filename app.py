"""ragchat: the web pages and the HTTP API in one server, `streamlit run app.py` (`make run`).

Streamlit reads this file in two roles. `streamlit run` finds the `st.App` assigned to `app`
below and serves it with uvicorn, importing this file as the module `app`: that builds the
server, with the FastAPI app mounted under `/api` and a lifespan that starts the shared
service and the job workers. The App then runs this same file as the page script of every
browser session, as `__main__`: that renders the pages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st

from rag.errors import RagError

logger = logging.getLogger("ragchat.app")

if __name__ == "__main__":  # a browser session: the pages
    from rag.errors import AuthenticationError
    from rag.service.components import shared_jobs, shared_service
    from ui.app import run
    from ui.render import show_error
    from ui.resources import Resources
    from ui.signin import account_box, page_caller, refusal, signin_page

    st.set_page_config(page_title="ragchat", page_icon=":material/forum:", layout="wide")
    try:
        service = shared_service()
    except RagError as exc:  # a bad setting or an unreadable index: say so, keep serving
        show_error(exc, None)
        st.stop()
    try:
        caller = page_caller(service)
    except AuthenticationError as exc:  # tampered, expired, disabled: sign in again
        signin_page(service, refusal(exc))
        st.stop()
    except RagError as exc:
        show_error(exc, service.record_error)
        st.stop()
    if caller is None:
        signin_page(service)
        st.stop()
    account_box(service, caller)
    run(Resources(service, shared_jobs, caller))
else:  # the server: imported by uvicorn (through `streamlit run`)
    from starlette.middleware import Middleware

    from rag.api.app import LoopbackOnly, create_api, mount, remote_allowed
    from rag.api.auth import auth_routes, check_proxy_setup, streamlit_secrets
    from rag.service.components import (
        close_shared_service,
        redact_logs,
        shared_jobs,
        shared_service,
    )
    from rag.service.core import RagService

    # ragchat's own log lines (rag.*, ingest.*) go to stderr, with personal data redacted.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "pypdf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact_logs()

    def _warm(service: RagService) -> None:
        try:
            service.warm()
        except RagError as exc:  # reported again, with its message, at the first question
            logger.warning("the model could not be started ahead: %s", exc)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        """Start the shared service (warmed in the background) and the job workers."""
        try:
            service = shared_service()
            shared_jobs()  # its worker threads answer queued batches from now on
        except RagError as exc:  # the pages and the API report it per request
            logger.warning("ragchat cannot start its service: %s", exc)
            yield
            return
        check_proxy_setup(service.settings)  # raised: the server does not start
        threading.Thread(target=_warm, args=(service,), name="warm-up", daemon=True).start()
        try:
            yield
        finally:
            close_shared_service()

    api = create_api(shared_service, shared_jobs)
    app = st.App(
        __file__,
        lifespan=lifespan,
        routes=[mount(api), *auth_routes(shared_service)],
        # With RAG_AUTH=none the pages, like the API, answer this machine only.
        middleware=[Middleware(LoopbackOnly, allow_remote=remote_allowed(shared_service))],
        secrets=streamlit_secrets(),
    )
