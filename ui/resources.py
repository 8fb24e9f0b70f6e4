"""Shared heavy objects, built once per server process and shared by all sessions."""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ingest.chunking import HFTokenizer, TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.chain import ChatEngine
from rag.components import build_engine, build_local_server, build_store
from rag.llm import endpoints
from rag.local_llm import LocalLLMServer
from rag.memory import ConversationStore
from rag.settings import Settings, load_settings
from rag.store import FaissStore


@dataclass
class Resources:
    """What the pages need; tests build one from fakes."""

    settings: Settings
    store: FaissStore
    memory: ConversationStore
    engine: Callable[[], ChatEngine]
    pipeline: Callable[[Progress], IngestPipeline]

    @property
    def uploads_dir(self) -> Path:
        """Where uploads are kept."""
        return self.settings.uploads_dir


@st.cache_resource(show_spinner=False)
def _settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner=False)
def _store() -> FaissStore:
    return build_store(_settings())


@st.cache_resource(show_spinner=False)
def _memory() -> ConversationStore:
    return ConversationStore(_settings().resolved_conversations_path)


@st.cache_resource(show_spinner="Starting the local model…")
def _local_server() -> LocalLLMServer:
    server = build_local_server(_settings())
    server.start()
    atexit.register(server.stop)
    return server


@st.cache_resource(show_spinner="Loading the models…")
def _engine() -> ChatEngine:
    settings = _settings()
    local_url = _local_server().base_url if settings.uses_local_llm else None
    store = _store()
    store.embeddings.embed_query("warm up")
    return build_engine(settings, store, endpoints(settings, local_url), _memory())


@st.cache_resource(show_spinner=False)
def _chunker() -> TokenChunker:
    settings = _settings()
    tokenizer = HFTokenizer(settings.embedding_model_path())
    return TokenChunker(tokenizer, settings.chunk_size, settings.chunk_overlap)


def _pipeline(progress: Progress) -> IngestPipeline:
    store = _store()
    return IngestPipeline(
        store,
        store.embeddings,
        _chunker(),
        batch_size=_settings().embedding_batch_size,
        progress=progress,
    )


def resources() -> Resources:
    """The real resources, from the environment's settings."""
    return Resources(
        settings=_settings(),
        store=_store(),
        memory=_memory(),
        engine=_engine,
        pipeline=_pipeline,
    )
