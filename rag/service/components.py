"""The composition root: builds real components from settings for the entry points.

Only the CLI and the Streamlit layer call this module; everything else receives its
collaborators as arguments.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import LanguageModelInput
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable

from rag.cache import build_cache
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.embeddings import embedding_dimension, embedding_model_id, load_embeddings
from rag.guard.model import LazyDetector, PiiGuard, is_local_url
from rag.guard.moderation import Moderator, build_moderator
from rag.guard.pii import LogDetector, PiiDetector, RedactingFilter
from rag.guard.scan import ChunkScanner
from rag.llm.client import Endpoint, build_llm, endpoints
from rag.llm.local import LocalLLMServer, bundled_model_path
from rag.llm.router import Tiering
from rag.memory import ConversationStore
from rag.observe.metrics import Metrics
from rag.observe.prices import parse_prices
from rag.observe.usage import UsageLog
from rag.prompts import load_prompts
from rag.retrieval import CrossEncoderReranker, Fusion, HybridRetriever, Mode
from rag.service.core import Models, RagService
from rag.settings import Settings
from rag.store.base import Store
from rag.store.faiss import FaissStore

if TYPE_CHECKING:
    from ingest.pipeline import IngestPipeline, Progress
    from ingest.sandbox import ParserSandbox
    from rag.service.access import AccessService
    from rag.service.jobs import JobService

logger = logging.getLogger(__name__)


class LazyEmbeddings(Embeddings):
    """Loads the real model on first use, so commands that only read metadata stay fast.

    Queries and documents may run on two loadings of the same model (see
    ``rag.embeddings.load_embeddings``): a search never waits for the bulk model.

    The last ``RECENT_QUERIES`` query embeddings are kept: a first question is embedded
    by the response cache and then by retrieval, the same text twice in a row.
    """

    RECENT_QUERIES = 64

    def __init__(
        self, settings: Settings, load: Callable[..., Embeddings] = load_embeddings
    ) -> None:
        self._settings = settings
        self._load = load  # rag.embeddings.load_embeddings (tests pass a fake)
        self._model: Embeddings | None = None
        self._query_model: Embeddings | None = None
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def model(self) -> Embeddings:
        """The loaded embedding model for documents."""
        with self._lock:
            if self._model is None:
                self._model = self._load(self._settings)
            return self._model

    @property
    def query_model(self) -> Embeddings:
        """The loaded embedding model for queries."""
        with self._lock:
            if self._query_model is None:
                self._query_model = self._load(self._settings, for_queries=True)
            return self._query_model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a batch of texts."""
        return self.model.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (a text embedded moments ago comes from the recent ones)."""
        with self._lock:
            if text in self._recent:
                self._recent.move_to_end(text)
                return list(self._recent[text])
        vector = self.query_model.embed_query(text)
        with self._lock:
            self._recent[text] = list(vector)
            if len(self._recent) > self.RECENT_QUERIES:
                self._recent.popitem(last=False)
        return vector


def build_store(settings: Settings, embeddings: Embeddings | None = None) -> Store:
    """The index named by the settings, with the configured embedding model.

    Postgres when RAG_STORE_URL is set (shared by several machines), else the folder.
    """
    common: dict[str, Any] = {
        "model_id": embedding_model_id(settings),
        "dimension": embedding_dimension(settings.embedding_model_path()),
        "lock_timeout_s": settings.lock_timeout_s,
        "scanner": ChunkScanner(shared_detector()),
    }
    if settings.store_url:
        from rag.store.postgres import PostgresStore

        return PostgresStore(settings.store_url, embeddings or LazyEmbeddings(settings), **common)
    return FaissStore(settings.resolved_index_dir, embeddings or LazyEmbeddings(settings), **common)


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
    store: Store,
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
        quarantine=settings.quarantine,
    )


def build_engine(
    settings: Settings,
    store: Store,
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
    *,
    moderator: Callable[[], Moderator | None] | None = None,
) -> ChatEngine:
    """The chat engine over any retriever: the resilient model, the chain, the guardrails.

    ``moderator`` gives the moderator to share (a service's engines share one: one
    blocklist read, one HTTP client); by default the engine builds its own.
    """
    prompts = load_prompts(settings.prompts_dir)
    config = ChainConfig.from_settings(settings)
    llm: Runnable[LanguageModelInput, Any] = build_llm(endpoints_, settings)
    pii = pii_guard(settings, endpoints_, llm)
    chain = build_chain(pii or llm, retriever, prompts, config)
    return ChatEngine(
        chain,
        prompts,
        endpoints=endpoints_,
        memory=memory,
        timeout_s=settings.llm_timeout_s,
        fence=config.fence,
        pii=pii,
        moderator=moderator() if moderator is not None else shared_moderator(settings)(),
        tiering=Tiering.from_settings(settings),
    )


def shared_moderator(settings: Settings) -> Callable[[], Moderator | None]:
    """The moderator the settings ask for, built at the first call and then reused."""
    lock = threading.Lock()
    built: list[Moderator | None] = []

    def get() -> Moderator | None:
        with lock:
            if not built:
                built.append(build_moderator(settings, moderation_mask(settings)))
            return built[0]

    return get


def moderation_mask(settings: Settings) -> Callable[[str], str] | None:
    """Masks personal data for the moderation endpoint when RAG_PII guards it as remote."""
    url = settings.moderation_url
    if settings.pii == "off" or not url:
        return None
    if settings.pii_endpoints == "remote" and is_local_url(url):
        return None
    detector = shared_detector()

    def mask(text: str) -> str:
        from rag.guard.pii import Masker

        return Masker(detector.get()).mask(text)

    return mask


def pii_guard(
    settings: Settings, endpoints_: list[Endpoint], llm: Runnable[LanguageModelInput, Any]
) -> PiiGuard | None:
    """The PII guard around ``llm`` when RAG_PII asks for one and an endpoint is remote.

    The bundled model and endpoints on this machine see the text as it is (unless
    RAG_PII_ENDPOINTS=all); so does every endpoint with RAG_PII=off. One guarded endpoint
    (the fallback too) guards them all.
    """
    guarded = [
        e.label
        for e in endpoints_
        if settings.pii_endpoints == "all" or (e.server is None and not is_local_url(e.base_url))
    ]
    if settings.pii == "off" or not guarded:
        return None
    how = "masked" if settings.pii == "mask" else "blocked"
    logger.info("personal data is %s for %s", how, ", ".join(guarded))
    return PiiGuard(llm, shared_detector(), settings.pii)


_DETECTOR = LazyDetector(PiiDetector)


def shared_detector() -> LazyDetector:
    """The process's PII detector, built on first use (its recognisers are read-only)."""
    return _DETECTOR


