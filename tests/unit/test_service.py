"""The service layer: every use case driven without an adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.access.principal import LOCAL
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import DocumentNotFoundError, RagError
from rag.memory import ConversationNotFoundError, ConversationStore
from rag.prompts import load_prompts
from rag.service.components import LazyEmbeddings, build_access, build_retriever
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore
from tests.fakes import CountingEmbeddings, WordTokenizer
from tests.ui_fakes import add


class FakeModels:
    """Endpoints that count how often they were asked for, and a settable health."""

    def __init__(self) -> None:
        self.asked = 0
        self.closed = False
        self.problem: str | None = None

    def endpoints(self) -> list[Any]:
        self.asked += 1
        return []

    def check(self) -> str | None:
        return self.problem

    def close(self) -> None:
        self.closed = True


def service_in(
    root: Path, answers: list[str] | None = None, **overrides: Any
) -> tuple[RagService, FakeModels]:
    settings = Settings(data_dir=root, min_relevance=0.0, relevance_gap=1.0, **overrides)
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(settings.resolved_index_dir, embeddings, model_id="fake", dimension=32)
    add(store, "a" * 64, str(root / "manual.pdf"), ["max_connections sets clients."], 5)
    add(store, "b" * 64, str(root / "ops.md"), ["Backups run nightly at two."], None)
    models = FakeModels()
    prompts = load_prompts()
    replies = answers or ["Backups run nightly [1]."] * 10

    def engine(mode: str | None, k: int | None, _: list[Any], memory: Any) -> ChatEngine:
        chain = build_chain(
            FakeListChatModel(responses=replies),
            build_retriever(settings, store, mode, k),
            prompts,
            ChainConfig(),
        )
        return ChatEngine(chain, prompts, model_name="fake-model", memory=memory)

    def pipeline(progress: Progress) -> IngestPipeline:
        chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
        return IngestPipeline(store, embeddings, chunker, batch_size=8, progress=progress)

    service = RagService(
        settings,
        store,
        lambda: ConversationStore(settings.resolved_conversations_path),
        models,
        engine,
        pipeline,
        lambda **kw: build_retriever(settings, store, **kw),
        lambda: build_access(settings),
    )
    return service, models


def answer(stream: Any) -> Any:
    text = "".join(stream)
    assert stream.result is not None
    return text, stream.result


def test_a_one_off_question_is_answered_with_citations_and_not_stored(tmp_path):
    service, _ = service_in(tmp_path)
    text, result = answer(service.ask("When do backups run?", mode="keyword", caller=LOCAL))
    assert "nightly" in text and "[1]" in text
    assert result.citations and result.citations[0].source.source.endswith("ops.md")
    assert not service.settings.resolved_conversations_path.exists()  # nothing opened


def test_a_question_in_a_conversation_is_stored_with_its_answer(tmp_path):
    service, _ = service_in(tmp_path)
    conversation = service.create_conversation(caller=LOCAL)
    answer(service.ask("When do backups run?", conversation_id=conversation.id, caller=LOCAL))
    messages = service.messages(conversation.id, caller=LOCAL)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert "nightly" in messages[1].content
    assert [c.id for c in service.conversations(caller=LOCAL)] == [conversation.id]
    service.delete_conversation(conversation.id, caller=LOCAL)
    assert service.conversations(caller=LOCAL) == []
    with pytest.raises(ConversationNotFoundError):
        service.messages(conversation.id, caller=LOCAL)
    with pytest.raises(ConversationNotFoundError):
        service.delete_conversation(conversation.id, caller=LOCAL)


def test_an_empty_question_is_refused(tmp_path):
    service, models = service_in(tmp_path)
    with pytest.raises(RagError, match="empty"):
        service.ask("   ", caller=LOCAL)
    assert models.asked == 0  # no model was started for it


def test_engines_are_built_once_per_mode_and_k(tmp_path):
    service, models = service_in(tmp_path)
    assert service.engine() is service.engine()
    assert service.engine(mode="keyword") is not service.engine()
    assert service.engine(conversations=True) is not service.engine()
    assert models.asked == 3


def test_search_returns_chunks_with_relevance_and_titles(tmp_path):
    service, _ = service_in(tmp_path)
    hits = service.search("backups nightly", k=2, mode="keyword", caller=LOCAL)
    assert hits[0].title == "ops.md" and hits[0].page is None
    assert 0 <= hits[0].relevance <= 1
    assert set(hits[0].to_json()) == {
        "score", "relevance", "source", "title", "page", "chunk_id", "text", "flags",
    }  # fmt: skip
    with pytest.raises(RagError, match="k: must be at least 1"):
        service.search("x", k=0, caller=LOCAL)


def test_documents_are_listed_found_and_deleted(tmp_path):
    service, _ = service_in(tmp_path)
    assert sorted(d.name for d in service.documents(caller=LOCAL)) == ["manual.pdf", "ops.md"]
    deleted = service.delete_document("b" * 12, caller=LOCAL)
    assert deleted.name == "ops.md" and deleted.chunks == 1
    assert [d.name for d in service.documents(caller=LOCAL)] == ["manual.pdf"]
    with pytest.raises(DocumentNotFoundError):
        service.delete_document("b" * 12, caller=LOCAL)


def test_uploads_are_saved_indexed_and_recognised_again(tmp_path):
    service, _ = service_in(tmp_path)
    seen: list[str] = []
    (result,) = service.add_uploads(
        [("pumps.md", b"# Pumps\n\nOil them in spring.")],
        lambda stage, *_: seen.append(stage),
        caller=LOCAL,
    )
    assert (result.name, result.status) == ("pumps.md", "added") and "embed" in seen
    assert "pumps.md" in {d.name for d in service.documents(caller=LOCAL)}
    (again,) = service.add_uploads([("copy.md", b"# Pumps\n\nOil them in spring.")], caller=LOCAL)
    assert again.status == "unchanged" and "pumps.md" in again.reason


def test_ready_names_what_is_wrong(tmp_path):
    service, models = service_in(tmp_path)
    assert service.ready() == {"index": "ok", "model": "ok"}
    models.problem = "the model endpoint http://x is unreachable"
    assert service.ready()["model"] == models.problem


def test_close_stops_the_models_and_the_memory(tmp_path):
    service, models = service_in(tmp_path)
    conversation = service.create_conversation(caller=LOCAL)
    service.close()
    assert models.closed
    with pytest.raises(Exception, match="closed"):
        service.memory.get(conversation.id)


def test_two_uploads_with_one_name_each_keep_their_outcome(tmp_path):
    service, _ = service_in(tmp_path)
    results = service.add_uploads(
        [("a/report.md", b"# Report\n\nThe first report."), ("b/report.md", b"# R\n\nSecond.")],
        caller=LOCAL,
    )
    assert [(r.name, r.status) for r in results] == [
        ("report.md", "added"), ("report (2).md", "added"),
    ]  # fmt: skip
    assert {"report.md", "report (2).md"} <= {d.name for d in service.documents(caller=LOCAL)}


def test_lazy_embeddings_embed_a_query_asked_again_only_once(tmp_path: Path) -> None:
    # The response cache and then retrieval embed a first question: one model call.
    asked: list[str] = []

    class Queries(CountingEmbeddings):
        def embed_query(self, text: str) -> list[float]:
            asked.append(text)
            return super().embed_query(text)

    loads: list[bool] = []

    def load(settings: Settings, *, for_queries: bool = False) -> Queries:
        loads.append(for_queries)
        return Queries(size=8)

    embeddings = LazyEmbeddings(Settings(data_dir=tmp_path), load=load)
    first = embeddings.embed_query("When do backups run?")
    first.append(99.0)  # a caller's change to its copy does not reach the next caller
    assert embeddings.embed_query("When do backups run?") == first[:-1]
    assert asked == ["When do backups run?"] and loads == [True]
    for i in range(LazyEmbeddings.RECENT_QUERIES):  # the oldest is forgotten
        embeddings.embed_query(f"question {i}")
    embeddings.embed_query("When do backups run?")
    assert asked.count("When do backups run?") == 2
