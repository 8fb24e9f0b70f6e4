"""Chat models: every answer goes through an OpenAI-compatible endpoint.

``ResilientChatModel`` is our own small client for ``/v1/chat/completions`` (always
streamed, over httpx). We write it rather than use ``ChatOpenAI(max_retries=...)`` with
``with_fallbacks`` because neither the SDK's retries nor langchain's fallbacks know about a
whole-question deadline or a stream that drops midway: they gave a hanging endpoint a fresh
timeout per attempt, slept through any ``Retry-After``, let a slow stream run on, reported a
dropped stream as "cannot connect" without trying the fallback, and let malformed events
escape as raw tracebacks.

The policy, for one question (``RAG_LLM_TIMEOUT_S`` bounds all of it). The endpoints are
tried in the order ``rag.llm.router.Router.plan`` gives (the tier's replicas, best first,
then the fallbacks; endpoints whose circuit is open left out), and each request's outcome
is told to its endpoint's state:

- The deadline is set by the caller (``ChatEngine`` passes it through the runnable config
  under ``DEADLINE_KEY``) or, without one, starts when the model is called. Every wait is
  capped by the time left: connecting, the first token, each later chunk, backoff and
  ``Retry-After``. Each request runs in a worker thread, so the deadline holds even for a
  server that trickles headers or tokens (httpx's timeouts are per read, not per request).
- Until its first token, endpoint *i* of *n* may use ``1/(n-i)`` of the time left, so a
  hanging primary leaves the fallback at least half of the time. Once tokens flow, the
  stream may run until the deadline.
- Retried on the same endpoint (at most ``RAG_LLM_MAX_RETRIES`` times, with exponential
  backoff, or after ``Retry-After`` on 429/503): unreachable, timeout, 429, 5xx, 408, 409
  and a stream that drops before its first token. A ``Retry-After`` or backoff that does
  not fit in the endpoint's time goes straight to the next endpoint (or the error).
- Not retried, but sent to the fallback: other 4xx (bad request, key, unknown model: the
  fallback has its own key and model), malformed streams, empty completions and streams
  that drop after some tokens.
- "Shown to the user": when the model is streamed (``_stream`` without ``BUFFERED_KEY``),
  tokens go out as they arrive, and a failure after the first one raises
  ``AnswerCutError`` so the caller can end the answer with what arrived. When buffered
  (``invoke``, or ``BUFFERED_KEY`` set), each attempt is held until it completes, so any
  failure falls back.
- When every endpoint failed: one ``ProviderError`` line naming each endpoint and its fault.
- The final chunk's ``response_metadata`` names the model that wrote the answer (as the
  endpoint reports it, else the endpoint's configured model) and the endpoint.

Two budgets: ``RAG_LLM_FIRST_TOKEN_TIMEOUT_S`` bounds each request's wait for its first
token (from the moment it is sent, after any wait in the queue below), and
``RAG_LLM_TIMEOUT_S`` the whole question. A timeout's message says which to raise, or to
use a faster endpoint.

Bounded answers. Servers disagree on the name of the token cap: OpenAI reads
``max_completion_tokens`` (``max_tokens`` is deprecated there and refused with a 400 by its
reasoning models); llama-cpp-python's server reads only ``max_tokens`` and silently ignores
``max_completion_tokens`` (a cap of 5 once produced 1,566 tokens); Ollama's OpenAI
compatibility and llama.cpp's own server read ``max_tokens``; vLLM reads both. So the
bundled server gets ``max_tokens`` alone (``Endpoint.cap_params``) and any other endpoint
both; a 400 whose message names one of them drops that one for the endpoint (remembered
for the process) and the request is sent again at once, without counting as a retry. As a
last guard the stream itself is stopped once it has produced more pieces than the cap, and
a ``RepetitionGuard`` stops a stream that loops. An answer stopped either way, or by the
server at its cap (``finish_reason`` ``length``), ends normally and says why in the final
chunk's ``response_metadata["stopped"]``.

Queue. An endpoint with ``max_concurrent`` (the bundled server: 1) admits requests first
come, first served; while a request waits, the ``on_status`` callback (runnable config key
``STATUS_KEY``) receives a ``ModelStatus`` saying how many questions are ahead. No request
ever cancels another.

Recovery. An endpoint with a ``server`` (the bundled model) asks it for its URL before each
request; a server whose process died is started again there (see
``rag.llm.local.LocalLLMServer.ensure_running``), so the next question is answered.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
import openai
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import ConfigurableField, Runnable
from pydantic import ConfigDict, SecretStr

from rag.errors import (
    PASSING_FAULTS,
    AnswerCutError,
    EndpointFailure,
    EndpointFault,
    ProviderError,
)
from rag.llm.router import ANSWER, FALLBACK, SMALL, EndpointState, RoutePolicy, Router
from rag.settings import Settings
from rag.text import safe_label

logger = logging.getLogger(__name__)

# Runnable-config keys (``config["configurable"]``) that ``build_llm``'s model reads.
DEADLINE_KEY = "llm_deadline"  # time.monotonic() by which the question must be done
BUFFERED_KEY = "llm_buffered"  # True: nothing is shown while streaming, so drops fall back
STATUS_KEY = "llm_status"  # Callable[[ModelStatus], None]: queue and restart notices
TIER_KEY = "llm_tier"  # the tier to ask first (rag.llm.router): "answer" or "small"

# Errors of other chat models (e.g. a ChatOpenAI handed in) that the engine reports as
# ProviderError; ResilientChatModel raises ProviderError itself.
ENDPOINT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIError,
    httpx.HTTPError,
)

CONNECT_TIMEOUT_S = 5.0
# How long a stream that reported its finish_reason may take to send [DONE] or close.
FINISH_GRACE_S = 2.0
# Least time worth starting an attempt with; a retry whose wait leaves less goes on.
MIN_ATTEMPT_S = 0.25
_ERROR_BODY_BYTES = 4096
CAP_PARAMS = ("max_completion_tokens", "max_tokens")
BUNDLED_LABEL = "the bundled model"
TIMEOUT_HINT = "raise RAG_LLM_TIMEOUT_S or use a faster endpoint (RAG_LLM_BASE_URL)"
FIRST_TOKEN_HINT = "raise RAG_LLM_FIRST_TOKEN_TIMEOUT_S or use a faster endpoint (RAG_LLM_BASE_URL)"
STOPPED_REPEATING = "stopped: the model repeated itself"


@runtime_checkable
class LocalServer(Protocol):
    """A model server ragchat runs itself and can start again (``LocalLLMServer``)."""

    def running(self) -> bool:
        """Whether its process is alive."""
        ...

    def ensure_running(self, timeout_s: float = ...) -> str:
        """Its base URL, after starting it again if its process has died."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint and the model to ask there."""

    base_url: str
    model: str
    api_key: SecretStr | None = None
    # Requests this process sends it at once (None: no limit). The bundled llama.cpp server
    # answers one at a time, so its questions queue here, first come first served (and the
    # wait is reported); the wait counts against the question's deadline.
    max_concurrent: int | None = None
    # The request fields that carry the token cap (see the module docstring).
    cap_params: tuple[str, ...] = CAP_PARAMS
    # The server process behind it, when ragchat runs it: asked for the URL before each
    # request, and restarted when it has died.
    server: LocalServer | None = field(default=None, compare=False)
    # How messages name it (default: its URL).
    name: str | None = None
    # Its tier (rag.llm.router): "answer", "small" or "fallback".
    tier: str = ANSWER
    # What this process knows of it (requests in flight, speed, circuit); shared by every
    # client holding this endpoint.
    state: EndpointState = field(default_factory=EndpointState, compare=False, repr=False)

    @property
    def label(self) -> str:
        """How messages name this endpoint."""
        return self.name or self.base_url

    def url(self) -> str:
        """The base URL to send the next request to (restarting a dead local server)."""
        return self.server.ensure_running() if self.server is not None else self.base_url