def redact_logs() -> None:
    """Redact personal data from every record the root logger's handlers write.

    Called by entry points once they have configured logging. Log lines are redacted with
    fast patterns (``LogDetector``), so no process waits for Presidio to log a line.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(LogDetector()))


class ConfiguredModels:
    """The configured endpoints; without one, the bundled model, started at first need.

    The bundled model is started and warmed once, by the first caller (others wait), and
    stopped by ``close``; its client restarts it if its process dies meanwhile.
    """

    def __init__(self, settings: Settings, *, warm: bool = True) -> None:
        self._settings = settings
        self._warm = warm
        self._server: LocalLLMServer | None = None
        self._endpoints: list[Endpoint] | None = None
        self._lock = threading.Lock()

    def endpoints(self) -> list[Endpoint]:
        """The endpoints to answer through (starts the bundled model the first time)."""
        with self._lock:
            if self._endpoints is None:
                if self._settings.uses_local_llm:
                    self._server = start_local_server(self._settings, warm=self._warm)
                    self._endpoints = local_endpoints(self._settings, self._server)
                else:
                    self._endpoints = endpoints(self._settings)
            return self._endpoints

    def known(self) -> list[Endpoint]:
        """The endpoints made so far (none before the first question); starts nothing."""
        with self._lock:
            return list(self._endpoints or [])

    def health(self) -> dict[str, int]:
        """1 for each endpoint requests may go to, 0 for one taken out (circuit open)."""
        return {f"{e.label} ({e.tier})": int(e.state.up) for e in self.known()}

    def check(self) -> str | None:
        """Why no answer could be had now; None when the first endpoint answers."""
        import httpx

        if self._settings.uses_local_llm:
            if self._server is None:
                return None  # started at the first question
            url = self._server.base_url
        else:
            url = str(self._settings.llm_base_url).rstrip("/")
        try:
            response = httpx.get(f"{url}/models", timeout=5.0)
        except httpx.HTTPError as exc:
            return f"the model endpoint {url} is unreachable: {type(exc).__name__}"
        if response.status_code >= 500:
            return f"the model endpoint {url} answered HTTP {response.status_code}"
        return None

    def close(self) -> None:
        """Stop the bundled model if this started it."""
        with self._lock:
            if self._server is not None:
                self._server.stop()
            self._server = None
            self._endpoints = None


def build_pipeline(
    settings: Settings,
    store: Store,
    progress: Progress,
    *,
    sandbox: ParserSandbox | None,
    release_generation: bool = False,
) -> IngestPipeline:
    """An ingestion pipeline into ``store``; files are parsed in ``sandbox`` when given.

    ``release_generation``: nothing else reads through this store (a one-shot command), so
    the pipeline may let go of the generation it read.
    """
    from ingest.chunking import HFTokenizer, TokenChunker
    from ingest.pipeline import IngestPipeline

    chunker = TokenChunker(
        HFTokenizer(settings.embedding_model_path()), settings.chunk_size, settings.chunk_overlap
    )
    extra: dict[str, Any] = {"opener": sandbox.open} if sandbox is not None else {}
    return IngestPipeline(
        store,
        store.embeddings,
        chunker,
        batch_size=settings.embedding_batch_size,
        checkpoint_chunks=settings.checkpoint_chunks,
        progress=progress,
        release_generation=release_generation,
        **extra,
    )


def build_service(
    settings: Settings,
    *,
    store: Store | None = None,
    models: Models | None = None,
    sandbox: ParserSandbox | None = None,
    one_shot: bool = False,
    access: AccessService | None = None,
) -> RagService:
    """The service over the configured index, memory and models (nothing started or opened).

    ``one_shot``: a single command uses it (the CLI), so ingestion need not keep the
    generation it read.
    """
    store = store or build_store(settings)
    models = models or ConfiguredModels(settings)
    moderator = shared_moderator(settings)  # one for all of the service's engines

    def engine(
        mode: str | None, k: int | None, found: list[Any], memory: ConversationStore | None
    ) -> ChatEngine:
        retriever = build_retriever(settings, store, mode, k)
        return build_engine_over(settings, retriever, found, memory, moderator=moderator)

    def pipeline(progress: Progress) -> IngestPipeline:
        return build_pipeline(
            settings, store, progress, sandbox=sandbox, release_generation=one_shot
        )

    metrics = build_metrics(settings, store)
    if isinstance(models, ConfiguredModels):
        metrics.gauge(
            "ragchat_model_endpoint_up",
            "1 while requests may go to the model endpoint, 0 while it is taken out.",
            models.health,
            "endpoint",
        )
    return RagService(
        settings,
        store,
        lambda: ConversationStore(settings.resolved_conversations_path),
        models,
        engine,
        pipeline,
        lambda **kw: build_retriever(settings, store, **kw),
        access or (lambda: build_access(settings)),
        metrics,
        lambda: build_usage(settings),
        cache=lambda: build_cache(settings, store.embeddings),
    )


def build_usage(settings: Settings) -> UsageLog:
    """The usage log of the data folder (the Metrics page's history of answers)."""
    return UsageLog(
        settings.usage_path,
        prices=parse_prices(settings.model_prices),
        keep_questions=settings.usage_questions,
        retention_days=settings.usage_retention_days,
    )


def build_metrics(settings: Settings, store: Store) -> Metrics:
    """The metrics of a service over ``store``, with the settings' price table."""
    gauges = {
        "ragchat_index_chunks": ("Chunks in the index (0 before the first ingestion).",
                                 lambda: store.chunk_count() if store.exists() else 0),
    }  # fmt: skip
    return Metrics(prices=parse_prices(settings.model_prices), gauges=gauges)


def build_access(settings: Settings) -> AccessService:
    """Accounts, collections, keys, sessions, limits and the audit trail of the data folder."""
    from limits.errors import ConfigurationError

    from rag.access.accounts import Accounts
    from rag.access.audit import AuditLog
    from rag.access.limits import LimitSettings, RateLimits
    from rag.access.principal import Role
    from rag.access.sessions import SessionSigner, session_secret
    from rag.errors import ConfigError
    from rag.service.access import AccessService, AuthConfig

    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    limits = LimitSettings(
        requests_per_minute=settings.rate_requests_per_minute,
        key_requests_per_minute=settings.rate_key_requests_per_minute,
        tokens_per_day=settings.rate_tokens_per_day,
        signin_failures=settings.signin_max_failures,
        signin_failures_per_address=settings.signin_max_failures * 4,
    )
    try:
        rate_limits = RateLimits(limits, settings.rate_limit_storage)
    except ConfigurationError as exc:
        raise ConfigError("RAG_RATE_LIMIT_STORAGE", str(exc)) from exc
    return AccessService(
        AuthConfig(
            mode=settings.auth,
            trusted_proxies=tuple(settings.trusted_proxies),
            user_header=settings.auth_header,
            groups_header=settings.auth_groups_header,
            default_role=Role(settings.auth_default_role),
            audit_questions=settings.audit_questions,
        ),
        Accounts(settings.access_path),
        AuditLog(settings.audit_path),
        rate_limits,
        SessionSigner(
            session_secret(secret, settings.data_dir), ttl_s=settings.session_hours * 3600
        ),
    )


@contextlib.contextmanager
def open_service(settings: Settings, **kwargs: Any) -> Iterator[RagService]:
    """``build_service`` for one command: its models and memory are closed at the end."""
    service = build_service(settings, **kwargs)
    try:
        yield service
    finally:
        service.close()


_SHARED: RagService | None = None
_SHARED_SANDBOX: ParserSandbox | None = None
_SHARED_JOBS: JobService | None = None
_SHARED_LOCK = threading.Lock()


def shared_service(settings: Settings | None = None) -> RagService:
    """The one service of this server process, built on first use from the environment.

    The web pages and the HTTP API run in one process and must share it: one bundled model
    server, one engine cache, one ingestion at a time. (Per-user state never lives here.)
    """
    global _SHARED, _SHARED_SANDBOX
    with _SHARED_LOCK:
        if _SHARED is None:
            import atexit

            from ingest.sandbox import ParseLimits, ParserSandbox
            from rag.settings import load_settings

            settings = settings or load_settings()
            # Uploads are parsed in one worker process with limits, never in the server.
            _SHARED_SANDBOX = ParserSandbox(ParseLimits.from_settings(settings))
            _SHARED = build_service(settings, sandbox=_SHARED_SANDBOX)
            atexit.register(close_shared_service)
        return _SHARED


def shared_jobs() -> JobService:
    """The job service of this server process (its worker threads started on first use)."""
    global _SHARED_JOBS
    service = shared_service()
    with _SHARED_LOCK:
        if _SHARED_JOBS is None:
            from rag.service.jobs import build_job_service

            _SHARED_JOBS = build_job_service(service.settings, service)
        return _SHARED_JOBS


def close_shared_service() -> None:
    """Close the process's shared service; the next ``shared_service()`` builds a new one."""
    global _SHARED, _SHARED_SANDBOX, _SHARED_JOBS
    with _SHARED_LOCK:
        service, sandbox, jobs = _SHARED, _SHARED_SANDBOX, _SHARED_JOBS
        _SHARED, _SHARED_SANDBOX, _SHARED_JOBS = None, None, None
    if jobs is not None:
        jobs.close()  # its workers finish their current question first
    if service is not None:
        service.close()  # stops the bundled model
    if sandbox is not None:
        sandbox.close()
