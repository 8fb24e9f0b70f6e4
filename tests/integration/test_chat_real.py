"""The chat engine with real parts: the bundled SmolLM2 behind llama.cpp's OpenAI-compatible
server on 127.0.0.1, the real embedding model and a real index."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.cli import main
from rag.context import Turn
from rag.errors import ProviderError
from rag.llm.client import endpoints
from rag.llm.local import LocalLLMServer, bundled_model_path
from rag.service.components import build_engine, build_store
from rag.settings import Settings
from rag.store.faiss import FaissStore
from tests.docgen import make_markdown, make_pdf

PAGES = [
    "Chapter one explains the history of lighthouses along the northern coast.",
    "The Skerryvore lighthouse keeper recorded wind speeds every four hours in a logbook.",
    "Maintenance of the Fresnel lens requires polishing with jeweller's rouge once a month.",
]


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LocalLLMServer]:
    with LocalLLMServer(bundled_model_path(), n_ctx=4096) as server:
        yield server


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    make_pdf(folder / "lighthouses.pdf", PAGES, headings=["History", "Keepers", "Lenses"])
    make_markdown(
        folder / "backups.md",
        [("Backups", "Nightly backups are written to the vault at two in the morning.")],
    )
    index = folder / "index"
    assert main(["ingest", str(folder), "--index", str(index)]) == 0
    return index


# RAG_LLM_TIMEOUT_S bounds a whole question (condense step and answer included); the bundled
# model on a small CI machine needs more than the default 30 s for a follow-up.
SLOW_CPU_TIMEOUT_S = "120"


def settings_for(index: Path, base_url: str, **extra: object) -> Settings:
    extra.setdefault("llm_timeout_s", float(SLOW_CPU_TIMEOUT_S))
    return Settings(index_dir=index, llm_base_url=base_url, llm_temperature=0.0, **extra)


@pytest.fixture(scope="module")
def store(index: Path) -> FaissStore:
    return build_store(Settings(index_dir=index))


def test_answers_stream_and_citations_map_to_real_chunks(llm_server, index, store):
    settings = settings_for(index, llm_server.base_url)
    engine = build_engine(settings, store, endpoints(settings))
    stored = {c.chunk_id: c for c in store.all_chunks()}
    citations = []
    for question in (
        "How often did the lighthouse keeper record wind speeds?",
        "When are the nightly backups written?",
        "What is the Fresnel lens polished with?",
    ):
        stream = engine.ask(question, within=None)
        pieces = list(stream)
        assert len(pieces) > 1, "the answer did not stream"
        answer = stream.result
        assert answer is not None and answer.text and not answer.abstained
        assert answer.model == "smollm2" and answer.prompt_version == "answer@v3+delimit"
        shown = {s.chunk_id for s in answer.sources}
        for citation in answer.citations:
            chunk = stored[citation.source.chunk_id]
            assert citation.source.chunk_id in shown
            assert (chunk.text, chunk.page, chunk.source) == (
                citation.source.text,
                citation.source.page,
                citation.source.source,
            )
            assert f"[{citation.n}]" in answer.text
        citations.extend(answer.citations)
    assert citations, "the model cited nothing in three answers"


def test_follow_up_resolves_against_the_previous_turn(llm_server, index, store):
    settings = settings_for(index, llm_server.base_url)
    engine = build_engine(settings, store, endpoints(settings))
    first = engine.ask("What does the lighthouse keeper write in the logbook?", within=None)
    list(first)
    assert first.result is not None
    history = [Turn("user", first.result.question), Turn("assistant", first.result.text)]
    follow = engine.ask("How often does he do that?", history, within=None)
    list(follow)
    assert follow.result is not None
    top = follow.result.sources[0]
    assert top.page == 2 and "every four hours" in top.text
    assert "keeper" in follow.result.standalone.lower()


def test_irrelevant_question_abstains(llm_server, index, store):
    settings = settings_for(index, llm_server.base_url)
    stream = build_engine(settings, store, endpoints(settings)).ask(
        "Who won the football world cup in 1998?", within=None
    )
    text = "".join(stream)
    assert stream.result is not None and stream.result.abstained
    assert "do not cover" in text and stream.result.citations == []


def test_ask_cli_json_through_the_self_started_local_model(index, capsys, monkeypatch):
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", SLOW_CPU_TIMEOUT_S)
    code = main(["ask", "When are the nightly backups written?", "--json", "--index", str(index)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {"answer", "citations", "prompt_version", "model", "timings", "tokens"}
    assert set(data["timings"]) == {"retrieval_ms", "first_token_ms", "total_ms"}
    assert data["timings"]["first_token_ms"] <= data["timings"]["total_ms"]
    assert data["answer"]
    for c in data["citations"]:
        assert set(c) >= {"n", "source", "page", "chunk_id", "text"}


def test_endpoint_down_is_one_clear_error(index, store):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    settings = settings_for(
        index, f"http://127.0.0.1:{port}/v1", llm_max_retries=1, llm_timeout_s=30.0
    )
    engine = build_engine(settings, store, endpoints(settings))
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        list(engine.ask("When are the nightly backups written?", within=None))
    assert f"127.0.0.1:{port}" in str(err.value) and "cannot connect" in str(err.value)
    assert time.monotonic() - started < settings.llm_timeout_s


def test_hanging_endpoint_times_out_within_the_timeout(index, store):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_hang() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])  # never answers
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_and_hang, daemon=True)
    thread.start()
    try:
        settings = settings_for(
            index, f"http://127.0.0.1:{port}/v1", llm_timeout_s=3.0, llm_max_retries=1
        )
        engine = build_engine(settings, store, endpoints(settings))
        started = time.monotonic()
        with pytest.raises(ProviderError, match="timeout"):
            list(engine.ask("When are the nightly backups written?", within=None))
        elapsed = time.monotonic() - started
        assert elapsed < 3.0 + 1.0, elapsed  # the whole question, retries included
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_fallback_endpoint_answers_when_the_first_is_down(llm_server, index, store):
    settings = settings_for(
        index,
        "http://127.0.0.1:9/v1",
        llm_fallback_base_url=llm_server.base_url,
        llm_max_retries=0,
    )
    stream = build_engine(settings, store, endpoints(settings)).ask(
        "When are the nightly backups written?", within=None
    )
    assert "".join(stream)
    assert stream.result is not None and not stream.result.abstained


def test_local_server_ignores_a_port_meant_for_the_web_app(monkeypatch):
    monkeypatch.setenv("PORT", "1")  # what `make run PORT=...` or a platform may export
    with LocalLLMServer(bundled_model_path(), n_ctx=1024) as server:
        assert server.port != 1
        assert httpx.get(f"{server.base_url}/models", timeout=5).status_code == 200


def test_terminal_chat_remembers_the_conversation(llm_server, index, tmp_path):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "RAG_DATA_DIR": str(tmp_path),
        "RAG_LLM_BASE_URL": llm_server.base_url,
        "RAG_LLM_TEMPERATURE": "0",
        "RAG_LLM_TIMEOUT_S": SLOW_CPU_TIMEOUT_S,
    }
    done = subprocess.run(
        [sys.executable, "-m", "rag.cli", "chat", "--index", str(index)],
        input="What does the lighthouse keeper write in the logbook?\n"
        "How often does he do that?\n/quit\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ragchat> ") == 2
    from rag.memory import ConversationStore

    memory = ConversationStore(tmp_path / "conversations.db")
    (conversation,) = memory.conversations(owner="local")
    turns = memory.history(conversation.id)
    assert [t.role for t in turns] == ["user", "assistant"] * 2
    assert turns[2].content == "How often does he do that?"
    assert conversation.title.startswith("What does the lighthouse keeper")
    # Whether the 135M model cites (or its answer is close enough to a passage for ragchat to
    # match one) varies with the CPU even at temperature 0, so the terminal is held to what was
    # stored: every stored citation is printed under its answer, and none is made up.
    answers = [m for m in memory.messages(conversation.id) if m.role == "assistant"]
    cited = [c for m in answers for c in m.meta.get("citations", [])]
    assert done.stdout.count("\nSources:") == sum(bool(m.meta.get("citations")) for m in answers)
    for c in cited:
        assert Path(c["source"]).name in done.stdout


# -- `ragchat ask` against a misbehaving endpoint (tests/faultserver.py) -------------------


def test_ask_json_falls_back_when_the_stream_drops_midway(index, capsys, monkeypatch):
    from tests.faultserver import Fault, FaultServer, ok

    with (
        FaultServer(default=Fault("drop", after=3)) as primary,
        FaultServer(default=ok(usage=False, model=None)) as fallback,
    ):
        monkeypatch.setenv("RAG_LLM_BASE_URL", primary.base_url)
        monkeypatch.setenv("RAG_LLM_FALLBACK_BASE_URL", fallback.base_url)
        monkeypatch.setenv("RAG_LLM_FALLBACK_MODEL", "fallback-model")
        monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "5")
        q = "When are the nightly backups written?"
        code = main(["ask", q, "--json", "--index", str(index)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out)
    # Nothing was shown before the end, so the fallback wrote the whole answer.
    assert data["answer"].startswith("Backups run nightly at two")
    assert data["model"] == "fallback-model" and data["cut"] is None
    assert (primary.requests, fallback.requests) == (1, 1)


def test_ask_streamed_drop_shows_what_arrived_and_says_it_was_cut(index, capsys, monkeypatch):
    from tests.faultserver import Fault, FaultServer

    with FaultServer(default=Fault("drop", after=3)) as primary:
        monkeypatch.setenv("RAG_LLM_BASE_URL", primary.base_url)
        monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "5")
        code = main(["ask", "When are the nightly backups written?", "--index", str(index)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("Backups run nightly")
    note = [line for line in captured.err.splitlines() if line.startswith("[answer cut:")]
    assert len(note) == 1 and "stream_dropped" in note[0] and primary.base_url in note[0]


def test_ask_malformed_stream_is_one_error_line(index, capsys, monkeypatch):
    from tests.faultserver import Fault, FaultServer

    with FaultServer(default=Fault("truncated_json")) as primary:
        monkeypatch.setenv("RAG_LLM_BASE_URL", primary.base_url)
        monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "5")
        started = time.monotonic()
        code = main(["ask", "When are the nightly backups written?", "--index", str(index)])
        elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert errors[0].startswith(f"error: model endpoint {primary.base_url} failed (malformed)")
    assert elapsed < 5 + 1 + 10  # the time limit, plus loading the embedding model
