"""The chat model behind a PII guard: what a remote endpoint receives holds no personal data.

``PiiGuard`` wraps the chat model the chain calls (the condensing call and the answer).
With ``mask``, each value found in the messages (question, history, passages) is replaced
by a placeholder such as ``<EMAIL_ADDRESS_1>``, the same one for the same value throughout
one question, and the answer's placeholders are put back as it streams: the user reads the
real values, the endpoint never sees them. With ``block``, messages holding personal data
are not sent at all: the question fails with ``PiiBlockedError`` naming the kinds found.

The mapping from placeholders to values lives in memory for one question only (the engine
puts a fresh ``Masker`` in the runnable config under ``MASKER_KEY``); it is never logged,
stored or sent.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessageChunk, BaseMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig

from rag.errors import PiiBlockedError, RagError
from rag.guard.spotlight import MARK, remark, unmark

if TYPE_CHECKING:
    from rag.guard.pii import Masker, PiiDetector

MASKER_KEY = "pii_masker"
PiiMode = Literal["mask", "block"]


def is_local_url(url: str) -> bool:
    """Whether an endpoint URL points at this machine (loopback address or localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LazyDetector:
    """A detector built on first use (Presidio imports spaCy, which takes seconds)."""

    def __init__(self, factory: Callable[[], PiiDetector]) -> None:
        self._factory = factory
        self._detector: PiiDetector | None = None
        self._lock = threading.Lock()

    def get(self) -> PiiDetector:
        """The detector, built once."""
        with self._lock:
            if self._detector is None:
                self._detector = self._factory()
            return self._detector


def _text(message: BaseMessage) -> str:
    """A message's text; the guard refuses what it cannot read (it never sends it unread)."""
    if not isinstance(message.content, str):
        raise RagError("the PII guard sends text messages only; this one has other content")
    return message.content


class PiiGuard(Runnable[LanguageModelInput, BaseMessage]):
    """Masks personal data in what goes to ``model``, and unmasks what comes back."""

    def __init__(
        self, model: Runnable[LanguageModelInput, Any], detector: LazyDetector, mode: PiiMode
    ) -> None:
        if mode not in ("mask", "block"):
            raise ValueError(f"a PII guard masks or blocks, not {mode!r}")
        self.model = model
        self.detector = detector
        self.mode = mode

    def new_masker(self) -> Masker:
        """A masker for one question (placeholders numbered from 1)."""
        from rag.guard.pii import Masker

        return Masker(self.detector.get())

    def check_question(self, question: str) -> None:
        """``block``: refuse a question that itself holds personal data, before any work.

        Raises:
            PiiBlockedError: naming the kinds found in the question.
        """
        if self.mode == "block":
            found = self.detector.get().count(question)
            if found:
                raise PiiBlockedError(list(found), ["the question"])

    def _masker(self, config: RunnableConfig | None) -> Masker:
        masker = ((config or {}).get("configurable") or {}).get(MASKER_KEY)
        return masker if masker is not None else self.new_masker()

    def _prepare(self, input: LanguageModelInput, masker: Masker) -> list[BaseMessage]:
        messages = (
            input.to_messages() if isinstance(input, PromptValue) else convert_to_messages(input)
        )
        if self.mode == "block":
            found: dict[str, int] = {}
            detector = self.detector.get()
            for message in messages:
                text = _text(message)
                for kind, n in (detector.count(unmark(text)) if text else {}).items():
                    found[kind] = found.get(kind, 0) + n
            if found:
                raise PiiBlockedError(list(found), ["the passages or the conversation"])
            return messages
        # Passages arrive data-marked (words joined by U+02C6), which hides values from
        # the recognisers: they read the unmarked text, and the marks are put back after.
        texts = [_text(m) for m in messages]
        masked = masker.mask_many([unmark(t) for t in texts])
        return [
            m.model_copy(update={"content": remark(new) if MARK in old else new}) if old else m
            for m, old, new in zip(messages, texts, masked, strict=True)
        ]

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> BaseMessage:
        """Ask the model with masked messages; the reply comes back unmasked."""
        masker = self._masker(config)
        reply: BaseMessage = self.model.invoke(self._prepare(input, masker), config, **kwargs)
        if isinstance(reply.content, str) and reply.content and self.mode == "mask":
            reply = reply.model_copy(update={"content": masker.unmask(reply.content)})
        return reply

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[BaseMessage]:
        """Stream the model's reply, placeholders replaced as soon as they are complete."""
        masker = self._masker(config)
        messages = self._prepare(input, masker)
        if self.mode == "block":
            yield from self.model.stream(messages, config, **kwargs)
            return
        unmask = masker.stream()
        for chunk in self.model.stream(messages, config, **kwargs):
            if not isinstance(chunk.content, str):
                yield chunk
                continue
            yield chunk.model_copy(update={"content": unmask.feed(chunk.content)})
        tail = unmask.finish()
        if tail:
            yield AIMessageChunk(content=tail)
