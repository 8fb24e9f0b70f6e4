"""The composition root: builds real components from settings for the entry points.

Only the CLI and the Streamlit layer call this module; everything else receives its
collaborators as arguments.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever

from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.embeddings import embedding_dimension, load_embeddings
from rag.llm.client import Endpoint, build_llm, endpoints
from rag.llm.local import LocalLLMServer, bundled_model_path
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from rag.retrieval import CrossEncoderReranker, Fusion, HybridRetriever, Mode
from rag.settings import Settings
from rag.store.faiss import FaissStore

logger = logging.getLogger(__name__)


class LazyEmbeddings(Embeddings):
    """Loads the real model on first use, so commands that only read metadata stay fast.

    Queries and documents may run on two loadings of the same model (see
    ``rag.embeddings.load_embeddings``): a search never waits for the bulk model.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model: Embeddings | None = None
        self._query_model: Embeddings | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Embeddings:
        """The loaded embedding model for documents."""
        with self._lock:
            if self._model is None:
                self._model = load_embeddings(self._settings)
            return self._model

    @property
    def query_model(self) -> Embeddings:
        """The loaded embedding model for queries."""
        with self._lock:
            if self._query_model is None:
                self._query_model = load_embeddings(self._settings, for_queries=True)
            return self._query_model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a batch of texts."""
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.query_model.embed_query(text)


def build_store(settings: Settings, embeddings: Embeddings | None = None) -> FaissStore:
    """The index named by the settings, with the configured embedding model."""
    model_path = settings.embedding_model_path()
    return FaissStore(
        settings.resolved_index_dir,
        embeddings or LazyEmbeddings(settings),
        model_id=settings.embedding_model,
        dimension=embedding_dimension(model_path),
        lock_timeout_s=settings.lock_timeout_s,
    )


def build_local_server(settings: Settings, port: int | None = None) -> LocalLLMServer:
    """The bundled model's server as the settings describe it (not started)."""
    return LocalLLMServer(
        bundled_model_path(),
        port=port,
        n_ctx=settings.llm_context_window,
        threads=settings.local_llm_threads,
    )


def start_local_server(settings: Settings, *, warm: bool = True) -> LocalLLMServer:
    """Start the bundled model's server and (by default) warm it with one tiny completion.

    The warm-up loads the weights into memory and runs the model once, before any question's
    clock starts; the server is stopped again if it fails.
    """
    server = build_local_server(settings)
    server.start()
    if warm:
        try:
            server.warm(settings.llm_timeout_s)
        except BaseException:
            server.stop()
            raise
    return server


def local_endpoints(settings: Settings, server: LocalLLMServer) -> list[Endpoint]:
    """The endpoints answering through a running bundled server (restarted if it dies)."""
    return endpoints(settings, server.base_url, local_server=server)


@contextlib.contextmanager
def llm_endpoints(settings: Settings, *, warm: bool = True) -> Iterator[list[Endpoint]]:
    """The configured endpoints; without one, the bundled model served on 127.0.0.1.

    The bundled model is warmed before the endpoints are handed out (``warm``), and
    started again by the client if its process dies meanwhile.
    """
    if not settings.uses_local_llm:
        yield endpoints(settings)
        return
    server = start_local_server(settings, warm=warm)
    try:
        yield local_endpoints(settings, server)
    finally:
        server.stop()


def build_retriever(
    settings: Settings,
    store: FaissStore,
    mode: str | None = None,
    k: int | None = None,
    *,
    unfiltered: bool = False,
) -> HybridRetriever:
    """The retriever the settings describe (``mode`` and ``k`` override them).

    ``unfiltered`` drops the relevance threshold and gap: for probes and evaluation,
    which rank everything rather than decide whether to abstain.
    """
    if unfiltered:
        settings = settings.model_copy(update={"min_relevance": 0.0, "relevance_gap": 1.0})
    from rag.errors import ConfigError

    reranker = None
    if settings.reranker_path is not None:
        if not (settings.reranker_path / "config.json").is_file():
            raise ConfigError("RAG_RERANKER_PATH", f"{settings.reranker_path} is no model folder")
        reranker = CrossEncoderReranker(str(settings.reranker_path))
    return HybridRetriever(
        store=store,
        mode=Mode(mode or settings.retrieval_mode),
        k=k or settings.retrieval_k,
        fusion=Fusion(settings.fusion),
        fusion_depth=settings.fusion_depth,
        rrf_k=settings.rrf_k,
        vector_weight=settings.vector_weight,
        keyword_weight=settings.keyword_weight,
        min_relevance=settings.min_relevance,
        relevance_gap=settings.relevance_gap,
        mmr_lambda=settings.mmr_lambda,
        max_chunks_per_page=settings.max_chunks_per_page,
        reranker=reranker,
    )


def build_engine(
    settings: Settings,
    store: FaissStore,
    endpoints_: list[Endpoint],
    memory: ConversationStore | None = None,
) -> ChatEngine:
    """The chat engine over a store, answering through the given endpoints."""
    return build_engine_over(settings, build_retriever(settings, store), endpoints_, memory)


def build_engine_over(
    settings: Settings,
    retriever: BaseRetriever,
    endpoints_: list[Endpoint],
    memory: ConversationStore | None = None,
) -> ChatEngine:
    """The chat engine over any retriever: the resilient model, the chain, the time limit."""
    prompts = load_prompts(settings.prompts_dir)
    chain = build_chain(
        build_llm(endpoints_, settings), retriever, prompts, ChainConfig.from_settings(settings)
    )
    return ChatEngine(
        chain, prompts, endpoints=endpoints_, memory=memory, timeout_s=settings.llm_timeout_s
    )
