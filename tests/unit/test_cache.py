"""The response cache: the SQLite backend's contract, and ``RagService.ask`` over it.

Hits (exact, semantic), misses below the threshold, invalidation by ingestion, deletion,
prompt version and model, no hit across collections or users, TTL, follow-ups and
abstentions not cached, guardrails and budgets not bypassed, the API's ``cached`` flag.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from pydantic import Field

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.access.principal import LOCAL, Principal
from rag.api.app import create_api, serve_api
from rag.cache import ResponseCache, build_cache
from rag.cache.base import AnswerCache, Entry
from rag.cache.sqlite_cache import SqliteAnswerCache
from rag.chain import AnswerStream, ChainConfig, ChatEngine, build_chain
from rag.context import Turn
from rag.errors import (
    CacheError,
    ContentRefusedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from rag.guard.model import LazyDetector, PiiGuard
from rag.guard.moderation import BlocklistModerator
from rag.memory import ANSWERED, REFUSED, ConversationStore
from rag.prompts import BUILTIN_DIR, load_prompts
from rag.service.components import build_access, build_retriever
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore
from tests.api_fakes import Controls, FakeModels
from tests.cache_contract import AnswerCacheContract, Clock
from tests.fakes import FakeDetector, SteeredEmbeddings, WordTokenizer
from tests.ui_fakes import add

QUESTION = "When do backups run?"
API = ("127.0.0.1", 40000)


class TestSqliteAnswerCache(AnswerCacheContract):
    @pytest.fixture
    def open_backend(self, tmp_path: Path) -> Callable[[], AnswerCache]:
        return lambda: SqliteAnswerCache(tmp_path / "cache.sqlite")


# The service over the cache -------------------------------------------------------------


class Model(FakeListChatModel):
    """Answers "Backups run nightly (answer N) [1]." with N counting the calls."""

    responses: list[str] = Field(
        default_factory=lambda: [f"Backups run nightly (answer {n}) [1]." for n in range(1, 60)]
    )

    @property
    def calls(self) -> int:
        return self.i


class World:
    """A data folder with an index, a cache file and a clock; services built over them."""

    def __init__(self, root: Path, **overrides: Any) -> None:
        self.root = root
        # The scripted answers cite passages that do not support them: weakly cited answers
        # are not cached (``review_min_support``), which its own test checks.
        overrides.setdefault("review_min_support", 0.0)
        self.overrides = overrides
        self.embeddings = SteeredEmbeddings(size=32)
        self.clock = Clock()
        self.settings = Settings(data_dir=root, min_relevance=0.0, relevance_gap=1.0, **overrides)
        self.store = FaissStore(
            self.settings.resolved_index_dir, self.embeddings, model_id="fake", dimension=32
        )
        add(self.store, "a" * 64, str(root / "manual.pdf"), ["max_connections sets clients."], 5)
        add(self.store, "b" * 64, str(root / "ops.md"), ["Backups run nightly at two."], None)
        self.model = Model()
        self.services: list[RagService] = []

    def service(
        self,
        *,
        model_name: str = "fake-model",
        prompts_dir: Path | None = None,
        moderator: Any = None,
        cache: bool = True,
        pii: bool = False,
    ) -> RagService:
        settings = self.settings.model_copy(update={"prompts_dir": prompts_dir})
        prompts = load_prompts(prompts_dir)
        store, model = self.store, self.model

        def engine(mode: str | None, k: int | None, _: list[Any], memory: Any) -> ChatEngine:
            guard = PiiGuard(model, LazyDetector(FakeDetector), "mask") if pii else None
            chain = build_chain(
                guard or model, build_retriever(settings, store, mode, k), prompts, ChainConfig()
            )
            return ChatEngine(
                chain,
                prompts,
                model_name=model_name,
                memory=memory,
                moderator=moderator,
                pii=guard,
            )

        def pipeline(progress: Progress) -> IngestPipeline:
            chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
            return IngestPipeline(store, store.embeddings, chunker, batch_size=8, progress=progress)

        def open_cache() -> ResponseCache:
            backend = SqliteAnswerCache(self.root / "cache.sqlite")
            return ResponseCache(backend, self.embeddings, ttl_s=3600, clock=self.clock)

        service = RagService(
            settings,
            store,
            lambda: ConversationStore(settings.resolved_conversations_path),
            FakeModels(Controls()),
            engine,
            pipeline,
            lambda **kw: build_retriever(settings, store, **kw),
            lambda: build_access(settings),
            cache=open_cache if cache else None,
        )
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            service.close()


@pytest.fixture
def world(tmp_path: Path):
    built = World(tmp_path)
    yield built
    built.close()


def ask(service: RagService, question: str = QUESTION, caller: Principal = LOCAL, **kw: Any):
    stream = service.ask(question, caller=caller, **kw)
    text = "".join(stream)
    assert stream.result is not None
    return stream.result, text


def test_a_repeated_question_is_served_from_the_cache_without_the_model(world: World) -> None:
    service = world.service()
    first, _ = ask(service)
    assert first.served_from is None and world.model.calls == 1
    again, text = ask(service, "when do backups run")
    assert world.model.calls == 1  # the model was not asked
    assert again.served_from == "cache" and again.to_json()["cached"] is True
    assert text == again.text == first.text
    assert [c.to_json() for c in again.citations] == [c.to_json() for c in first.citations]
    assert again.question == "when do backups run"
    assert again.tokens == {"prompt": 0, "completion": 0, "estimated": False}
    assert set(again.timings) == {"first_token_ms", "total_ms"}
    assert 0 <= again.timings["first_token_ms"] < 1000


def test_a_paraphrase_is_a_semantic_hit_and_a_different_question_a_miss(world: World) -> None:
    service = world.service()
    first, _ = ask(service)
    world.embeddings.steer("How often are backups run?", QUESTION, 0.98)
    world.embeddings.steer("Where are backups kept?", QUESTION, 0.93)  # under 0.95
    hit, _ = ask(service, "How often are backups run?")
    assert hit.served_from == "cache" and hit.text == first.text and world.model.calls == 1
    miss, _ = ask(service, "Where are backups kept?")
    assert miss.served_from is None and world.model.calls == 2
    scraped = service.metrics.scrape().decode()
    assert 'ragchat_cache_hits_total{kind="semantic"} 1.0' in scraped
    assert 'ragchat_questions_total{model="fake-model"} 3.0' in scraped


def test_an_ingestion_retires_every_cached_answer(world: World) -> None:
    service = world.service()
    ask(service)
    assert ask(service)[0].served_from == "cache"
    (result,) = service.add_uploads(
        [("new.md", b"# New\n\nBackups also run at noon.\n")], caller=LOCAL
    )
    assert result.status == "added"
    after, _ = ask(service)
    assert after.served_from is None and world.model.calls == 2
    assert ask(service)[0].served_from == "cache"  # kept again for the new index
    (new,) = [d for d in service.documents(caller=LOCAL) if d.name == "new.md"]
    service.delete_document(new.id, caller=LOCAL)  # a deletion too
    assert ask(service)[0].served_from is None and world.model.calls == 3


def test_another_prompt_version_or_model_asks_the_model_again(world: World) -> None:
    ask(world.service())
    prompts = world.root / "prompts"
    prompts.mkdir()
    text = (BUILTIN_DIR / "answer.toml").read_text()
    version = load_prompts().answer.version
    (prompts / "answer.toml").write_text(
        text.replace(f"version = {version}", f"version = {version + 1}", 1)
    )
    newer = world.service(prompts_dir=prompts)
    assert newer.engine().prompt_version != world.service().engine().prompt_version
    assert ask(newer)[0].served_from is None and world.model.calls == 2
    assert ask(world.service(model_name="other-model"))[0].served_from is None
    assert world.model.calls == 3
    assert ask(world.service())[0].served_from == "cache"  # the first scope's answer stays


def test_the_retrieval_mode_and_k_are_part_of_the_scope(world: World) -> None:
    service = world.service()
    ask(service)
    assert ask(service, k=2)[0].served_from is None
    assert ask(service, mode="keyword")[0].served_from is None
    assert ask(service, k=2)[0].served_from == "cache"


def test_no_answer_crosses_collections_or_users(tmp_path: Path) -> None:
    world = World(tmp_path, auth="password")
    try:
        service = world.service()
        access = service.access
        root = access.operator()
        access.add_user(root, "alice", "member", "alice-password")
        access.add_user(root, "bob", "member", "bob-password")
        alice, bob = access.as_user("alice"), access.as_user("bob")
        for owner, name in ((alice, "alice-ops"), (bob, "bob-ops")):
            access.create_collection(owner, name)
            service.add_uploads(
                [(f"{name}.md", f"# Ops\n\nBackups of {name} run weekly.\n".encode())],
                caller=owner,
                collection=name,
            )
        own, _ = ask(service, caller=alice, collections=["alice-ops"])
        assert own.served_from is None and own.citations[0].source.name == "alice-ops.md"
        other, _ = ask(service, caller=bob, collections=["bob-ops"])
        assert other.served_from is None and world.model.calls == 2
        assert {c.source.name for c in other.citations} == {"bob-ops.md"}
        # All bob reads is bob-ops alone: the same scope, his own answer.
        mine, _ = ask(service, caller=bob)
        assert mine.served_from == "cache" and mine.text == other.text
        assert ask(service, caller=root)[0].served_from is None  # an admin's "all": another
        assert world.model.calls == 3
        assert ask(service, caller=alice, collections=["alice-ops"])[0].served_from == "cache"
        # Shared with bob, the same collection's answer is his to read...
        access.share(alice, "alice-ops", "user", "bob", "viewer")
        shared, _ = ask(service, caller=bob, collections=["alice-ops"])
        assert shared.served_from == "cache" and shared.text == own.text
        # ...and once unshared, refused before any look-up.
        access.unshare(alice, "alice-ops", "user", "bob")
        with pytest.raises(NotFoundError):
            service.ask(QUESTION, caller=bob, collections=["alice-ops"])
    finally:
        world.close()


def test_a_cached_answer_expires(world: World) -> None:
    service = world.service()
    ask(service)
    world.clock.now += 3601
    assert ask(service)[0].served_from is None and world.model.calls == 2


def test_follow_ups_are_neither_looked_up_nor_kept(world: World) -> None:
    service = world.service()
    ask(service)
    history = [Turn("user", "What is max_connections?"), Turn("assistant", "It limits [1].")]
    assert ask(service, history=history)[0].served_from is None  # OpenAI-style history
    conv = service.create_conversation(caller=LOCAL)
    ask(service, "What is max_connections?", conversation_id=conv.id)
    follow, _ = ask(service, "Is there a backup at noon?", conversation_id=conv.id)
    assert follow.served_from is None
    calls = world.model.calls
    fresh, _ = ask(service, "Is there a backup at noon?")  # the follow-up was not kept
    assert fresh.served_from is None and world.model.calls > calls


def test_the_first_question_of_a_conversation_is_served_and_stored(world: World) -> None:
    service = world.service()
    first, _ = ask(service)
    conv = service.create_conversation(caller=LOCAL)
    hit, _ = ask(service, conversation_id=conv.id)
    assert hit.served_from == "cache" and hit.message_id is not None
    (exchange,) = service.exchanges(conv.id, caller=LOCAL)
    assert exchange.answer is not None and exchange.answer.outcome == ANSWERED
    assert exchange.answer.content == first.text and exchange.answer.meta["cached"] is True
    calls = world.model.calls
    follow, _ = ask(service, "And at noon?", conversation_id=conv.id)  # goes on normally
    assert follow.served_from is None and world.model.calls > calls
    history = service.memory.history(conv.id)
    assert [t.role for t in history] == ["user", "assistant"] * 2
    assert history[1].content == first.text  # the follow-up sees the cached answer


def test_the_pages_first_answer_is_served_and_regenerate_asks_the_model(world: World) -> None:
    service = world.service()
    first, _ = ask(service)
    conv_id, question_id = service.store_question(QUESTION, caller=LOCAL)
    stream = service.retry(conv_id, question_id, caller=LOCAL)
    "".join(stream)
    assert stream.result is not None and stream.result.served_from == "cache"
    again = service.retry(conv_id, question_id, caller=LOCAL)  # Regenerate
    "".join(again)
    assert again.result is not None and again.result.served_from is None
    assert again.result.text != first.text and world.model.calls == 2
    (exchange,) = service.exchanges(conv_id, caller=LOCAL)
    assert exchange.answer is not None and exchange.answer.content == again.result.text
    latest, _ = ask(service)  # the regenerated answer replaced the kept one
    assert latest.served_from == "cache" and latest.text == again.result.text


def test_abstentions_are_not_cached(world: World) -> None:
    service = world.service()
    service.access.create_collection(LOCAL, "empty")
    first, _ = ask(service, collections=["empty"])
    assert first.abstained
    again, _ = ask(service, collections=["empty"])
    assert again.abstained and again.served_from is None


def test_a_cached_answer_passes_the_guardrails_of_now(world: World) -> None:
    ask(world.service())
    guarded = world.service(moderator=BlocklistModerator(terms=["backups"]))
    with pytest.raises(ContentRefusedError) as refused:
        ask(guarded)
    assert refused.value.stage == "question"
    conv = guarded.create_conversation(caller=LOCAL)
    with pytest.raises(ContentRefusedError):
        ask(guarded, conversation_id=conv.id)
    (exchange,) = guarded.exchanges(conv.id, caller=LOCAL)
    assert exchange.answer is not None and exchange.answer.outcome == REFUSED
    on_answers = world.service(moderator=BlocklistModerator(terms=["nightly"]))
    with pytest.raises(ContentRefusedError) as refused:
        ask(on_answers)
    assert refused.value.stage == "answer"
    assert world.model.calls == 1


def test_a_cached_answer_does_not_bypass_the_token_budget(tmp_path: Path) -> None:
    world = World(tmp_path, rate_tokens_per_day=1)
    try:
        service = world.service()
        ask(service)  # spends more than one token
        with pytest.raises(RateLimitedError):
            service.ask(QUESTION, caller=LOCAL)
    finally:
        world.close()


def _tokens(service: RagService) -> list[str]:
    return [
        line
        for line in service.metrics.scrape().decode().splitlines()
        if line.startswith("ragchat_tokens_total")
    ]


def test_a_hit_is_audited_and_counts_no_tokens(world: World) -> None:
    service = world.service()
    ask(service)
    tokens = _tokens(service)
    assert tokens
    hit, _ = ask(service)
    assert hit.served_from == "cache" and _tokens(service) == tokens
    records = [r for r in service.access.audit_log.records() if r.action == "question"]
    assert len(records) == 2
    assert records[1].detail["cited"] == [c.source.chunk_id for c in hit.citations]


def test_the_cache_can_be_off_and_cleared_by_an_admin(world: World) -> None:
    off = world.service(cache=False)
    ask(off)
    assert ask(off)[0].served_from is None and off.clear_cache(caller=LOCAL) == 0
    service = world.service()
    ask(service)
    assert service.clear_cache(caller=LOCAL) == 1
    assert ask(service)[0].served_from is None
    viewer = Principal("v", "v", LOCAL.role, read_only=True)
    with pytest.raises(PermissionDeniedError):
        service.clear_cache(caller=viewer)


class BrokenCache:
    def get(self, scope: str, key: str, now: float) -> str | None:
        raise CacheError("broken.sqlite", "disk I/O error")

    def recent(self, scope: str, limit: int, now: float) -> list[Any]:
        raise CacheError("broken.sqlite", "disk I/O error")

    def put(self, scope: str, key: str, entry: Entry, now: float) -> None:
        raise CacheError("broken.sqlite", "disk I/O error")

    def clear(self) -> int:
        return 0

    def close(self) -> None:
        return None


def test_a_failing_cache_never_fails_a_question(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    service = world.service()
    service._cache_factory = lambda: ResponseCache(BrokenCache(), world.embeddings)
    with caplog.at_level(logging.WARNING):
        first, _ = ask(service)
    assert first.served_from is None and "disk I/O error" in caplog.text


def test_the_settings_choose_the_backend(tmp_path: Path) -> None:
    from rag.cache.redis_cache import RedisAnswerCache

    embeddings = SteeredEmbeddings(size=32)
    assert build_cache(Settings(data_dir=tmp_path, cache=False), embeddings) is None
    local = build_cache(Settings(data_dir=tmp_path), embeddings)
    assert local is not None and isinstance(local.backend, SqliteAnswerCache)
    assert local.backend.path == tmp_path / "cache.sqlite" and local.similarity == 0.95
    local.close()
    shared = build_cache(
        Settings(data_dir=tmp_path, queue_url="redis://127.0.0.1:9/0", cache_scan=50),
        embeddings,
    )  # no connection is made until it is used
    assert shared is not None and isinstance(shared.backend, RedisAnswerCache)
    assert shared.scan == 50
    shared.close()


# The adapters ---------------------------------------------------------------------------


def _sse(body: str) -> list[tuple[str, Any]]:
    out = []
    for block in body.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out.append((name, json.loads(data) if data.startswith(("{", '"')) else data))
    return out


def test_the_api_says_which_answers_came_from_the_cache(world: World) -> None:
    service = world.service()
    client = TestClient(serve_api(create_api(lambda: service)), client=API)
    first = client.post("/api/v1/ask", json={"question": QUESTION})
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False
    again = client.post("/api/v1/ask", json={"question": QUESTION})
    assert again.json()["cached"] is True and again.json()["answer"] == first.json()["answer"]
    assert again.json()["citations"] == first.json()["citations"]
    streamed = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
    done = [data for name, data in _sse(streamed.text) if name == "done"]
    assert done and done[0]["cached"] is True
    openai = client.post(
        "/api/v1/chat/completions",
        json={"model": "ragchat", "messages": [{"role": "user", "content": QUESTION}]},
    )
    assert openai.status_code == 200, openai.text
    assert openai.json()["ragchat"]["cached"] is True
    assert openai.json()["usage"]["total_tokens"] == 0
    assert world.model.calls == 1


def test_the_terminal_says_an_answer_came_from_the_cache(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli.chat import _stream_to_terminal

    service = world.service()
    ask(service)
    stream: AnswerStream = service.ask(QUESTION, caller=LOCAL)
    _stream_to_terminal(stream)
    captured = capsys.readouterr()
    assert "Backups run nightly" in captured.out and "[from the cache" in captured.err


def test_the_index_version_names_the_folder_and_the_published_state(tmp_path: Path) -> None:
    from rag.cache.answers import index_version

    def store_in(name: str) -> FaissStore:
        return FaissStore(tmp_path / name, SteeredEmbeddings(size=32), model_id="f", dimension=32)

    one, two = store_in("one"), store_in("two")
    assert index_version(one) is None  # nothing published: nothing is cached
    add(one, "a" * 64, "/a.md", ["alpha"], None)
    add(two, "a" * 64, "/a.md", ["alpha"], None)
    first = index_version(one)
    assert first is not None and "g000001@" in first
    assert first != index_version(two)  # the same generation of another index
    assert index_version(store_in("one")) == first  # another process reading it
    add(one, "b" * 64, "/b.md", ["beta"], None)
    assert index_version(one) not in (None, first)


def test_ragchat_cache_clear_empties_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rag.cli import main
    from tests.cache_contract import SCOPE, answer

    cache = ResponseCache(SqliteAnswerCache(tmp_path / "cache.sqlite"), SteeredEmbeddings(size=32))
    cache.keep(cache.lookup(QUESTION, SCOPE), answer())
    cache.close()
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path))
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out.strip() == "removed 1 cached answer"
    assert SqliteAnswerCache(tmp_path / "cache.sqlite").count() == 0
    monkeypatch.setenv("RAG_CACHE", "false")
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out.strip() == "the cache is off"


def test_a_served_answer_is_traced_as_a_question_from_the_cache() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rag.cache.codec import dump_answer, load_answer
    from tests.cache_contract import answer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    prompts = load_prompts()
    chain = build_chain(Model(), build_retriever_stub(), prompts, ChainConfig())
    engine = ChatEngine(chain, prompts, model_name="m", tracer=provider.get_tracer("test"))
    stream = engine.serve(load_answer(dump_answer(answer()), QUESTION))
    assert "".join(stream) == answer().text
    (span,) = exporter.get_finished_spans()
    assert span.name == "ragchat.question"
    assert span.attributes is not None and span.attributes["ragchat.served_from"] == "cache"
    assert span.attributes["ragchat.model"] == "smollm2"  # the model that wrote it


def build_retriever_stub() -> Any:
    from tests.fakes import RecordingRetriever

    return RecordingRetriever(by_keyword={})


def test_weakly_cited_answers_are_not_cached(tmp_path: Path) -> None:
    world = World(tmp_path, review_min_support=0.3)
    world.model.responses = ["Penguins prefer cold water [1]."] * 5  # the passage does not say
    service = world.service()
    ask(service)
    again, _ = ask(service)
    assert world.model.calls == 2 and again.served_from is None


def test_a_rated_down_answer_is_not_served_again_until_reviewed(world: World) -> None:
    service = world.service()
    conversation = service.create_conversation(caller=LOCAL)
    stream = service.ask(QUESTION, caller=LOCAL, conversation_id=conversation.id)
    "".join(stream)
    assert stream.result is not None and stream.result.message_id is not None
    hit, _ = ask(service)
    assert hit.served_from == "cache" and world.model.calls == 1
    service.set_feedback(stream.result.message_id, 0, caller=LOCAL)  # thumbs down
    fresh, _ = ask(service)
    assert fresh.served_from is None and world.model.calls == 2
    ask(service)  # still disputed: the model again, never the rated-down answer
    assert world.model.calls == 3


def test_questions_holding_personal_data_are_not_cached(world: World) -> None:
    service = world.service(pii=True)
    question = "When do backups run for ann@example.com?"
    ask(service, question)
    again, _ = ask(service, question)
    assert again.served_from is None and world.model.calls == 2
    ask(service)
    hit, _ = ask(service)  # without personal data the cache works as ever
    assert hit.served_from == "cache"