def local_endpoint(settings: Settings, url: str, server: LocalServer | None = None) -> Endpoint:
    """The bundled llama.cpp server's endpoint: one request at a time, ``max_tokens`` only."""
    return Endpoint(
        url,
        settings.llm_model,
        settings.llm_api_key,
        max_concurrent=1,
        cap_params=("max_tokens",),
        server=server,
        name=BUNDLED_LABEL,
    )


def endpoints(
    settings: Settings, local_url: str | None = None, local_server: LocalServer | None = None
) -> list[Endpoint]:
    """Every configured endpoint with its tier (``rag.llm.router``).

    The answer tier: ``RAG_LLM_BASE_URL`` and its replicas, or the local server's; the small
    tier: ``RAG_LLM_SMALL_MODEL`` at ``RAG_LLM_SMALL_BASE_URL`` (default: at each answer
    endpoint); then the fallback.
    """
    limit = settings.llm_max_concurrent
    if settings.llm_base_url:
        found = [
            Endpoint(url, settings.llm_model, settings.llm_api_key, max_concurrent=limit)
            for url in [settings.llm_base_url, *settings.llm_replicas]
        ]
    elif local_url:
        found = [local_endpoint(settings, local_url, local_server)]
    else:
        raise ValueError("no endpoint: set RAG_LLM_BASE_URL or start the local model")
    if settings.llm_small_model:
        key = settings.llm_small_api_key or settings.llm_api_key
        if settings.llm_small_base_url:
            found += [
                Endpoint(url, settings.llm_small_model, key, max_concurrent=limit, tier=SMALL)
                for url in settings.llm_small_base_url
            ]
        else:  # the answer endpoints serve the small model too (Ollama, vLLM, OpenAI)
            found += [
                replace(
                    e,
                    model=settings.llm_small_model,
                    name=f"{settings.llm_small_model} at {e.label}",
                    tier=SMALL,
                    state=EndpointState(),
                )
                for e in found
            ]
    if settings.llm_fallback_base_url:
        found.append(
            Endpoint(
                settings.llm_fallback_base_url,
                settings.llm_fallback_model or settings.llm_model,
                settings.llm_fallback_api_key,
                max_concurrent=limit,
                tier=FALLBACK,
            )
        )
    return found


