"""``RagService``: the use cases of ragchat, over collaborators passed in.

The web pages, the HTTP API, the CLI and the job workers all call this object; none of
them builds a store, a model or a chain. ``rag.service.components.build_service`` builds
one from settings; tests build one from fakes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import (
    InvalidInputError,
    RagError,
    RateLimitedError,
    category_of,
    error_id,
)
from rag.memory import FAILED
from rag.observe.metrics import Metrics
from rag.observe.prices import tokens_by_model
from rag.review.capture import answer_reasons
from rag.service.documents import PreparedUploads, UploadResult, index_uploads, prepare_uploads
from rag.service.usage import rate_usage, record_usage, usage_report
from rag.settings import Settings

if TYPE_CHECKING:
    from langchain_core.documents import Document

    from ingest.pipeline import IngestPipeline, IngestReport, Progress
    from rag.access.principal import Principal, Scope
    from rag.cache import Lookup, ResponseCache
    from rag.chain import Answer, AnswerStream, ChatEngine
    from rag.context import Turn
    from rag.memory import Conversation, ConversationStore, Exchange, Message
    from rag.observe.usage import UsageLog, UsageReport
    from rag.review.store import ReviewStore
    from rag.service.access import AccessService
    from rag.service.review import ReviewDesk
    from rag.store.base import Store
    from rag.store.faiss import DocumentInfo

logger = logging.getLogger(__name__)


class Models(Protocol):
    """The language model side: endpoints to answer through, started when first needed."""

    def endpoints(self) -> list[Any]:
        """The endpoints (``rag.llm.client.Endpoint``); may start the bundled model."""
        ...

    def check(self) -> str | None:
        """Why no answer could be had now (unreachable, not started), None when fine."""
        ...

    def close(self) -> None:
        """Stop what was started."""
        ...


# Builds the chat engine for a retrieval mode and k (None: the settings' own), answering
# through the given endpoints and keeping conversations in the given memory.
EngineFactory = Callable[
    [str | None, int | None, list[Any], "ConversationStore | None"], "ChatEngine"
]


@dataclass(frozen=True)
class SearchHit:
    """One retrieved chunk: where it is, its text, and how close it is to the query."""

    score: float  # the method's own ranking score (a fused z-score in hybrid mode)
    relevance: float  # cosine similarity mapped to 0..1, comparable across modes
    source: str
    title: str
    page: int | None
    chunk_id: str
    text: str
    flags: tuple[str, ...] = ()  # injection rules that fired on the chunk at ingestion

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat search --json`` and the API return."""
        return {
            "score": round(self.score, 4),
            "relevance": round(self.relevance, 4),
            "source": self.source,
            "title": self.title,
            "page": self.page,
            "chunk_id": self.chunk_id,
            "text": self.text,
            "flags": list(self.flags),
        }


