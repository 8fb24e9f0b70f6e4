"""Bounded answers, time budgets, the queue for the bundled model and its recovery.

Against the stub endpoint of ``tests/faultserver.py``: a model that loops, a server that
ignores the token cap, one that refuses a cap parameter, one that never sends a first
token; and the bundled model's endpoint (one request at a time, restarted when it died).
"""

from __future__ import annotations

import threading
import time

import pytest

from rag.chain import Answer
from rag.errors import EndpointFault, ProviderError
from rag.llm.client import STOPPED_REPEATING, ModelStatus, RepetitionGuard, endpoints
from rag.service.components import build_engine_over
from rag.settings import Settings
from tests.faultserver import Fault, FaultServer, refused_url, status
from tests.unit.test_llm_faults import QUESTION, retriever


def local_settings(**extra: object) -> Settings:
    extra.setdefault("llm_timeout_s", 5.0)
    extra.setdefault("llm_max_retries", 0)
    return Settings(llm_model="smollm2", **extra)


def answer(engine, statuses: list[ModelStatus] | None = None) -> tuple[Answer, str]:
    stream = engine.ask(QUESTION, within=None)
    if statuses is not None:
        stream.on_status = statuses.append
    shown = "".join(stream)
    assert stream.result is not None
    return stream.result, shown


def test_a_looping_answer_is_stopped_and_says_why():
    with FaultServer(default=Fault("loop", tokens=20_000)) as server:
        settings = Settings(llm_base_url=server.base_url, llm_timeout_s=10, llm_max_retries=0)
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        started = time.monotonic()
        result, shown = answer(engine)
    assert time.monotonic() - started < 5
    assert result.cut == STOPPED_REPEATING == "stopped: the model repeated itself"
    assert shown.startswith("The lens is polished with rouge every month.")
    assert len(shown) < 600, len(shown)  # a few repetitions, not 20,000 words


def test_a_server_that_ignores_the_cap_is_stopped_at_it():
    runaway = Fault("slow_stream", interval=0.0, tokens=500)
    with FaultServer(default=runaway) as server:
        settings = Settings(
            llm_base_url=server.base_url, llm_max_answer_tokens=16, llm_timeout_s=10
        )
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        result, shown = answer(engine)
    assert shown.split() == [f"word{i}" for i in range(16)]
    assert result.cut is not None and "length limit (16 tokens" in result.cut


def test_the_bundled_server_gets_max_tokens_and_other_endpoints_both_names():
    with FaultServer() as server:
        local = local_settings(llm_max_answer_tokens=50)
        build = build_engine_over(local, retriever(), endpoints(local, local_url=server.base_url))
        answer(build)
        remote = Settings(llm_base_url=server.base_url, llm_max_answer_tokens=50)
        answer(build_engine_over(remote, retriever(), endpoints(remote)))
    bundled, other = server.bodies
    assert bundled["max_tokens"] == 50 and "max_completion_tokens" not in bundled
    assert other["max_tokens"] == other["max_completion_tokens"] == 50


def test_a_400_naming_a_cap_parameter_is_sent_again_without_it_and_remembered():
    refusal = status(
        400,
        message="Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
    )
    with FaultServer([refusal]) as server:
        settings = Settings(llm_base_url=server.base_url, llm_max_retries=0, llm_timeout_s=5)
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        first, _ = answer(engine)
        answer(engine)
    assert first.text.startswith("Backups run nightly") and first.cut is None
    refused, again, later = server.bodies
    assert "max_tokens" in refused and "max_tokens" not in again
    assert again["max_completion_tokens"] == later["max_completion_tokens"]
    assert "max_tokens" not in later  # remembered for the endpoint


