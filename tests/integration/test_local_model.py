"""The bundled SmolLM2 server, started through the app's wiring: bounded answers, two
people at once, and recovery after its process is killed."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import httpx
import pytest
from langchain_core.messages import HumanMessage

from rag.chain import Answer
from rag.llm.client import ModelStatus, ResilientChatModel
from rag.llm.local import LocalLLMServer
from rag.service.components import build_engine_over, local_endpoints, start_local_server
from rag.settings import Settings
from tests.fakes import RecordingRetriever, doc

QUESTION = "What is the Fresnel lens polished with?"
LONG = "Write a long story about a lighthouse keeper and his lens, in many paragraphs."


def settings(**extra: object) -> Settings:
    extra.setdefault("llm_max_answer_tokens", 32)
    return Settings(llm_timeout_s=240, llm_first_token_timeout_s=200, llm_temperature=0.0, **extra)


def retriever() -> RecordingRetriever:
    text = "Maintenance of the Fresnel lens requires polishing with jeweller's rouge monthly."
    return RecordingRetriever(by_keyword={"lens": [doc(text, n=1)]})


@pytest.fixture(scope="module")
def server() -> Iterator[LocalLLMServer]:
    running = start_local_server(settings())  # started and warmed as the app does
    yield running
    running.stop()


def ask(engine, statuses: list[ModelStatus] | None = None) -> Answer:
    stream = engine.ask(QUESTION, within=None)
    if statuses is not None:
        stream.on_status = statuses.append
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def test_the_bundled_server_stops_at_the_answer_cap(server, monkeypatch):
    monkeypatch.setenv("RAG_LLM_MAX_ANSWER_TOKENS", "16")
    capped = Settings(llm_timeout_s=240, llm_first_token_timeout_s=200)
    (endpoint,) = local_endpoints(capped, server)
    # What ragchat sends the bundled server, asked without streaming to read its usage.
    model = ResilientChatModel(endpoints=[endpoint], max_tokens=capped.llm_max_answer_tokens)
    payload = model._payload(endpoint, [HumanMessage(LONG)], None, 16) | {"stream": False}
    payload.pop("stream_options")
    body = httpx.post(f"{server.base_url}/chat/completions", json=payload, timeout=240).json()
    assert body["usage"]["completion_tokens"] <= 16
    assert body["choices"][0]["finish_reason"] == "length"
    # And through the engine: the streamed answer ends at the cap, saying so.
    engine = build_engine_over(capped, retriever(), [endpoint])
    pieces = list(engine.ask(LONG + " " + QUESTION, within=None))
    assert 0 < len(pieces) <= 16


def test_two_questions_at_once_both_complete(server):
    engine = build_engine_over(settings(), retriever(), local_endpoints(settings(), server))
    answers: list[Answer | None] = [None, None]
    statuses: list[list[ModelStatus]] = [[], []]

    def one(n: int) -> None:
        answers[n] = ask(engine, statuses[n])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(400)
    for result in answers:
        assert result is not None and result.text.strip()
        assert result.cut is None or result.cut.startswith("stopped: the answer reached")
    waited = [s for found in statuses for s in found if s.state == "queued"]
    assert [s.ahead for s in waited] == [1]  # one of them waited for the other


def test_a_killed_bundled_model_is_restarted_and_answers(server):
    engine = build_engine_over(settings(), retriever(), local_endpoints(settings(), server))
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    server._proc.wait(10)
    statuses: list[ModelStatus] = []
    result = ask(engine, statuses)
    assert result.text.strip()
    assert server.restarts == 1 and server.running()
    assert statuses[0].state == "restarting"


def test_ctrl_c_stops_llm_serve_and_its_server(tmp_path) -> None:
    """``ragchat llm serve`` in a real process: it serves, and Ctrl-C ends it and the server."""
    import re
    import subprocess
    import sys
    import time

    from tests.integration.browser import descendants

    # A CI runner started in the background (no job control) hands its children SIGINT
    # ignored, and Python then installs no Ctrl-C handler: give the child the default back.
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "llm", "serve"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RAG_DATA_DIR": str(tmp_path)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        url = re.search(r"at (http://\S+)", lines[1])
        assert url, lines
        assert httpx.get(f"{url.group(1)}/models", timeout=10).status_code == 200
        children = [pid for pid, cmd in descendants(proc.pid) if "llama_cpp.server" in cmd]
        assert children
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "interrupted; stopped the local model server" in err
    assert "index" not in err
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in children):
        assert time.monotonic() < deadline, "the model server outlived ragchat"
        time.sleep(0.2)
