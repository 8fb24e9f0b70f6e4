"""Resources for the web app built from fakes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from huey import SqliteHuey
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.cache import ResponseCache
from rag.cache.sqlite_cache import SqliteAnswerCache
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import ProviderError
from rag.guard.model import LazyDetector
from rag.guard.scan import ChunkScanner
from rag.jobs.queue import JobQueue
from rag.jobs.store import SqliteJobStore
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from rag.service.components import build_access, build_retriever, build_usage
from rag.service.core import RagService
from rag.service.jobs import JobService
from rag.settings import Settings
from rag.store.faiss import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings, FakeDetector, RecordingRetriever, WordTokenizer, doc
from ui.resources import Resources

ANSWERS = [
    "The default is 100 [2] and it limits clients [1]. ![tracker](http://example.org/t.png)",
    "How does max_connections count sessions?",  # the condensed follow-up
    "It counts each session once [1].",
]


def add(store: FaissStore, doc_id: str, source: str, texts: list[str], pages: int | None) -> None:
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            doc_id, kind="pdf" if pages else "markdown", pages=pages, source=source,
            chunks=[NewChunk(t, page=1 if pages else None) for t in texts], vectors=vectors,
        )  # fmt: skip


class FakeModels:
    """No endpoints to start: the fake engine answers."""

    def endpoints(self) -> list[Any]:
        return []

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        return None


@cache
def _fakes(folder: str, mode: str) -> tuple[Resources, RagService]:
    root = Path(folder)
    # The scripted answer's second citation is weakly supported (0.25), and weakly cited
    # answers are not cached: the cached mode turns that rule off to test the cache itself.
    settings = Settings(data_dir=root)
    if mode == "cached":
        settings = settings.model_copy(update={"review_min_support": 0.0})
    embeddings = CountingEmbeddings(size=32)
    scanner = ChunkScanner(LazyDetector(FakeDetector))
    store = FaissStore(
        settings.resolved_index_dir, embeddings, model_id="fake", dimension=32, scanner=scanner
    )
    if not store.exists():
        add(store, "a" * 64, str(root / "manual.pdf"), ["max_connections sets clients."], 5)
        add(store, "b" * 64, str(root / "ops.md"), ["Backups run nightly."], None)
    memory = ConversationStore(settings.resolved_conversations_path)
    prompts = load_prompts()
    retriever = RecordingRetriever(
        by_keyword={
            "max_connections": [
                doc("max_connections sets the maximum number of clients.", page=4, n=1),
                doc("The default value of max_connections is 100.", page=5, n=2),
            ]
        }
    )
    engine = ChatEngine(
        build_chain(FakeListChatModel(responses=ANSWERS), retriever, prompts, ChainConfig()),
        prompts,
        model_name="fake-model",
        memory=memory,
    )

    def get_engine() -> ChatEngine:
        if mode == "down":
            raise ProviderError("http://127.0.0.1:9/v1", "unreachable", "cannot connect")
        return engine

    def pipeline(progress: Progress) -> IngestPipeline:
        chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
        return IngestPipeline(store, embeddings, chunker, batch_size=8, progress=progress)

    service = RagService(
        settings,
        store,
        memory,
        FakeModels(),
        lambda *_: get_engine(),
        pipeline,
        lambda **kw: build_retriever(settings, store, **kw),
        lambda: build_access(settings),
        usage=lambda: build_usage(settings),
        cache=(
            (lambda: ResponseCache(SqliteAnswerCache(settings.cache_path), embeddings))
            if mode == "cached"
            else None
        ),
    )
    queue = JobQueue(
        SqliteHuey("ragchat", filename=str(root / "queue.db"), results=False),
        SqliteJobStore(root / "jobs.db"),
        lambda: service,
        claim_ttl_s=5.0,
        retry_wait_s=0.01,
        question_retry_sleep=lambda _: None,  # retried at once (the policy's waits: test_errors)
    )
    jobs = JobService(queue, service)
    started: list[bool] = []

    def get_jobs() -> JobService:
        if not started:  # worker threads only for the tests that submit jobs
            started.append(True)
            queue.start(2)
        return jobs

    return Resources(service, get_jobs), service


def fake_resources(folder: str, mode: str = "ok") -> Resources:
    """The web app's resources over fakes in ``folder`` (the same objects on every call)."""
    return _fakes(folder, mode)[0]


def fake_pipeline(folder: str, progress: Progress | None = None) -> IngestPipeline:
    """An ingestion pipeline into the fake resources' index in ``folder``."""
    return _fakes(folder, "ok")[1].pipeline(progress)