@dataclass(frozen=True)
class ModelStatus:
    """What a question is waiting for at the model, for the UI to show.

    ``state``: ``queued`` (``ahead`` questions are being answered or wait before it),
    ``restarting`` (the bundled model had stopped and is being started again) or ``sent``
    (the request went out; the first token follows).
    """

    state: Literal["queued", "restarting", "sent"]
    ahead: int = 0
    endpoint: str = ""

    @property
    def message(self) -> str:
        """One line for the user."""
        if self.state == "queued":
            noun = "question" if self.ahead == 1 else "questions"
            return f"waiting for the model ({self.ahead} {noun} ahead)"
        if self.state == "restarting":
            return f"{self.endpoint or 'the model'} had stopped; starting it again"
        return "the model is reading the sources"


StatusCallback = Callable[[ModelStatus], None]


class _Queue:
    """First come, first served admission to an endpoint with ``slots`` requests at once."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: list[object] = []

    def _admit_or_ahead(self, ticket: object) -> int | None:
        """None when admitted, else how many questions are ahead (under the lock)."""
        index = self._waiting.index(ticket)
        if index == 0 and self._running < self.slots:
            self._waiting.pop(0)
            self._running += 1
            self._cond.notify_all()  # everyone behind moved up
            return None
        return self._running + index

    def acquire(self, until: float, report: Callable[[int], None]) -> bool:
        """Wait for a slot until ``until`` (monotonic); ``report(ahead)`` on every change."""
        ticket = object()
        reported: int | None = None
        with self._cond:
            self._waiting.append(ticket)
        try:
            while True:
                with self._cond:
                    ahead = self._admit_or_ahead(ticket)
                    if ahead is None:
                        return True
                    if ahead == reported:
                        left = until - time.monotonic()
                        if left <= 0:
                            self._waiting.remove(ticket)
                            self._cond.notify_all()
                            return False
                        self._cond.wait(left)
                        continue
                report(ahead)  # outside the lock: the callback may be slow
                reported = ahead
        except BaseException:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._cond.notify_all()
            raise

    def release(self) -> None:
        """Free a slot for the next question in line."""
        with self._cond:
            self._running -= 1
            self._cond.notify_all()


_QUEUES: dict[tuple[object, int], _Queue] = {}
_QUEUES_LOCK = threading.Lock()
# Cap parameters an endpoint refused with a 400 (by label), not sent to it again.
_REFUSED_PARAMS: dict[str, set[str]] = {}


def _queue_for(endpoint: Endpoint) -> _Queue | None:
    """The process-wide queue limiting requests to an endpoint, if it has a limit."""
    if endpoint.max_concurrent is None:
        return None
    owner: object = endpoint.server if endpoint.server is not None else endpoint.base_url
    key = (owner, endpoint.max_concurrent)
    with _QUEUES_LOCK:
        if key not in _QUEUES:
            _QUEUES[key] = _Queue(endpoint.max_concurrent)
        return _QUEUES[key]


class RepetitionGuard:
    """Notices a stream that loops: a short cycle repeated at the end, or a sentence again.

    ``feed`` each piece; it returns True once the text ends with a unit of at most
    ``max_period`` characters repeated over at least ``min_span`` characters (and at least
    ``min_repeats`` times), or once one sentence of at least ``min_sentence`` characters has
    appeared ``max_sentence_repeats`` times. Answers quoting a table rule or a short list do
    not reach these bounds; a model stuck in a loop does within a few hundred characters.
    """

    def __init__(
        self,
        *,
        max_period: int = 300,
        min_span: int = 240,
        min_repeats: int = 3,
        min_sentence: int = 20,
        max_sentence_repeats: int = 4,
    ) -> None:
        self.max_period = max_period
        self.min_span = min_span
        self.min_repeats = min_repeats
        self.min_sentence = min_sentence
        self.max_sentence_repeats = max_sentence_repeats
        self._tail = ""
        self._pending = ""  # text since the last sentence end
        self._sentences: Counter[str] = Counter()

    def feed(self, piece: str) -> bool:
        """Add a piece of the answer; True when the answer is looping."""
        keep = self.max_period * self.min_repeats + self.min_span
        self._tail = (self._tail + piece)[-keep:]
        return self._cycle() or self._sentence_repeated(piece)

    def _cycle(self) -> bool:
        tail = self._tail
        for period in range(1, self.max_period + 1):
            repeats = max(self.min_repeats, -(-self.min_span // period))
            span = period * repeats
            if span > len(tail):
                break
            if tail[-span:] == tail[-period:] * repeats:
                return True
        return False

    def _sentence_repeated(self, piece: str) -> bool:
        self._pending += piece
        *done, self._pending = re.split(r"(?<=[.!?])\s+|\n+", self._pending)
        for sentence in done:
            key = " ".join(sentence.split()).lower()
            if len(key) >= self.min_sentence:
                self._sentences[key] += 1
                if self._sentences[key] >= self.max_sentence_repeats:
                    return True
        return False


def retry_after_s(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` (or ``retry-after-ms``) header asks to wait, if any."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _Failed(Exception):
    """One attempt failed (internal: becomes an EndpointFailure or AnswerCutError)."""

    def __init__(
        self,
        fault: EndpointFault,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
        local: bool = False,
    ) -> None:
        super().__init__(reason)
        self.local = local  # this process's own wait, not the endpoint's fault
        self.fault = fault
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.retryable = fault in PASSING_FAULTS if retryable is None else retryable


@dataclass
class _Progress:
    """What one attempt has received so far."""

    tokens: int = 0
    model: str | None = None
    finish_reason: str | None = None
    usage: UsageMetadata | None = None
    sent_at: float | None = None  # time.monotonic() when the request went out
    first_at: float | None = None  # ... and when its first piece of text arrived

    def first_token_s(self) -> float | None:
        """Seconds from sending to the first piece of text (None before either)."""
        if self.sent_at is None or self.first_at is None:
            return None
        return self.first_at - self.sent_at


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every request, built once.

    Building one reads the CA bundle (~25 ms), which every question paid while each
    request made its own client with its own context.
    """
    return httpx.create_ssl_context()