class RagService:
    """Ask, search, documents, conversations: one object for every adapter.

    Engines are built once per (mode, k) and shared; the model endpoints are asked for at
    the first question, so commands that never ask start no model.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        memory: ConversationStore | Callable[[], ConversationStore],
        models: Models,
        engine: EngineFactory,
        pipeline: Callable[[Progress], IngestPipeline],
        retriever: Callable[..., Any],
        access: AccessService | Callable[[], AccessService],
        metrics: Metrics | None = None,
        usage: UsageLog | Callable[[], UsageLog] | None = None,
        reviews: ReviewStore | Callable[[], ReviewStore] | None = None,
        cache: ResponseCache | Callable[[], ResponseCache | None] | None = None,
    ) -> None:
        """Keep the collaborators; databases passed as callables are opened at first use.

        ``reviews``: the review queue (by default ``RAG_DATA_DIR/reviews.sqlite``).
        """
        self._access = access if callable(access) else None
        self._access_service = None if callable(access) else access
        self._settings = settings
        self._store = store
        self._memory = memory if callable(memory) else None
        self._memory_store = None if callable(memory) else memory
        self.models = models
        self._engine_factory = engine
        self._pipeline = pipeline
        self._retriever = retriever
        self._engines: dict[tuple[str | None, int | None, bool], ChatEngine] = {}
        self._lock = threading.Lock()
        self.metrics = metrics if metrics is not None else Metrics()
        self._usage = usage if callable(usage) else None
        self._usage_log = None if callable(usage) else usage
        self._review_desk = _desk(self, reviews or _default_reviews(settings))
        self._cache_factory = cache if callable(cache) else None
        self._cache = None if callable(cache) else cache

    @property
    def settings(self) -> Settings:
        """The settings the service was built with."""
        return self._settings

    @property
    def store(self) -> Store:
        """The document index."""
        return self._store

    @property
    def memory(self) -> ConversationStore:
        """The conversation store, opened at first use (commands that list documents never do)."""
        with self._lock:
            if self._memory_store is None:
                assert self._memory is not None
                self._memory_store = self._memory()
            return self._memory_store

    @property
    def access(self) -> AccessService:
        """Accounts, collections, keys, limits and audit (opened at first use)."""
        with self._lock:
            if self._access_service is None:
                assert self._access is not None
                self._access_service = self._access()
            return self._access_service

    @property
    def usage(self) -> UsageLog | None:
        """The usage log of the Metrics page (opened at first use; None: none is kept).

        Raises:
            UsageLogError: it cannot be opened.
        """
        with self._lock:
            if self._usage_log is None and self._usage is not None:
                self._usage_log = self._usage()
            return self._usage_log

    @property
    def review(self) -> ReviewDesk:
        """The review queue: capture, reviews, serving and export (opened at first use)."""
        return self._review_desk

    @property
    def cache(self) -> ResponseCache | None:
        """The response cache, opened at first use; None when off (``RAG_CACHE=false``)."""
        with self._lock:
            if self._cache_factory is not None:  # tried again at the next use if it fails
                self._cache = self._cache_factory()
                self._cache_factory = None
            return self._cache

    def scope(self, caller: Principal, collections: Sequence[str] | None = None) -> Scope:
        """What ``caller`` may read (limited to ``collections`` when named)."""
        return self.access.scope(caller, collections)

    # Questions ------------------------------------------------------------------------

    def engine(
        self, mode: str | None = None, k: int | None = None, *, conversations: bool = False
    ) -> ChatEngine:
        """The chat engine for a retrieval mode and k (the settings' when None).

        ``conversations``: the engine stores questions in the conversation memory (which
        is opened then, not before: one-off questions leave no database behind).
        """
        key = (mode, k, conversations)
        with self._lock:
            found = self._engines.get(key)
        if found is not None:
            return found
        memory = self.memory if conversations else None
        built = self._engine_factory(mode, k, self.models.endpoints(), memory)
        with self._lock:
            return self._engines.setdefault(key, built)

    def ask(
        self,
        question: str,
        *,
        caller: Principal,
        collections: Sequence[str] | None = None,
        conversation_id: str | None = None,
        history: Sequence[Turn] = (),
        mode: str | None = None,
        k: int | None = None,
        buffered: bool = False,
    ) -> AnswerStream:
        """Stream an answer; within a conversation it is stored with its outcome.

        ``history``: earlier turns a caller keeps itself (OpenAI-style clients send the
        whole conversation each time); not with ``conversation_id``, whose turns are stored.

        ``buffered``: nothing is shown before the end (JSON, batch runs), so a stream that
        drops midway falls back to the next endpoint rather than cutting the answer.

        ``caller`` is who asks: passages come from the collections it may read (limited to
        ``collections`` when named), and the conversation must be its own.

        A question asked on its own (the first of a conversation, or one with no earlier
        turns) that a reviewer answered for the same collections gets the reviewed answer
        (``rag.service.review``); otherwise it may be answered from the response cache, and
        a complete answer to it is kept there. Both only after every check on the question,
        and served through the engine's guardrails. Answers that need a reviewer are queued
        when they end.

        Raises:
            RagError: the question is empty, the conversation or a collection does not
                exist (or is not the caller's), or the caller's tokens for the day are spent.
        """
        started = time.perf_counter()
        try:
            if not question.strip():
                raise InvalidInputError("question", "the question is empty")
            scope = self.scope(caller, collections)
            self.access.check_tokens(caller)
        except RagError as exc:
            self.record_error(exc)
            raise
        if conversation_id is None:
            engine = self.engine(mode, k)
            return self._answer(
                engine,
                lambda: engine.ask(
                    question.strip(), history, within=scope.collections, buffered=buffered
                ),
                alone=None if history else question,
                caller=caller, scope=scope, started=started, where="", mode=mode, k=k,
            )  # fmt: skip
        if history:
            raise InvalidInputError(
                "history", "give either a conversation id or the history, not both"
            )
        self.memory.get(conversation_id, owner=caller.user_id)
        engine = self.engine(mode, k, conversations=True)
        return self._answer(
            engine,
            lambda: engine.ask_in(
                conversation_id, question, within=scope.collections, buffered=buffered
            ),
            alone=None if self.memory.history(conversation_id) else question,
            caller=caller, scope=scope, started=started, where=conversation_id, mode=mode, k=k,
        )  # fmt: skip

    # The response cache ------------------------------------------------------------------

    def _from_cache(
        self,
        engine: ChatEngine,
        question: str,
        scope: Scope,
        mode: str | None,
        k: int | None,
        *,
        search: bool = True,
    ) -> Lookup | None:
        """The cache's look-up of a first question, after every check on it.

        None when the cache is off, the index is empty, the question holds personal data
        (masked for the model, so its answer is about one person), or the cache failed
        (logged: a question never fails for the cache). ``search`` False prepares to keep
        the answer without looking: an answer asked for again, to replace the kept one, or
        one whose kept answer was rated down or found wrong and awaits its correction.
        """
        from rag.cache.answers import answer_settings, index_version, model_identity
        from rag.cache.base import CacheScope

        try:
            cache = self.cache
            if cache is None:
                return None
            pii = engine.pii  # RAG_PII=block refuses such a question anyway (screen_question)
            if pii is not None and pii.mode == "mask" and pii.detector.get().count(question):
                return None
            index = index_version(self._store)
            if index is None:
                return None
            key = CacheScope(
                collections=scope.collections,
                index=index,
                prompt_version=engine.prompt_version,
                model=model_identity(engine.endpoints, engine.model_name),
                settings=answer_settings(self._settings, mode, k),
            )
            return cache.lookup(question, key, search=search)
        except RagError as exc:
            logger.warning("response cache not used: %s", exc, exc_info=True)
            return None

    def _answer(
        self,
        engine: ChatEngine,
        fresh: Callable[[], AnswerStream],
        *,
        alone: str | None,
        caller: Principal,
        scope: Scope,
        started: float,
        where: str,
        mode: str | None = None,
        k: int | None = None,
        question_id: int | None = None,
        look: bool = True,
    ) -> AnswerStream:
        """A stored answer (reviewed, cached) served through ``engine``; else ``fresh()``.

        ``alone``: the text of a question asked on its own (the first of a conversation, or
        one without earlier turns); None for a follow-up, which the model always answers.
        Its reviewed answer comes first, then the cache's; the answer of ``fresh()`` is kept
        in the cache, unless a reviewer is to answer it (disputed). ``look`` False: neither
        is looked up (an answer asked for again), but the new answer replaces the kept one.
        ``where``: the conversation (""), where a served answer is stored after the question
        (``question_id``: stored already).
        """
        lookup = None
        if alone is not None:
            disputed = False
            if look:
                reviewed, disputed = self._reviewed(
                    engine, alone, caller, scope, started, where, question_id
                )
                if reviewed is not None:
                    return reviewed
            lookup = self._from_cache(engine, alone, scope, mode, k, search=look and not disputed)
        if lookup is None or lookup.hit is None:
            return self._accounted(self._kept(fresh(), lookup), caller, scope, where)
        lookup.hit.answer.within = scope.collections  # whose it is now (a later rating)
        stream = engine.serve(
            lookup.hit.answer,
            started=started,
            conversation_id=where or None,
            question_id=question_id,
        )
        return self._accounted(stream, caller, scope, where, cached=lookup.hit.kind)

    def _first_question(self, conversation_id: str, question_id: int) -> tuple[str, bool] | None:
        """A stored question with no turns before it: its text, and whether it has an answer.

        None for a later question (a follow-up) or an unknown one.
        """
        if self.memory.history(conversation_id, before=question_id):
            return None
        for exchange in self.memory.exchanges(conversation_id):
            if exchange.question.id == question_id:
                answer = exchange.answer
                return exchange.question.content, answer is not None and answer.outcome != FAILED
        return None

    def _kept(self, stream: AnswerStream, lookup: Lookup | None) -> AnswerStream:
        """``stream``, with its answer kept in the cache when it ends (if it is one to keep)."""
        if lookup is None:
            return stream
        pieces = stream._pieces

        def keeping() -> Iterator[str]:
            yield from pieces
            cache = self.cache
            if stream.result is None or cache is None:
                return
            # An answer the review queue takes (weakly cited) is not handed out again.
            if answer_reasons(stream.result, self._settings.review_min_support):
                return
            try:
                cache.keep(lookup, stream.result)
            except RagError as exc:
                logger.warning("answer not cached: %s", exc, exc_info=True)

        stream._pieces = keeping()
        return stream

    def clear_cache(self, *, caller: Principal) -> int:
        """Remove every answer from the response cache (an admin); how many (0 when off).

        Raises:
            PermissionDeniedError: the caller is not an admin.
        """
        self.access.check_admin(caller, "clear the response cache")
        cache = self.cache
        count = 0 if cache is None else cache.clear()
        self.access.record(caller, "cache cleared", "", {"answers": count})
        return count

    def _accounted(
        self,
        stream: AnswerStream,
        caller: Principal,
        scope: Scope,
        where: str,
        *,
        cached: str | None = None,
    ) -> AnswerStream:
        """``stream``, with the question audited and its tokens counted when it ends.

        ``cached``: the kind of cache hit the answer is ("exact", "semantic"), if one.
        """
        pieces = stream._pieces
        access = self.access
        metrics = self.metrics

        def counted() -> Iterator[str]:
            try:
                yield from pieces
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):  # not the reader leaving early
                    self.record_error(exc)
                raise
            finally:
                answer = stream.result
                if answer is not None:
                    _record_answer(metrics, answer, cached)
                    record_usage(self, caller, scope, answer)
                cited = [] if answer is None else [c.source.chunk_id for c in answer.citations]
                model = "" if answer is None else answer.model
                access.record_question(caller, _question_of(answer), scope, cited, model, where)
                if answer is not None:
                    tokens = answer.tokens
                    access.spend_tokens(
                        caller, int(tokens.get("prompt", 0)) + int(tokens.get("completion", 0))
                    )
                    self.review.captured(answer, caller, scope, where)

        stream._pieces = counted()
        return stream

    def _reviewed(
        self,
        engine: ChatEngine,
        question: str,
        caller: Principal,
        scope: Scope,
        started: float,
        where: str,
        question_id: int | None = None,
    ) -> tuple[AnswerStream | None, bool]:
        """The reviewed answer to a question asked on its own (None: there is none).

        Served through ``engine`` like the cache's answers: the guardrails run on the
        question and the answer, and in a conversation (``where``) both are stored (the
        question unless ``question_id`` names it, stored already). With it, whether the
        question's answer is disputed (the cache must not serve it).
        """
        answer, disputed = self.review.serve(question.strip(), scope)
        if answer is None:
            return None, disputed
        stream = engine.serve(
            answer, started=started, conversation_id=where or None, question_id=question_id
        )
        return self._accounted(stream, caller, scope, where), disputed

    def compare(
        self,
        question: str,
        models: str | list[str],
        *,
        caller: Principal,
        collections: Sequence[str] | None = None,
    ) -> dict[str, Answer | RagError]:
        """One question answered by several models at once: each answer, or its error.

        ``models``: ``"A,B"`` (names on the configured endpoint; ``NAME@URL`` for another
        endpoint). Answers come in the order given.

        Raises:
            RagError: fewer than two distinct models, or an empty question.
        """
        from rag.jobs.answering import model_engines, parse_models, side_by_side

        if not question.strip():
            raise InvalidInputError("question", "the question is empty")
        scope = self.scope(caller, collections)
        self.access.check_tokens(caller)
        return side_by_side(
            question.strip(), parse_models(models), model_engines(self), scope.collections
        )

    def retry(
        self,
        conversation_id: str,
        question_id: int,
        *,
        caller: Principal,
        collections: Sequence[str] | None = None,
        buffered: bool = False,
    ) -> AnswerStream:
        """Answer a stored question of the caller's (its first answer, a retry, regenerate).

        The first question of a conversation, when it has no answer yet, may get a reviewed
        answer or one from the response cache, as in ``ask``; regenerate asks the model again,
        and its new answer replaces the kept one.
        """
        started = time.perf_counter()
        scope = self.scope(caller, collections)
        self.memory.get(conversation_id, owner=caller.user_id)
        self.access.check_tokens(caller)
        engine = self.engine(conversations=True)
        first = self._first_question(conversation_id, question_id)
        return self._answer(
            engine,
            lambda: engine.retry_in(
                conversation_id, question_id, within=scope.collections, buffered=buffered
            ),
            alone=None if first is None else first[0],
            look=first is None or not first[1],  # regenerate: not looked up, but kept
            caller=caller, scope=scope, started=started, where=conversation_id,
            question_id=question_id,
        )  # fmt: skip

    def search(
        self,
        query: str,
        *,
        caller: Principal,
        collections: Sequence[str] | None = None,
        k: int = 5,
        mode: str | None = None,
    ) -> list[SearchHit]:
        """The top ``k`` chunks for a query, whatever their relevance (a retrieval probe).

        Raises:
            RagError: ``k`` is below 1, or the index cannot be read.
        """
        if k < 1:
            raise InvalidInputError("k", "must be at least 1")
        scope = self.scope(caller, collections)
        retriever = self.retriever(mode=mode, k=k, unfiltered=True)
        return [
            SearchHit(
                score=score,
                relevance=doc.metadata["relevance"],
                source=doc.metadata["source"],
                title=doc.metadata.get("title") or Path(doc.metadata["source"]).name,
                page=doc.metadata["page"],
                chunk_id=doc.metadata["chunk_id"],
                text=doc.page_content,
                flags=tuple(doc.metadata.get("flags") or ()),
            )
            for doc, score in retriever.search(query, within=scope.collections)
        ]

    def retriever(
        self, *, mode: str | None = None, k: int | None = None, unfiltered: bool = False
    ) -> Any:
        """The retriever the settings describe (``rag.retrieval.HybridRetriever``).

        ``unfiltered`` drops the relevance threshold and gap (probes and evaluation rank
        everything rather than decide whether to abstain).
        """
        return self._retriever(mode=mode, k=k, unfiltered=unfiltered)

    # Documents ------------------------------------------------------------------------

    def index_status(self) -> Any:
        """The index's generation, counts, model and disk use (``Store.status``)."""
        return self._store.status()

    def compact_index(self) -> list[Any]:
        """Merge the index's segments that are due (``FaissStore.compact_all``; [] if none).

        A Postgres store has nothing to compact (its own vacuum does that work).
        """
        compact = getattr(self._store, "compact_all", None)
        return [] if compact is None else list(compact())

    def repair_index(self) -> Any:
        """Recover from an interrupted writer (``Store.repair``)."""
        return self._store.repair()

    def documents(
        self, *, caller: Principal, collections: Sequence[str] | None = None
    ) -> list[DocumentInfo]:
        """The documents ``caller`` may read (partial ones included, marked so)."""
        return self._store.documents(self.scope(caller, collections).collections)

    def document(self, key: str, *, caller: Principal) -> DocumentInfo:
        """A document the caller may read, by id, unique id prefix or source path.

        Raises:
            DocumentNotFoundError: nothing the caller may read, or more than one, matches.
        """
        within = self.scope(caller).collections
        doc_id = self._store.find_document(key, within)
        return next(d for d in self._store.documents(within) if d.id == doc_id)

    def delete_document(self, key: str, *, caller: Principal) -> DocumentInfo:
        """Delete a document and its chunks (and its uploaded copy); returns what it was.

        Raises:
            DocumentNotFoundError: nothing the caller may read matches.
            PermissionDeniedError: the caller may read its collection, not change it.
        """
        (doc,) = self.delete_documents([key], caller=caller)
        return doc

    def delete_documents(self, keys: Sequence[str], *, caller: Principal) -> list[DocumentInfo]:
        """Delete several documents in one publish, each checked as ``delete_document``."""
        from rag.service.documents import delete_documents

        docs = [self.document(key, caller=caller) for key in keys]
        for doc in docs:
            self.access.writable(caller, doc.collection)
        delete_documents(self, docs)
        for doc in docs:
            self.access.record(caller, "document deleted", doc.id, {"collection": doc.collection})
        return docs

    def delete_collection(self, name: str, *, caller: Principal) -> None:
        """Delete a collection with its documents (its owner, or an admin)."""
        from rag.service.documents import delete_documents

        found = self.access.collection(caller, name)
        self.access.writable(caller, found.id)
        self.access.forget_collection(caller, found.id)  # checks ownership first
        docs = self._store.documents(frozenset({found.id}))
        if docs:
            delete_documents(self, docs)

    def pipeline(self, progress: Progress | None = None) -> IngestPipeline:
        """An ingestion pipeline into this index, reporting to ``progress``."""
        return self._pipeline(progress or _no_progress)

    def ingest(
        self,
        paths: Sequence[Path],
        *,
        caller: Principal,
        collection: str | None = None,
        prune: bool = False,
        force: bool = False,
        titles: Mapping[Path, str] | None = None,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Index files and folders into a collection the caller may change.

        Unchanged files are skipped; see ``IngestPipeline.run``.
        """
        target = self.access.writable(caller, collection)
        pipeline = self.pipeline(progress)
        report = pipeline.run(paths, prune=prune, force=force, titles=titles, collection=target.id)
        self._count_ingestion(pipeline)
        self.access.record(
            caller,
            "re-indexed" if force else "ingested",
            target.id,
            {"files": len(report.files), "failed": report.count("failed")},
        )
        return report

    def prepare_uploads(
        self, files: list[tuple[str, bytes]], *, caller: Principal, collection: str | None = None
    ) -> PreparedUploads:
        """Check and save uploads into a collection the caller may change (fast).

        Index them with ``index_uploads``.
        """
        target = self.access.writable(caller, collection)
        prepared = prepare_uploads(self, files, target.id)
        self.access.record(
            caller, "uploaded", target.id, {"files": [r.name for r in prepared.results.values()]}
        )
        return prepared

    def index_uploads(
        self, prepared: PreparedUploads, progress: Progress | None = None
    ) -> list[UploadResult]:
        """Index saved uploads (slow); one result per file."""
        pipeline = self.pipeline(progress)
        try:
            return index_uploads(prepared, pipeline)
        finally:
            self._count_ingestion(pipeline)

    def _count_ingestion(self, pipeline: IngestPipeline) -> None:
        report = pipeline.last_report
        if report is not None:
            self.metrics.ingested(report.chunks, report.embed_seconds or report.seconds)

    def add_uploads(
        self,
        files: list[tuple[str, bytes]],
        progress: Progress | None = None,
        *,
        caller: Principal,
        collection: str | None = None,
    ) -> list[UploadResult]:
        """Save and index uploads (``(browser name, content)`` pairs); one result per file."""
        prepared = self.prepare_uploads(files, caller=caller, collection=collection)
        return self.index_uploads(prepared, progress)

    # Conversations --------------------------------------------------------------------

    def conversations(self, *, caller: Principal) -> list[Conversation]:
        """The caller's stored conversations, newest first."""
        return self.memory.conversations(owner=caller.user_id)

    def create_conversation(self, title: str = "", *, caller: Principal) -> Conversation:
        """A new, empty conversation of the caller's."""
        return self.memory.create(title, owner=caller.user_id)

    def conversation(self, conversation_id: str, *, caller: Principal) -> Conversation:
        """One of the caller's conversations (raises ``ConversationNotFoundError``)."""
        return self.memory.get(conversation_id, owner=caller.user_id)

    def messages(self, conversation_id: str, *, caller: Principal) -> list[Message]:
        """A conversation's questions and answers, oldest first (the caller's only)."""
        self.memory.get(conversation_id, owner=caller.user_id)
        return self.memory.messages(conversation_id)

    def exchanges(self, conversation_id: str, *, caller: Principal) -> list[Exchange]:
        """A conversation's questions with their answers (the caller's only)."""
        self.memory.get(conversation_id, owner=caller.user_id)
        return self.memory.exchanges(conversation_id)

    def rename_conversation(self, conversation_id: str, title: str, *, caller: Principal) -> None:
        """Rename one of the caller's conversations."""
        self.memory.get(conversation_id, owner=caller.user_id)
        self.memory.rename(conversation_id, title)

    def delete_conversation(self, conversation_id: str, *, caller: Principal) -> None:
        """Delete a conversation and its messages (raises ``ConversationNotFoundError``)."""
        self.memory.get(conversation_id, owner=caller.user_id)
        self.memory.delete(conversation_id)

    def store_question(
        self, question: str, *, caller: Principal, conversation_id: str | None = None
    ) -> tuple[str, int]:
        """Store a question to answer with ``retry`` (the pages stream it on their next run).

        A new conversation of the caller's is started when ``conversation_id`` is None.
        Returns the conversation's id and the question's.

        Raises:
            InvalidInputError: the question is empty.
            ConversationNotFoundError: the conversation is gone or not the caller's.
        """
        if not question.strip():
            raise InvalidInputError("question", "the question is empty")
        if conversation_id is None:
            conversation_id = self.memory.create(owner=caller.user_id).id
        else:
            self.memory.get(conversation_id, owner=caller.user_id)
        return conversation_id, self.memory.ask(conversation_id, question.strip()).id

    def store_outcome(
        self,
        conversation_id: str,
        question_id: int,
        text: str,
        *,
        caller: Principal,
        outcome: str,
        meta: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Store an answer's outcome the engine could not (no model, the reader stopped it)."""
        self.memory.get(conversation_id, owner=caller.user_id)
        self.memory.answer(conversation_id, question_id, text, meta, outcome=outcome, error=error)

    def chunks(self, ids: Sequence[str], *, caller: Principal) -> list[Document]:
        """Stored chunks by id, those of collections the caller may read only."""
        return self._store.get_by_ids(ids, self.scope(caller).collections)

    def set_feedback(self, message_id: int, score: int | None, *, caller: Principal) -> None:
        """Thumbs up (1), down (0) or cleared (None) on one of the caller's answers."""
        self.memory.set_feedback(message_id, score, owner=caller.user_id)
        if score is not None:
            self.metrics.rated(bool(score))
        rate_usage(self, message_id, score, caller)
        if score == 0:
            self.review.rated_down(message_id, caller)

    # Metrics --------------------------------------------------------------------------

    def record_error(self, error: BaseException) -> None:
        """Count and log an error a user is shown (adapters call it where they show one).

        The log line carries the error's id (``rag.errors.error_id``), which the adapter
        shows with the message. An error counted once, by the service or by an adapter,
        is neither counted nor logged again.
        """
        if getattr(error, "_ragchat_counted", False):
            return
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__
            error._ragchat_counted = True  # type: ignore[attr-defined]
        category = category_of(error)
        # The id the user is shown (rag.errors.error_id) is in this line, to find it here.
        logger.log(
            logging.INFO if category in ("input", "business_rule") else logging.WARNING,
            "error %s (%s, %s): %s",
            error_id(error),
            category,
            type(error).__name__,
            error,
        )
        self.metrics.failed(error)
        if isinstance(error, RateLimitedError):
            self.metrics.refused(error.limit)

    def usage_report(
        self, caller: Principal, days: int = 30, *, by_model: bool = False, top: int = 20
    ) -> UsageReport:
        """Answers of the last ``days`` UTC days from the usage log (admins only).

        See ``rag.service.usage.usage_report``.
        """
        return usage_report(self, caller, days, by_model=by_model, top=top)

    # Health ---------------------------------------------------------------------------

    def ready(self) -> dict[str, str]:
        """What stops this service from answering: ``{"index": ..., "model": ...}``.

        Each value is "ok" or the reason; an empty index is ready (questions abstain).
        """
        checks: dict[str, str] = {}
        try:
            if self._store.exists():
                self._store.snapshot()
            checks["index"] = "ok"
        except RagError as exc:
            checks["index"] = str(exc)
        problem = self.models.check()
        checks["model"] = problem or "ok"
        return checks

    def warm(self) -> None:
        """Load the query embedding model and start the language model (before a question)."""
        thread = threading.Thread(target=self._warm_embeddings, name="embedding-warm-up")
        thread.start()
        try:
            self.models.endpoints()
        finally:
            thread.join()

    def _warm_embeddings(self) -> None:
        try:
            self._store.embeddings.embed_query("warm up")
        except RagError as exc:  # reported again, with its message, at the first question
            logger.info("embedding model not loaded ahead: %s", exc)

    def close(self) -> None:
        """Stop the models this service started and close its conversation store."""
        self.models.close()
        with self._lock:
            if self._memory_store is not None:
                self._memory_store.close()
            if self._access_service is not None:
                self._access_service.close()
            if self._usage_log is not None:
                self._usage_log.close()
            if self._cache is not None:
                self._cache.close()
                self._cache = None
        self._review_desk.close()


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def _default_reviews(settings: Settings) -> Callable[[], ReviewStore]:
    def open_reviews() -> ReviewStore:
        from rag.review.store import ReviewStore

        return ReviewStore(settings.reviews_path)

    return open_reviews


def _desk(service: RagService, reviews: ReviewStore | Callable[[], ReviewStore]) -> ReviewDesk:
    from rag.service.review import ReviewDesk

    return ReviewDesk(service, reviews)


def _question_of(answer: Answer | None) -> str:
    return "" if answer is None else answer.question


def _record_answer(metrics: Metrics, answer: Answer, cached: str | None = None) -> None:
    """Count a finished answer: latency, first token, retrieval, tokens, cost, cache hit."""
    timings, tokens = answer.timings, answer.tokens
    retrieval = timings.get("retrieval_ms")
    metrics.answered(
        model=answer.model,
        total_s=timings.get("total_ms", 0.0) / 1000,
        first_token_s=timings.get("first_token_ms", 0.0) / 1000,
        retrieval_s=None if retrieval is None else retrieval / 1000,
        prompt_tokens=int(tokens.get("prompt", 0) or 0),
        completion_tokens=int(tokens.get("completion", 0) or 0),
        abstained=answer.abstained,
        by_model=tokens_by_model(tokens, answer.model or "unknown"),
        cached=cached,
    )
