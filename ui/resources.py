"""Shared heavy objects, built once per server process and shared by all sessions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from rag.access.principal import LOCAL, Principal
from rag.chain import ChatEngine
from rag.memory import ConversationStore
from rag.service.components import shared_jobs, shared_service
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore

logger = logging.getLogger(__name__)


@dataclass
class Resources:
    """What the pages need; tests build one from fakes."""

    settings: Settings
    store: FaissStore
    memory: ConversationStore
    engine: Callable[[], ChatEngine]
    # The server's job service (rag.service.jobs.JobService): uploads, re-indexing and
    # batch runs are jobs on it. None where there is none.
    jobs: Callable[[], Any] | None = None
    # Who uses the pages, and the collections that caller may read (None: all).
    caller: Principal = LOCAL
    within: frozenset[str] | None = frozenset()

    @property
    def uploads_dir(self) -> Path:
        """Where uploads are kept."""
        return self.settings.uploads_dir


def _service() -> RagService:
    """The server process's one service, shared with the HTTP API (built on first use)."""
    return shared_service()


def _engine() -> ChatEngine:
    with st.spinner("Loading the models…"):
        return _service().engine(conversations=True)


def resources() -> Resources:
    """The real resources: the shared service's parts.

    The server's lifespan (``app.py``) has started warming the models already.
    """
    service = _service()
    caller = service.access.local()  # RAG_AUTH=none; other modes stop in app.py first
    return Resources(
        settings=service.settings,
        store=service.store,
        memory=service.memory,
        engine=_engine,
        jobs=shared_jobs,
        caller=caller,
        within=service.scope(caller).collections,
    )