class _Pump:
    """Runs one streamed request in a daemon thread and hands its lines over a queue.

    The consumer waits on the queue with its own deadline, so a server that hangs or
    trickles cannot hold it longer; an abandoned request ends at its httpx timeout (at most
    the time that was left) or at the next line it reads.
    """

    def __init__(
        self, url: str, headers: dict[str, str], payload: dict[str, Any], timeout: httpx.Timeout
    ) -> None:
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(url, headers, payload, timeout), daemon=True
        )
        self._thread.start()

    def _run(
        self, url: str, headers: dict[str, str], payload: dict[str, Any], timeout: httpx.Timeout
    ) -> None:
        try:
            with (
                httpx.Client(timeout=timeout, verify=_tls()) as client,
                client.stream("POST", url, json=payload, headers=headers) as response,
            ):
                if response.status_code >= 400:
                    body = b""
                    for part in response.iter_bytes():
                        body += part
                        if len(body) >= _ERROR_BODY_BYTES or self._stop.is_set():
                            break
                    self.events.put(("status", (response.status_code, response.headers, body)))
                    return
                self.events.put(("open", response.headers.get("content-type", "")))
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    self.events.put(("line", line))
                self.events.put(("eof", None))
        except Exception as exc:  # noqa: BLE001 - thread boundary: the consumer categorises it or re-raises it
            self.events.put(("error", exc))

    def next(self, until: float) -> tuple[str, Any] | None:
        """The next event, or None when ``until`` (monotonic) passes first."""
        try:
            return self.events.get(timeout=max(0.0, until - time.monotonic()))
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop reading; the thread ends at its next line or its timeout."""
        self._stop.set()


def _transport_failure(exc: BaseException, tokens: int) -> _Failed:
    if isinstance(exc, httpx.ConnectTimeout):
        return _Failed(EndpointFault.TIMEOUT, "no connection in time")
    if isinstance(exc, httpx.TimeoutException):
        return _Failed(EndpointFault.TIMEOUT, f"no data in time after {tokens} tokens")
    if isinstance(exc, httpx.ConnectError):
        return _Failed(EndpointFault.UNREACHABLE, f"cannot connect: {safe_label(str(exc), 200)}")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        where = f"after {tokens} tokens" if tokens else "before the first token"
        logger.debug("stream dropped: %r", exc)
        return _Failed(
            EndpointFault.STREAM_DROPPED, f"the connection closed {where}", retryable=not tokens
        )
    if isinstance(exc, httpx.DecodingError):
        return _Failed(EndpointFault.MALFORMED, f"undecodable body: {safe_label(str(exc), 200)}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return _Failed(EndpointFault.CLIENT_ERROR, f"bad endpoint URL: {safe_label(str(exc), 200)}")
    if isinstance(exc, httpx.TransportError):
        return _Failed(EndpointFault.UNREACHABLE, f"{type(exc).__name__}: {safe_label(str(exc))}")
    raise exc  # not an endpoint fault: a bug, shown as such


def _error_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return safe_label(" ".join(text.split()), 200) or "(no body)"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return safe_label(str(err), 200)
    return safe_label(str(data), 200)


def _status_failure(status: int, headers: Mapping[str, str], body: bytes) -> _Failed:
    message = _error_message(body)
    if status == 429:
        fault = EndpointFault.RATE_LIMITED
    elif status == 408:
        fault = EndpointFault.TIMEOUT
    elif status >= 500:
        fault = EndpointFault.SERVER_ERROR
    else:
        fault = EndpointFault.CLIENT_ERROR
    wait = retry_after_s(headers) if status in (429, 503) else None
    return _Failed(fault, message, status=status, retry_after=wait, retryable=None)


def _malformed(what: str, text: str) -> _Failed:
    return _Failed(EndpointFault.MALFORMED, f"{what}: {safe_label(text, 80)!r}", retryable=False)


class _StreamParser:
    """Server-sent events of a chat completion stream, checked strictly.

    OpenAI-compatible servers send only ``data:``, ``event:``, ``id:`` and ``retry:`` lines
    and comments; anything else means a proxy or a bug corrupted the stream, and the rest
    of it cannot be trusted.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self.done = False

    def feed(self, line: str) -> list[dict[str, Any]]:
        """Parsed completion chunks finished by this line (``done`` set on ``[DONE]``)."""
        if line == "":
            return self.flush()
        if line.startswith(":"):
            return []
        name, colon, value = line.partition(":")
        if not colon or name not in ("data", "event", "id", "retry"):
            raise _malformed("not a server-sent event line", line)
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return []

    def flush(self) -> list[dict[str, Any]]:
        """Finish the pending event (at a blank line or at the end of the stream)."""
        if not self._data:
            return []
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _malformed("an event is not valid JSON", data) from None
        if event == "error" or (isinstance(chunk, dict) and "error" in chunk):
            raise _Failed(
                EndpointFault.SERVER_ERROR,
                f"error event in the stream: {_error_message(data.encode())}",
                retryable=False,
            )
        return [chunk]


