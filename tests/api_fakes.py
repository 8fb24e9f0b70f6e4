"""A RagService over fakes, and a fake job service, for the API tests (no model, no network).

Named test_api_* so the API helper owns it; it holds no tests.
"""

from __future__ import annotations

import threading
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
from rag.access.principal import LOCAL_USER, Principal
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import InvalidInputError, JobNotFoundError, ProviderError
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from rag.service.components import build_access, build_retriever, build_usage
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings, RecordingRetriever, WordTokenizer, doc

ANSWER = "The default is 100 [2] and it limits clients [1]."
FOLLOW_UP = "It counts each session once [1]."
CONDENSED = "How does max_connections count sessions?"


@dataclass
class Controls:
    """Switches the tests flip at run time."""

    fail_after_words: int | None = None  # the model fails after this many words
    model_problem: str | None = None  # what ready() reports for the model
    prompts: list[str] = field(default_factory=list)


class ScriptedChat(BaseChatModel):
    """Answers from the sources it is shown; rewrites follow-ups; streams word by word."""

    controls: Any = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _reply(self, messages: list[BaseMessage]) -> str:
        prompt = "\n".join(str(m.content) for m in messages)
        self.controls.prompts.append(prompt)
        if "Rewrite the user's last question" in prompt:
            return CONDENSED
        return FOLLOW_UP if "count" in prompt.rsplit("Sources:", 1)[-1] else ANSWER

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(c.text for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        words = self._reply(messages).split(" ")
        for i, word in enumerate(words):
            if self.controls.fail_after_words is not None and i >= self.controls.fail_after_words:
                raise ProviderError("http://127.0.0.1:9/v1", 500, "the model crashed")
            piece = word if i == 0 else " " + word
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))


class FakeModels:
    def __init__(self, controls: Controls) -> None:
        self.controls = controls
        self.closed = False

    def endpoints(self) -> list[Any]:
        return []

    def check(self) -> str | None:
        return self.controls.model_problem

    def close(self) -> None:
        self.closed = True


def _add(store: FaissStore, doc_id: str, source: str, texts: list[str], pages: int | None) -> None:
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            doc_id, kind="pdf" if pages else "markdown", pages=pages, source=source,
            chunks=[NewChunk(t, page=1 if pages else None) for t in texts], vectors=vectors,
        )  # fmt: skip


def fake_service(
    root: Path, controls: Controls | None = None, settings: Settings | None = None
) -> tuple[RagService, Controls]:
    """A real service over a real FAISS store (fake embeddings) and a scripted model."""
    controls = controls or Controls()
    settings = settings or Settings(data_dir=root, upload_max_mb=1)
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(settings.resolved_index_dir, embeddings, model_id="fake", dimension=32)
    if not store.exists():
        _add(store, "a" * 64, str(root / "manual.pdf"), ["max_connections sets clients."], 5)
        _add(store, "b" * 64, str(root / "ops.md"), ["Backups run nightly."], None)
    prompts = load_prompts()
    retriever = RecordingRetriever(
        by_keyword={
            "max_connections": [
                doc("max_connections sets the maximum number of clients.", page=4, n=1),
                doc("The default value of max_connections is 100.", page=5, n=2),
            ]
        }
    )

    def engine(mode: str | None, k: int | None, _: list[Any], memory: ConversationStore):
        chain = build_chain(ScriptedChat(controls=controls), retriever, prompts, ChainConfig())
        return ChatEngine(chain, prompts, model_name="fake-model", memory=memory)

    def pipeline(progress: Progress) -> IngestPipeline:
        chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
        return IngestPipeline(store, embeddings, chunker, batch_size=8, progress=progress)

    service = RagService(
        settings,
        store,
        lambda: ConversationStore(settings.resolved_conversations_path),
        FakeModels(controls),
        engine,
        pipeline,
        lambda **kw: build_retriever(settings, store, **kw),
        lambda: build_access(settings),
        usage=lambda: build_usage(settings),
    )
    return service, controls


