"""A RagService over fakes that counts what reaches the model, and a job service on it.

Named test_jobs_* so the jobs helper owns it; it holds no tests.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.access.principal import LOCAL
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import ProviderError
from rag.jobs.queue import JobQueue
from rag.jobs.store import SqliteJobStore
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from rag.service.components import build_access, build_retriever
from rag.service.core import RagService
from rag.service.jobs import JobInfo, JobService, JobState
from rag.settings import Settings
from rag.store.faiss import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings, RecordingRetriever, WordTokenizer, doc

FINAL = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}


@dataclass
class Model:
    """What the fake model was asked, and how it behaves."""

    delay_s: float = 0.0
    asked: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    name: str = "fake-model"
    lock: threading.Lock = field(default_factory=threading.Lock)


_QUESTION = re.compile(r"Question:\s*(.+)", re.S)


def _question(messages: list[BaseMessage]) -> str:
    text = str(messages[-1].content)
    found = _QUESTION.search(text)
    return (found.group(1) if found else text).strip().splitlines()[0].strip()


class CountingChat(BaseChatModel):
    """Answers "<question> is answered [1]."; fails when the question says FAIL."""

    model: Any = None

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(str(c.message.content) for c in self._stream(messages, stop, run_manager))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model: Model = self.model
        question = _question(messages)
        with model.lock:
            model.asked[question] += 1
            model.in_flight += 1
            model.max_in_flight = max(model.max_in_flight, model.in_flight)
        try:
            time.sleep(model.delay_s)
            if "FAIL" in question:
                raise ProviderError("http://127.0.0.1:9/v1", 500, "the model crashed")
            for piece in ["Backups ", "run ", "nightly ", "[1]", "."]:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        finally:
            with model.lock:
                model.in_flight -= 1


class FakeModels:
    def endpoints(self) -> list[Any]:
        return []

    def check(self) -> str | None:
        return None

    def close(self) -> None:
        return None


def engine_over(model: Model) -> ChatEngine:
    retriever = RecordingRetriever(
        by_keyword={"": [doc("Backups run nightly at two.", source="/docs/ops.md", page=3, n=1)]}
    )
    prompts = load_prompts()
    chain = build_chain(CountingChat(model=model), retriever, prompts, ChainConfig())
    return ChatEngine(chain, prompts, model_name=model.name)


def fake_service(root: Path, model: Model) -> RagService:
    """A real service: FAISS in ``root`` with fake embeddings, a counting model."""
    settings = Settings(data_dir=root, upload_max_mb=1)
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(settings.resolved_index_dir, embeddings, model_id="fake", dimension=32)
    if not store.exists():
        texts = ["Backups run nightly at two."]
        vectors = np.asarray(embeddings.embed_documents(texts), dtype="float32")
        with store.writer() as w:
            w.add_document(
                "b" * 64, kind="pdf", pages=3, source="/docs/ops.pdf",
                chunks=[NewChunk(texts[0], page=3)], vectors=vectors,
            )  # fmt: skip
    engine = engine_over(model)

    def pipeline(progress: Progress) -> IngestPipeline:
        chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
        return IngestPipeline(store, embeddings, chunker, batch_size=8, progress=progress)

    return RagService(
        settings,
        store,
        lambda: ConversationStore(settings.resolved_conversations_path),
        FakeModels(),
        lambda mode, k, found, memory: engine,
        pipeline,
        lambda **kw: build_retriever(settings, store, **kw),
        lambda: build_access(settings),
    )


def job_service(
    root: Path,
    model: Model,
    *,
    workers: int = 4,
    claim_ttl_s: float = 5.0,
    models: dict[str, Model] | None = None,
) -> JobService:
    """A job service on SqliteHuey in ``root``, ``workers`` threads (0: none started)."""
    from huey import SqliteHuey

    service = fake_service(root, model)
    engines = {name: engine_over(m) for name, m in (models or {}).items()}
    queue = JobQueue(
        SqliteHuey("ragchat", filename=str(root / "queue.db"), results=False),
        SqliteJobStore(root / "jobs.db"),
        lambda: service,
        engine_for=engines.__getitem__,
        claim_ttl_s=claim_ttl_s,
        retry_wait_s=0.01,
        question_retry_sleep=lambda _: None,  # retried at once (the policy's waits: test_errors)
    )
    if workers:
        queue.start(workers)
    return JobService(queue, service, default_concurrency=4)


def wait(jobs: JobService, job_id: str, timeout: float = 10.0) -> JobInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = jobs.get(job_id, caller=LOCAL)
        # A batch reads as done once its last row is stored; finished_at follows at once.
        if info.state in FINAL and info.finished_at is not None:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {info.state} after {timeout}s: {info}")
        time.sleep(0.02)