def _usage(data: Any) -> UsageMetadata | None:
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return UsageMetadata(
        input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion
    )


def _read_chunk(chunk: Any, progress: _Progress, *, whole: bool = False) -> str:
    """The text of one completion chunk (``whole``: a non-streamed completion)."""
    if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
        raise _malformed("not a chat completion", json.dumps(chunk)[:80])
    if isinstance(chunk.get("model"), str) and chunk["model"]:
        progress.model = chunk["model"]
    progress.usage = _usage(chunk.get("usage")) or progress.usage
    text = ""
    for choice in chunk["choices"][:1]:
        part = choice.get("message" if whole else "delta") if isinstance(choice, dict) else None
        if part is None and isinstance(choice, dict) and not whole:
            part = {}
        if not isinstance(part, dict):
            raise _malformed("not a chat completion choice", json.dumps(choice)[:80])
        content = part.get("content")
        if content is not None and not isinstance(content, str):
            raise _malformed("content is not text", json.dumps(content)[:80])
        text = content or ""
        if choice.get("finish_reason"):
            progress.finish_reason = str(choice["finish_reason"])
    return text


class ResilientChatModel(BaseChatModel):
    """A chat model over OpenAI-compatible endpoints, tried as ``router`` plans, under one deadline.

    See the module docstring for the retry, fallback and deadline policy.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    endpoints: list[Endpoint]
    timeout_s: float = 30.0
    first_token_timeout_s: float | None = None
    max_retries: int = 2
    temperature: float = 0.1
    max_tokens: int | None = None
    backoff_s: float = 0.5
    deadline: float | None = None
    buffered: bool = False
    on_status: StatusCallback | None = None
    # Orders the endpoints per request (tiers, balancing, circuits); None: a default one.
    router: Router | None = None
    tier: str = ANSWER  # the tier to ask first (set per call under TIER_KEY)

    @property
    def _llm_type(self) -> str:
        return "ragchat-openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "endpoints": [(e.base_url, e.model) for e in self.endpoints],
            "temperature": self.temperature,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Invoked, nothing is shown before the end: always buffered.
        return generate_from_stream(self._chunks(messages, stop, buffered=True, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._chunks(messages, stop, buffered=self.buffered, **kwargs)

    def _payload(
        self,
        endpoint: Endpoint,
        messages: list[BaseMessage],
        stop: list[str] | None,
        cap: int | None,
        **kw: Any,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": endpoint.model,
            "messages": convert_to_openai_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.temperature,
        }
        if cap is not None:
            refused = _REFUSED_PARAMS.get(endpoint.label, set())
            params = [p for p in endpoint.cap_params if p not in refused] or [
                endpoint.cap_params[-1]
            ]
            payload.update(dict.fromkeys(params, cap))
        if stop:
            payload["stop"] = stop
        payload.update(kw)
        return payload

    def _chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        *,
        buffered: bool,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        deadline = self.deadline if self.deadline is not None else time.monotonic() + self.timeout_s
        cap = kwargs.pop("max_tokens", None) or self.max_tokens
        failures: list[EndpointFailure] = []
        router = self.router or Router()
        plan = router.plan(self.endpoints, self.tier)
        for index, endpoint in enumerate(plan):
            left = deadline - time.monotonic()
            if left < MIN_ATTEMPT_S / 2:
                failures.append(
                    EndpointFailure(
                        endpoint.label, EndpointFault.TIMEOUT, "no time left", attempts=0
                    )
                )
                continue
            share_end = time.monotonic() + left / (len(plan) - index)
            payload = self._payload(endpoint, messages, stop, cap, **kwargs)
            endpoint.state.start()
            try:
                failure = yield from self._try_endpoint(
                    endpoint, payload, share_end, deadline, buffered, failures, cap
                )
            except AnswerCutError:
                endpoint.state.failed(router.policy, endpoint.label)
                raise
            finally:
                endpoint.state.end()
            if failure is None:
                return
            if failure.endpoint_at_fault:
                endpoint.state.failed(router.policy, endpoint.label)
            failures.append(failure)
            logger.info(
                "model endpoint %s failed (%s): %s",
                endpoint.label,
                failure.label,
                failure.detail,
            )
        raise ProviderError.from_failures(_with_hint(failures))

    def _report(self, status: ModelStatus) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def _try_endpoint(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any],
        share_end: float,
        deadline: float,
        buffered: bool,
        earlier: Sequence[EndpointFailure],
        cap: int | None = None,
    ) -> Generator[ChatGenerationChunk, None, EndpointFailure | None]:
        """Attempts at one endpoint; returns (as the generator's value) its failure or None."""
        attempts = 0
        while True:
            attempts += 1
            progress = _Progress()
            held: list[str] = []  # buffered pieces, or whitespace not yet shown
            shown = False
            guard = RepetitionGuard()
            stopped: str | None = None
            attempt = self._attempt(endpoint, payload, share_end, deadline, progress)
            try:
                for piece in attempt:
                    held.append(piece)
                    if guard.feed(piece):
                        stopped, progress.finish_reason = STOPPED_REPEATING, "repetition"
                    elif cap is not None and progress.tokens > cap:
                        # The server ignored the cap: the piece over it is not kept.
                        held.pop()
                        stopped, progress.finish_reason = _stopped_at_cap(cap), "length"
                    if stopped:
                        logger.info("model endpoint %s: %s", endpoint.label, stopped)
                        break
                    if not buffered and "".join(held).strip():
                        yield ChatGenerationChunk(message=AIMessageChunk(content="".join(held)))
                        held, shown = [], True
            except _Failed as failed:
                if shown:
                    raise AnswerCutError(
                        endpoint.label,
                        failed.fault,
                        _hinted(failed.fault, failed.reason),
                        model=progress.model or endpoint.model,
                        tokens=progress.tokens,
                    ) from None
                if self._drop_refused_param(endpoint, payload, failed):
                    attempts -= 1
                    continue
                wait = self._retry_wait(failed, attempts, share_end)
                if wait is None:
                    return EndpointFailure(
                        endpoint.label,
                        failed.fault,
                        failed.reason,
                        failed.status,
                        attempts,
                        local=failed.local,
                    )
                logger.info(
                    "model endpoint %s attempt %d failed (%s): %s; retrying in %.1f s",
                    endpoint.label,
                    attempts,
                    failed.fault,
                    failed.reason,
                    wait,
                )
                time.sleep(wait)
                continue
            finally:
                attempt.close()  # a stopped stream: its request ends, its slot is freed
            if progress.finish_reason == "length" and stopped is None and cap is not None:
                stopped = _stopped_at_cap(cap)  # the server stopped it at the cap
            endpoint.state.succeeded(progress.first_token_s())
            if held:
                yield ChatGenerationChunk(message=AIMessageChunk(content="".join(held)))
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata=progress.usage,
                    response_metadata={
                        "model_name": progress.model or endpoint.model,
                        "finish_reason": progress.finish_reason,
                        "stopped": stopped,
                        "endpoint": endpoint.label,
                        "tier": endpoint.tier,
                        "attempts": attempts,
                        "failed_before": [f"{f.endpoint} ({f.label})" for f in earlier],
                    },
                )
            )
            return None

    @staticmethod
    def _drop_refused_param(endpoint: Endpoint, payload: dict[str, Any], failed: _Failed) -> bool:
        """After a 400 naming a cap parameter, drop it (once) if another one remains."""
        sent = [p for p in endpoint.cap_params if p in payload]
        if failed.status != 400 or len(sent) < 2:
            return False
        # The one named first is the one refused: OpenAI says "Unsupported parameter:
        # 'max_tokens' ... Use 'max_completion_tokens' instead."
        found = [(m.start(), p) for p in sent if (m := re.search(rf"\b{p}\b", failed.reason))]
        if not found:
            return False
        refused = min(found)[1]
        logger.info("model endpoint %s refuses %s; sending it no more", endpoint.label, refused)
        _REFUSED_PARAMS.setdefault(endpoint.label, set()).add(refused)
        payload.pop(refused)
        return True

    def _retry_wait(self, failed: _Failed, attempts: int, share_end: float) -> float | None:
        """Seconds to wait before retrying, or None to go on to the next endpoint."""
        if not failed.retryable and failed.status not in (408, 409):
            return None
        if attempts > self.max_retries:
            return None
        left = share_end - time.monotonic()
        if failed.retry_after is not None:
            if failed.retry_after + MIN_ATTEMPT_S > left:
                failed.reason += (
                    f" (Retry-After {failed.retry_after:.0f} s is longer than the "
                    f"{max(left, 0):.1f} s left)"
                )
                return None
            return failed.retry_after
        wait = self.backoff_s * 2 ** (attempts - 1)
        return wait if wait + MIN_ATTEMPT_S <= left else None

    def _attempt(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any],
        share_end: float,
        deadline: float,
        progress: _Progress,
    ) -> Generator[str, None, None]:
        """One request: yields the text as it arrives; raises ``_Failed``."""
        line = _queue_for(endpoint)
        if line is None:
            yield from self._request(endpoint, payload, share_end, deadline, progress)
            return
        waiting = time.monotonic()

        def report(ahead: int) -> None:
            self._report(ModelStatus("queued", ahead, endpoint.label))

        if not line.acquire(min(share_end, deadline), report):
            raise _Failed(
                EndpointFault.TIMEOUT,
                f"waited {time.monotonic() - waiting:.1f} s in line for {endpoint.label}, "
                "which was answering other questions",
                local=True,
            )
        try:
            yield from self._request(endpoint, payload, share_end, deadline, progress)
        finally:
            line.release()

    def _url(self, endpoint: Endpoint, deadline: float) -> str:
        """Where to send the request; a dead local server is started again first."""
        if endpoint.server is None:
            return endpoint.base_url
        if not endpoint.server.running():
            self._report(ModelStatus("restarting", 0, endpoint.label))
        try:
            return endpoint.server.ensure_running(max(1.0, deadline - time.monotonic()))
        except ProviderError as exc:
            raise _Failed(EndpointFault.UNREACHABLE, exc.reason, retryable=False) from None

    def _request(
        self,
        endpoint: Endpoint,
        payload: dict[str, Any],
        share_end: float,
        deadline: float,
        progress: _Progress,
    ) -> Iterator[str]:
        """Send one request and yield the text as it arrives; raises ``_Failed``."""
        base_url = self._url(endpoint, deadline)
        logger.debug("model endpoint %s: request sent", endpoint.label)
        self._report(ModelStatus("sent", 0, endpoint.label))
        started = time.monotonic()
        progress.sent_at, progress.first_at = started, None
        first_by = min(share_end, deadline)
        if self.first_token_timeout_s is not None:
            first_by = min(first_by, started + self.first_token_timeout_s)
        timeout = httpx.Timeout(
            max(0.05, deadline - started),
            connect=max(0.05, min(CONNECT_TIMEOUT_S, first_by - started)),
        )
        headers = {}
        if endpoint.api_key is not None:
            headers["Authorization"] = f"Bearer {endpoint.api_key.get_secret_value()}"
        url = base_url.rstrip("/") + "/chat/completions"
        pump = _Pump(url, headers, payload, timeout)
        parser = _StreamParser()
        body: list[str] | None = None  # lines of a JSON (non-streamed) answer
        has_text = False
        try:
            finished_at: float | None = None
            while not parser.done:
                until = deadline if progress.tokens else first_by
                if progress.finish_reason:
                    finished_at = finished_at or time.monotonic()
                    until = min(until, finished_at + FINISH_GRACE_S)
                event = pump.next(until)
                if event is None:
                    if progress.finish_reason:  # finished, only [DONE] is missing
                        break
                    waited = time.monotonic() - started
                    if progress.tokens:
                        reason = f"the time limit ran out after {progress.tokens} tokens"
                    elif first_by < min(share_end, deadline):
                        reason = f"no first token within {waited:.1f} s"
                    else:
                        reason = f"no answer within {waited:.1f} s"
                    raise _Failed(EndpointFault.TIMEOUT, reason, retryable=not progress.tokens)
                kind, value = event
                if kind == "error":
                    raise _transport_failure(value, progress.tokens)
                if kind == "status":
                    raise _status_failure(*value)
                if kind == "open":
                    if "json" in value:
                        body = []  # the server ignored "stream": a whole completion follows
                    elif value and not value.startswith("text/event-stream"):
                        raise _malformed("not an event stream", value)
                    continue
                if kind == "line" and body is not None:
                    body.append(value)
                    continue
                if kind == "line":
                    chunks = parser.feed(value)
                else:  # eof
                    if body is not None:
                        try:
                            whole = json.loads("\n".join(body))
                        except ValueError:
                            raise _malformed(
                                "the body is not valid JSON", "\n".join(body)
                            ) from None
                        text = _read_chunk(whole, progress, whole=True)
                        if not text.strip():
                            raise _Failed(EndpointFault.EMPTY, "the completion has no text")
                        progress.first_at = progress.first_at or time.monotonic()
                        progress.tokens += 1
                        yield text
                        progress.finish_reason = progress.finish_reason or "stop"
                        return
                    chunks = parser.flush()
                for chunk in chunks:
                    text = _read_chunk(chunk, progress)
                    if text:
                        progress.first_at = progress.first_at or time.monotonic()
                        progress.tokens += 1
                        has_text = has_text or bool(text.strip())
                        yield text
                if kind == "eof":
                    break
            if not parser.done and not progress.finish_reason:
                raise _Failed(
                    EndpointFault.STREAM_DROPPED,
                    f"the stream ended after {progress.tokens} tokens without finishing",
                    retryable=not progress.tokens,
                )
            if not has_text:
                raise _Failed(EndpointFault.EMPTY, "the completion has no text")
        finally:
            pump.close()