@dataclass
class FakeJob:
    id: str
    kind: str
    owner: str = LOCAL_USER
    state: str = "queued"
    done: int = 0
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "state": self.state, "done": self.done,
            "total": self.total, "errors": self.errors, "created_at": "2026-01-01T00:00:00Z",
            "started_at": None, "finished_at": None, "timings": {}, "options": self.options,
            "metrics": None,
        }  # fmt: skip


class FakeJobs:
    """The JobService interface in memory; each ``get`` of a running job advances it a step.

    Jobs belong to the caller that submitted them: another caller's job is not found, as
    in ``JobService``.
    """

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.files: list[tuple[str, bytes]] = []
        self.batch_files: list[tuple[str, bytes, int | None]] = []
        self.collections: list[str | None] = []
        self._lock = threading.Lock()

    def _new(self, kind: str, total: int, caller: Principal, **options: Any) -> FakeJob:
        with self._lock:
            job = FakeJob(
                f"job{len(self.jobs) + 1}", kind, caller.user_id, total=total, options=options
            )
            self.jobs[job.id] = job
            return job

    def _job(self, job_id: str, caller: Principal) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None or job.owner != caller.user_id:
            raise JobNotFoundError(job_id)
        return job

    def submit_batch(
        self,
        questions: list[dict[str, Any]],
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> FakeJob:
        from rag.jobs.inputs import check_rows

        parsed = check_rows(questions)  # the job service's own checks
        good = list(parsed.rows.values())
        if not good:
            raise InvalidInputError("questions", "no row has a question")
        job = self._new("batch", len(good), caller, concurrency=concurrency, compare=compare)
        if collections is not None:
            job.options["collections"] = collections
        job.errors = parsed.errors
        job.rows = [
            {"index": i, "question": q["question"], "answer": f"answer {i} [1]",
             "citations": [{"n": 1, "source": "manual.pdf", "page": 4}], "abstained": False,
             "model": "fake-model", "prompt_version": "answer@v3", "timings": {"total_ms": 1.0},
             "error": None}
            for i, q in enumerate(good)
        ]  # fmt: skip
        return job

    def submit_batch_file(
        self,
        name: str,
        data: bytes,
        *,
        caller: Principal,
        collections: list[str] | None = None,
        concurrency: int | None = None,
        compare: list[str] | None = None,
    ) -> FakeJob:
        from rag.jobs.inputs import parse_file

        parsed = parse_file(name, data)  # the job service's own parsing
        self.batch_files.append((name, data, concurrency))
        return self.submit_batch(
            list(parsed.rows.values()),
            caller=caller,
            collections=collections,
            concurrency=concurrency,
            compare=compare,
        )

    def submit_ingest(
        self, files: list[tuple[str, bytes]], *, caller: Principal, collection: str | None = None
    ) -> FakeJob:
        self.files += files
        self.collections.append(collection)
        job = self._new("ingest", len(files), caller)
        job.rows = [{"name": n, "status": "added", "reason": ""} for n, _ in files]
        return job

    def get(self, job_id: str, *, caller: Principal) -> FakeJob:
        with self._lock:
            job = self._job(job_id, caller)
            if job.state in {"queued", "running"}:  # advance one step per look
                job.state = "running"
                job.done += 1
                if job.done >= job.total:
                    job.state = "done"
            return job

    def list(self, *, caller: Principal) -> list[FakeJob]:
        return [j for j in reversed(self.jobs.values()) if j.owner == caller.user_id]

    def cancel(self, job_id: str, *, caller: Principal) -> FakeJob:
        job = self._job(job_id, caller)
        if job.state in {"queued", "running"}:
            job.state = "cancelled"
        return job

    def results(self, job_id: str, *, caller: Principal) -> list[dict[str, Any]]:
        job = self._job(job_id, caller)
        return job.rows[: job.done] if job.state != "done" else job.rows
