"""Model endpoint faults, end to end through the chat engine, against a stub server.

Each fault of ``tests/faultserver.py`` is asked once without and once with a fallback
endpoint. The user must get either the fallback's answer (naming the model that wrote it),
an answer marked as cut (when part of it was already shown), or one ``ProviderError``
line naming the endpoint and the fault, always within RAG_LLM_TIMEOUT_S + 1 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from rag.chain import Answer
from rag.context import Turn
from rag.errors import EndpointFault, ProviderError
from rag.llm.client import endpoints, retry_after_s
from rag.memory import ConversationStore
from rag.service.components import build_engine_over
from rag.settings import Settings
from tests.fakes import RecordingRetriever, doc
from tests.faultserver import ANSWER, OK, Fault, FaultServer, ok, refused_url, status

TIMEOUT_S = 2.0
FULL = "".join(ANSWER)
QUESTION = "When do backups run?"


@dataclass
class Outcome:
    answer: Answer | None
    error: ProviderError | None
    shown: str  # what the user saw stream by
    elapsed: float
    primary: int  # chat completion requests each endpoint received
    fallback: int


def retriever() -> RecordingRetriever:
    return RecordingRetriever(by_keyword={"backups": [doc("Backups run nightly at two.", n=3)]})


def ask(
    primary: Sequence[Fault] = (),
    default: Fault = OK,
    *,
    fallback: Fault | None = None,
    fallback_faults: Sequence[Fault] = (),
    refused: bool = False,
    buffered: bool = False,
    history: Sequence[Turn] = (),
    retries: int = 1,
    timeout_s: float = TIMEOUT_S,
    memory: ConversationStore | None = None,
) -> Outcome:
    with (
        FaultServer(primary, default) as first,
        FaultServer(fallback_faults, fallback or OK) as second,
    ):
        settings = Settings(
            llm_base_url=refused_url() if refused else first.base_url,
            llm_model="primary-model",
            llm_fallback_base_url=second.base_url if fallback else None,
            llm_fallback_model="fallback-model",
            llm_timeout_s=timeout_s,
            llm_max_retries=retries,
        )
        engine = build_engine_over(settings, retriever(), endpoints(settings), memory)
        pieces: list[str] = []
        answer, error = None, None
        started = time.monotonic()
        try:
            if memory is not None:
                stream = engine.ask_in(
                    memory.create(owner="local").id, QUESTION, buffered=buffered, within=None
                )
            else:
                stream = engine.ask(QUESTION, history, buffered=buffered, within=None)
            for piece in stream:
                pieces.append(piece)
            answer = stream.result
        except ProviderError as exc:
            error = exc
        elapsed = time.monotonic() - started
        return Outcome(answer, error, "".join(pieces), elapsed, first.requests, second.requests)


def assert_one_line_error(out: Outcome, fault: EndpointFault) -> ProviderError:
    assert out.answer is None and out.error is not None, out
    message = str(out.error)
    assert "\n" not in message and "Traceback" not in message
    assert out.error.fault == fault, message
    assert message.startswith("model endpoint http://127.0.0.1:"), message
    assert f"failed ({fault}" in message
    assert out.elapsed <= TIMEOUT_S + 1, out.elapsed
    return out.error


def a_day_ahead() -> str:
    # Far enough ahead that the date is still in the future when a slow suite reaches the test.
    return format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)


# fault at the primary on every request, the category it is reported as, and the requests
# the primary receives with RAG_LLM_MAX_RETRIES=1 (retried only where a retry can help)
FAULTS = [
    pytest.param(Fault("hang"), EndpointFault.TIMEOUT, 1, id="hang"),
    pytest.param(Fault("slow_headers"), EndpointFault.TIMEOUT, 1, id="slow-headers"),
    pytest.param(status(500), EndpointFault.SERVER_ERROR, 2, id="http-500"),
    pytest.param(status(429, "20"), EndpointFault.RATE_LIMITED, 1, id="429-retry-after-20"),
    pytest.param(status(429, a_day_ahead()), EndpointFault.RATE_LIMITED, 1, id="429-retry-date"),
    pytest.param(status(401), EndpointFault.CLIENT_ERROR, 1, id="http-401"),
    pytest.param(status(404), EndpointFault.CLIENT_ERROR, 1, id="http-404"),
    pytest.param(Fault("drop", after=0), EndpointFault.STREAM_DROPPED, 2, id="drop-before-1st"),
    pytest.param(Fault("malformed_sse"), EndpointFault.MALFORMED, 1, id="malformed-sse"),
    pytest.param(Fault("truncated_json"), EndpointFault.MALFORMED, 1, id="truncated-json"),
    pytest.param(Fault("invalid_json"), EndpointFault.MALFORMED, 1, id="invalid-json"),
    pytest.param(Fault("truncated_json_body"), EndpointFault.MALFORMED, 1, id="truncated-body"),
    pytest.param(Fault("empty"), EndpointFault.EMPTY, 1, id="empty"),
    pytest.param(Fault("error_event"), EndpointFault.SERVER_ERROR, 1, id="error-event"),
]


@pytest.mark.parametrize(("fault", "category", "requests"), FAULTS)
def test_fault_without_fallback_is_one_clear_error(fault, category, requests):
    out = ask(default=fault)
    error = assert_one_line_error(out, category)
    assert out.primary == requests
    assert out.shown == ""
    if fault.retry_after:
        assert "Retry-After" in error.reason and out.elapsed < 1.0


@pytest.mark.parametrize(("fault", "category", "requests"), FAULTS)
def test_fault_with_fallback_is_answered_by_the_fallback(fault, category, requests):
    out = ask(default=fault, fallback=ok(usage=False, model=None))
    assert out.error is None, out.error
    assert out.answer is not None and out.answer.text == FULL and out.answer.cut is None
    # The fallback reported neither usage nor a model name: the answer names its model.
    assert out.answer.model == "fallback-model"
    assert (out.primary, out.fallback) == (requests, 1)
    assert out.elapsed <= TIMEOUT_S + 1, out.elapsed
    if category is EndpointFault.TIMEOUT:  # the primary had half of the time, not all
        assert TIMEOUT_S / 2 - 0.1 <= out.elapsed <= TIMEOUT_S / 2 + 1.0, out.elapsed


def test_refused_endpoint_is_retried_then_reported():
    out = ask(refused=True)
    error = assert_one_line_error(out, EndpointFault.UNREACHABLE)
    assert "cannot connect" in str(error)
    assert error.failures[0].attempts == 2 and "(2 attempts)" in str(error)


def test_refused_endpoint_falls_back():
    out = ask(refused=True, fallback=ok(model="served-fallback"))
    assert out.answer is not None and out.answer.text == FULL
    assert out.answer.model == "served-fallback"  # as the fallback reports it
    assert out.elapsed < 2.5  # two quick refusals and one backoff, not the time limit


def test_both_endpoints_failing_are_named_in_one_line():
    out = ask(default=Fault("hang"), fallback=status(500))
    error = assert_one_line_error(out, EndpointFault.TIMEOUT)
    assert [f.fault for f in error.failures] == [
        EndpointFault.TIMEOUT,
        EndpointFault.SERVER_ERROR,
    ]
    assert "also failed (server_error, HTTP 500)" in str(error)
    assert out.fallback == 2  # the 500 was retried once


def test_retry_after_that_fits_is_honoured():
    out = ask([status(503, "1")], fallback=None, timeout_s=3.0)
    assert out.answer is not None and out.answer.text == FULL
    assert out.primary == 2
    assert 1.0 <= out.elapsed <= 3.0


def test_drop_after_tokens_while_streaming_cuts_the_answer():
    out = ask(default=Fault("drop", after=3), fallback=OK)
    assert out.error is None and out.answer is not None
    assert out.shown == "Backups run nightly "
    assert out.answer.text.startswith("Backups run nightly")  # [1] matched by ragchat
    assert out.answer.cut is not None and "stream_dropped" in out.answer.cut
    assert "after 3 tokens" in out.answer.cut
    assert out.answer.to_json()["cut"] == out.answer.cut
    assert out.answer.model == "stub-model"  # the primary wrote what was shown
    assert (out.primary, out.fallback) == (1, 0)  # the fallback cannot continue it


def test_drop_after_tokens_when_buffered_falls_back():
    out = ask(default=Fault("drop", after=3), fallback=ok(model="served-fallback"), buffered=True)
    assert out.answer is not None and out.answer.text == FULL and out.answer.cut is None
    assert out.answer.model == "served-fallback"
    assert (out.primary, out.fallback) == (1, 1)  # not retried: the fallback is tried


def test_drop_after_tokens_when_buffered_without_fallback_is_an_error():
    out = ask(default=Fault("drop", after=3), buffered=True)
    error = assert_one_line_error(out, EndpointFault.STREAM_DROPPED)
    assert "after 3 tokens" in str(error)


def test_slow_stream_is_cut_at_the_time_limit():
    out = ask(default=Fault("slow_stream", interval=0.3))
    assert out.answer is not None and out.answer.cut is not None
    assert "timeout" in out.answer.cut
    assert out.shown.startswith("word0 word1 ")
    assert TIMEOUT_S - 0.1 <= out.elapsed <= TIMEOUT_S + 1, out.elapsed


def test_slow_stream_when_buffered_is_a_timeout_within_the_limit():
    out = ask(default=Fault("slow_stream", interval=0.3), fallback=OK, buffered=True)
    error = assert_one_line_error(out, EndpointFault.TIMEOUT)
    assert "not tried: no time left" in str(error)


def test_the_time_limit_covers_the_condense_step_too():
    history = [Turn("user", "Tell me about backups"), Turn("assistant", "Nightly [1].")]
    out = ask(default=Fault("hang"), fallback=OK, history=history)
    assert out.answer is not None and out.answer.text == FULL
    assert (out.primary, out.fallback) == (2, 2)  # condense and answer, each fell back
    assert out.elapsed <= TIMEOUT_S + 0.5, out.elapsed


def test_a_drop_while_condensing_falls_back_rather_than_cutting():
    history = [Turn("user", "Tell me about backups"), Turn("assistant", "Nightly [1].")]
    out = ask([Fault("drop", after=2)], fallback=OK, history=history)
    assert out.answer is not None and out.answer.cut is None and out.answer.text == FULL
    assert (out.primary, out.fallback) == (2, 1)


def test_a_cut_answer_is_stored_with_its_note(tmp_path: Path):
    memory = ConversationStore(tmp_path / "c.db")
    out = ask(default=Fault("drop", after=3), memory=memory)
    assert out.answer is not None and out.answer.message_id is not None
    (conversation,) = memory.conversations(owner="local")
    stored = memory.messages(conversation.id)[-1]
    assert stored.content == out.answer.text and stored.content.startswith("Backups run nightly")
    assert stored.meta["cut"] == out.answer.cut


def test_usage_and_model_come_from_the_endpoint_that_answered():
    out = ask()
    assert out.answer is not None and out.answer.model == "stub-model"
    assert out.answer.tokens == {
        "prompt": 50,
        "completion": 7,
        "estimated": False,
        "by_model": {"stub-model": {"prompt": 50, "completion": 7}},
    }
    out = ask(default=ok(usage=False, model=None))
    assert out.answer is not None and out.answer.model == "primary-model"
    assert out.answer.tokens["estimated"] is True


def test_condense_asks_for_few_tokens_and_the_answer_for_the_configured_cap():
    history = [Turn("user", "Tell me about backups"), Turn("assistant", "Nightly [1].")]
    with FaultServer() as server:
        settings = Settings(llm_base_url=server.base_url, llm_timeout_s=TIMEOUT_S)
        engine = build_engine_over(settings, retriever(), endpoints(settings))
        list(engine.ask(QUESTION, history, within=None))
    condense, answer = server.bodies
    # Another endpoint than the bundled one gets both names of the cap (see rag/llm.py).
    assert condense["max_completion_tokens"] == condense["max_tokens"] == 96
    assert answer["max_completion_tokens"] == answer["max_tokens"] == settings.llm_max_answer_tokens
    assert answer["stop"] and answer["stream"] is True


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "20"}, 20.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header(headers, expected):
    assert retry_after_s(headers) == expected


def test_retry_after_http_date():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = {"retry-after": format_datetime(now + timedelta(seconds=120), usegmt=True)}
    assert retry_after_s(header, now) == 120.0


@pytest.mark.parametrize(("bundled", "most_at_once"), [(True, 1), (False, 2)])
def test_two_questions_at_once_both_complete_and_the_bundled_model_gets_one_at_a_time(
    bundled: bool, most_at_once: int
) -> None:
    # The bundled llama.cpp server has one slot and cancels the running answer when a second
    # request arrives, so ragchat queues its questions; other endpoints get them at once.
    slow = Fault("slow_stream", interval=0.05, tokens=12)
    with FaultServer(default=slow) as server:
        settings = Settings(llm_model="smollm2", llm_timeout_s=20, llm_max_retries=0)
        if bundled:
            found = endpoints(settings, local_url=server.base_url)
        else:
            found = endpoints(settings.model_copy(update={"llm_base_url": server.base_url}))
        engine = build_engine_over(settings, retriever(), found, None)
        answers: list[Answer | None] = [None, None]

        def one(n: int) -> None:
            stream = engine.ask(QUESTION, within=None)
            for _ in stream:
                pass
            answers[n] = stream.result

        threads = [threading.Thread(target=one, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert all(a is not None and a.text and a.cut is None for a in answers), answers
    assert server.requests == 2
    assert server.max_in_flight == most_at_once


def test_an_endpoint_gets_at_most_its_limit_of_requests_at_once() -> None:
    """RAG_LLM_MAX_CONCURRENT bounds one endpoint for the whole process (batches, people)."""
    slow = Fault("slow_stream", interval=0.03, tokens=6)
    with FaultServer(default=slow) as server:
        settings = Settings(
            llm_model="m", llm_timeout_s=30, llm_max_retries=0, llm_max_concurrent=2,
            llm_base_url=server.base_url,
        )  # fmt: skip
        engines = [
            build_engine_over(settings, retriever(), endpoints(settings), None) for _ in range(2)
        ]
        answers: list[Answer | None] = [None] * 6

        def one(n: int) -> None:
            stream = engines[n % 2].ask(
                QUESTION, within=None
            )  # two engines: one limit per endpoint
            for _ in stream:
                pass
            answers[n] = stream.result

        threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert all(a is not None and a.text for a in answers), answers
    assert server.requests == 6 and server.max_in_flight == 2


def test_an_api_key_that_cannot_be_sent_is_a_setting_error_not_a_traceback(monkeypatch):
    from rag.errors import ConfigError
    from rag.settings import load_settings

    monkeypatch.setenv("RAG_LLM_API_KEY", "sk-clé")
    with pytest.raises(ConfigError, match=r"RAG_LLM_API_KEY.*printable ASCII"):
        load_settings()