def test_no_first_token_in_time_says_which_budget_to_raise_and_names_the_bundled_model():
    with FaultServer(default=Fault("hang")) as server:
        settings = local_settings(llm_first_token_timeout_s=0.5, llm_timeout_s=5)
        engine = build_engine_over(
            settings, retriever(), endpoints(settings, local_url=server.base_url)
        )
        started = time.monotonic()
        with pytest.raises(ProviderError) as caught:
            answer(engine)
    assert time.monotonic() - started < 2  # the first-token budget, not the whole 5 s
    message = str(caught.value)
    assert caught.value.fault is EndpointFault.TIMEOUT
    assert message.startswith("the bundled model failed (timeout): no first token within")
    assert "raise RAG_LLM_FIRST_TOKEN_TIMEOUT_S or use a faster endpoint (RAG_LLM_BASE_URL)" in (
        message
    )
    assert "127.0.0.1" not in message


def test_a_whole_answer_timeout_says_to_raise_rag_llm_timeout_s():
    with FaultServer(default=Fault("hang")) as server:
        settings = Settings(llm_base_url=server.base_url, llm_timeout_s=1, llm_max_retries=0)
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        with pytest.raises(ProviderError, match=r"raise RAG_LLM_TIMEOUT_S or use a faster"):
            answer(engine)


def test_a_second_question_to_the_bundled_model_waits_and_is_told_its_place():
    slow = Fault("slow_stream", interval=0.05, tokens=10)
    with FaultServer(default=slow) as server:
        settings = local_settings(llm_timeout_s=20)
        engine = build_engine_over(
            settings, retriever(), endpoints(settings, local_url=server.base_url)
        )
        results: dict[str, tuple[Answer, str]] = {}
        statuses: dict[str, list[ModelStatus]] = {"first": [], "second": []}

        def ask(name: str) -> None:
            results[name] = answer(engine, statuses[name])

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        while server.in_flight == 0:
            time.sleep(0.01)
        ask("second")
        first.join(20)
    assert all(text.startswith("word0 word1") for _, text in results.values())
    assert all(a.cut is None for a, _ in results.values())  # nobody's answer was cancelled
    assert server.max_in_flight == 1
    assert [s.state for s in statuses["first"]] == ["sent"]
    queued = [s for s in statuses["second"] if s.state == "queued"]
    assert queued and queued[0].ahead == 1
    assert queued[0].message == "waiting for the model (1 question ahead)"
    assert statuses["second"][-1].state == "sent"


class DeadServer:
    """A bundled server whose process has died; starting it again serves ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.alive = False
        self.restarts = 0

    def running(self) -> bool:
        return self.alive

    def ensure_running(self, timeout_s: float = 120.0) -> str:
        if not self.alive:
            self.alive, self.restarts = True, self.restarts + 1
        return self.url


def test_a_dead_bundled_model_is_started_again_and_the_question_answered():
    with FaultServer() as server:
        dead = DeadServer(server.base_url)
        settings = local_settings()
        # The endpoint was made for the old process's port, where nothing listens now.
        found = endpoints(settings, local_url=refused_url(), local_server=dead)
        engine = build_engine_over(settings, retriever(), found)
        statuses: list[ModelStatus] = []
        result, _ = answer(engine, statuses)
    assert result.text.startswith("Backups run nightly") and result.cut is None
    assert dead.restarts == 1 and server.requests == 1  # the new URL was followed
    assert statuses[0] == ModelStatus("restarting", 0, "the bundled model")
    assert statuses[0].message == "the bundled model had stopped; starting it again"


LOOPS = [
    "The lens is polished. " * 20,
    "ab" * 200,
    "Answer: see [1]. " + "Backups run nightly at two in the morning, see [1]. " * 4,
]
FINE = [
    "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n",
    "Backups run nightly [1]. Restores are tested weekly [2]. Logs are kept a month [1]. " * 2,
    "- one\n- two\n- three\n" + "=" * 80,
    " ".join(f"word{i}" for i in range(400)),
]


@pytest.mark.parametrize("text", LOOPS)
def test_repetition_guard_stops_loops(text: str):
    guard = RepetitionGuard()
    assert any(guard.feed(text[i : i + 5]) for i in range(0, len(text), 5))


@pytest.mark.parametrize("text", FINE)
def test_repetition_guard_lets_ordinary_answers_through(text: str):
    guard = RepetitionGuard()
    assert not any(guard.feed(text[i : i + 5]) for i in range(0, len(text), 5))