def build_llm(endpoints_: list[Endpoint], settings: Settings) -> Runnable[LanguageModelInput, Any]:
    """The resilient chat model over the endpoints, routed by tier (``rag.llm.router``).

    Its deadline, buffering and tier are set per call through the runnable config
    (``DEADLINE_KEY``, ``BUFFERED_KEY``, ``TIER_KEY``).
    """
    if not endpoints_:
        raise ValueError("no endpoints")
    model = ResilientChatModel(
        endpoints=list(endpoints_),
        timeout_s=settings.llm_timeout_s,
        first_token_timeout_s=settings.llm_first_token_timeout_s,
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature,
        max_tokens=settings.llm_max_answer_tokens,
        router=Router(RoutePolicy.from_settings(settings)),
    )
    return model.configurable_fields(
        deadline=ConfigurableField(id=DEADLINE_KEY, name="deadline"),
        buffered=ConfigurableField(id=BUFFERED_KEY, name="buffered"),
        on_status=ConfigurableField(id=STATUS_KEY, name="on_status"),
        tier=ConfigurableField(id=TIER_KEY, name="tier"),
    )


def _stopped_at_cap(cap: int) -> str:
    return f"stopped: the answer reached its length limit ({cap} tokens, RAG_LLM_MAX_ANSWER_TOKENS)"


def _hinted(fault: EndpointFault, reason: str) -> str:
    """A timeout's reason, with what the user can do about it."""
    if fault is not EndpointFault.TIMEOUT or "RAG_LLM_" in reason:
        return reason
    hint = FIRST_TOKEN_HINT if "first token" in reason else TIMEOUT_HINT
    return f"{reason}; {hint}"


def _with_hint(failures: list[EndpointFailure]) -> list[EndpointFailure]:
    """The failures, the first timeout's reason saying what to do about it."""
    for i, failure in enumerate(failures):
        if failure.fault is EndpointFault.TIMEOUT:
            failures[i] = replace(failure, reason=_hinted(failure.fault, failure.reason))
            break
    return failures


def provider_error(exc: BaseException, endpoints_: list[Endpoint]) -> ProviderError:
    """One readable error naming the endpoint(s) and what failed (for other chat models)."""
    where = " then ".join(e.base_url for e in endpoints_) or "(none)"
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ProviderError(where, "timeout", "no response in time")
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError):
        return ProviderError(where, "unreachable", "cannot connect")
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        return ProviderError(where, exc.status_code, message[:300])
    return ProviderError(where, None, f"{type(exc).__name__}: {str(exc)[:300]}")


__all__ = [
    "BUFFERED_KEY",
    "DEADLINE_KEY",
    "ENDPOINT_ERRORS",
    "STATUS_KEY",
    "TIER_KEY",
    "Endpoint",
    "LocalServer",
    "ModelStatus",
    "RepetitionGuard",
    "ResilientChatModel",
    "StatusCallback",
    "build_llm",
    "endpoints",
    "local_endpoint",
    "provider_error",
    "retry_after_s",
]
