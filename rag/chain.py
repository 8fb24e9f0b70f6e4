"""The history-aware retrieval chain (langchain-core runnables) and the engine that streams it.

    condense -> retrieve -> fit to the context window -> answer (or abstain)

``build_chain`` assembles the LCEL pipeline from collaborators passed in; ``ChatEngine``
streams it, rewrites citation markers as they arrive, measures timings and stores the turn
in the conversation's memory. The engine gives the model one deadline per question
(``RAG_LLM_TIMEOUT_S``) and says whether the answer is shown as it streams; when the
endpoint fails after part of a shown answer, the answer ends there and is marked ``cut``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import (
    Runnable,
    RunnableBranch,
    RunnableConfig,
    RunnableGenerator,
    RunnableLambda,
    RunnablePassthrough,
)

from rag.citations import Citation, CitationStream, Source, strip_markers, verify
from rag.context import Fitted, TokenCounter, Turn, approx_tokens, fit_context
from rag.errors import (
    AnswerCutError,
    ContentRefusedError,
    PiiBlockedError,
    ProviderError,
    RagError,
    with_id,
)
from rag.guard.model import MASKER_KEY, PiiGuard
from rag.guard.spotlight import Fence
from rag.llm.client import (
    BUFFERED_KEY,
    DEADLINE_KEY,
    ENDPOINT_ERRORS,
    STATUS_KEY,
    TIER_KEY,
    Endpoint,
    ModelStatus,
    StatusCallback,
    provider_error,
)
from rag.llm.router import ANSWER, SMALL, Tiering
from rag.memory import ANSWERED, CUT, FAILED, REFUSED, STOPPED, ConversationStore
from rag.observe import tracing
from rag.prompts import Prompts
from rag.settings import Settings
from rag.text import content_words

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from rag.guard.moderation import Moderator

logger = logging.getLogger(__name__)

ABSTAIN_TEXT = (
    "The indexed documents do not cover this question, so I can't answer it from them. "
    "Try rephrasing it, or add documents that cover it."
)
CONDENSE_MAX_TOKENS = 96
# Small models sometimes go on to write the next prompt themselves; stop them there.
ANSWER_STOP = ["\nQuestion:", "\nSources:", "\n[1] ", "\n<<<source ", "\n<<<end source "]


# RunnableConfig "configurable" key: the collections retrieval may read (a frozenset of
# collection ids, or None for all). Every question must set it.
WITHIN_KEY = "retrieval_within"


@dataclass(frozen=True)
class ChainConfig:
    """Budget of the model's context window."""

    window: int = 4096
    answer_tokens: int = 384
    count: TokenCounter = approx_tokens
    # How passages are fenced in the prompt (spotlighting); frozen, so one default is safe.
    fence: Fence = Fence("off")  # noqa: RUF009

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainConfig:
        """The budget and the fencing the settings give."""
        return cls(
            window=settings.llm_context_window,
            answer_tokens=settings.llm_max_answer_tokens,
            fence=Fence(settings.spotlight),
        )


def _format_history(turns: Sequence[Turn]) -> str:
    return "\n".join(f"{t.role.capitalize()}: {t.content}" for t in turns)


def _as_messages(turns: Sequence[Turn]) -> list[BaseMessage]:
    return [HumanMessage(t.content) if t.role == "user" else AIMessage(t.content) for t in turns]


_CONDENSE_PREFIX = re.compile(r"^\s*(standalone question|question|rewritten question)\s*:\s*", re.I)


def clean_standalone(output: str, question: str, history: Sequence[Turn]) -> str:
    """The condensed question, or a safe stand-in when the model's output is unusable.

    Small models sometimes echo the previous answer or drop what the follow-up asks
    about. The output is kept only when it carries at least half of the follow-up's own
    content words and is not a copy of the last answer; otherwise retrieval uses the last
    user question joined with the follow-up, which still resolves most references.
    """
    text = _CONDENSE_PREFIX.sub("", output.strip())
    text = text.strip().splitlines()[0].strip().strip("\"'").strip() if text.strip() else ""
    text = strip_markers(text).strip()
    last_answer = next((t.content for t in reversed(history) if t.role == "assistant"), "")
    wanted = content_words(question)
    kept = len(wanted & content_words(text))
    usable = (
        3 <= len(text) <= 4 * len(question) + 300
        and kept * 2 >= len(wanted)
        and not (last_answer and text.lower() in last_answer.lower())
    )
    if usable:
        return text
    last_user = next((t.content for t in reversed(history) if t.role == "user"), "")
    return f"{last_user} {question}".strip()


def build_chain(
    llm: Runnable, retriever: BaseRetriever, prompts: Prompts, config: ChainConfig
) -> Runnable[dict[str, Any], dict[str, Any]]:
    """Assemble the chain.

    Input: ``{"question": str, "history": list[Turn]}``. Streamed output: one dict with
    ``standalone``, ``retrieval_ms`` and ``fitted`` (the numbered sources and history the
    model sees), then ``{"answer": piece}`` dicts as the answer streams.
    """
    condense_prompt = prompts.condense.chat_template()
    answer_prompt = prompts.answer.chat_template(with_history=True)
    count = config.count
    fence = config.fence
    # A data mark between words costs about a token a word more than the space it replaces.
    source_count: TokenCounter = (
        (lambda text: count(text) + len(text.split())) if fence.mode == "datamark" else count
    )
    condense_overhead = count(prompts.condense.system + prompts.condense.user)
    answer_overhead = count(prompts.answer.system + prompts.answer.user)
    per_source = 12  # the label line of a source
    if fence.mode != "off":  # the note on fencing, and each source's two fence lines
        answer_overhead += 48
        per_source += 20

    def condense_inputs(x: dict[str, Any]) -> dict[str, Any]:
        room = config.window - CONDENSE_MAX_TOKENS - condense_overhead - count(x["question"])
        kept: list[Turn] = []
        for turn in reversed(x["history"]):
            room -= count(turn.content) + 4
            if room < 0:
                break
            kept.append(turn)
        return {"history": _format_history(kept[::-1]), "question": x["question"]}

    condense_llm = llm.bind(max_tokens=CONDENSE_MAX_TOKENS)

    def ask_condense(prompt: Any, config: RunnableConfig) -> BaseMessage:
        # The rewritten question is used whole and never shown, so it is invoked rather
        # than streamed: a model that buffers then falls back when its stream drops.
        # The small tier condenses (rag.llm.router; the answer tier when there is none).
        small = {**config.get("configurable", {}), TIER_KEY: SMALL}
        return condense_llm.invoke(prompt, {**config, "configurable": small})

    condense = RunnableBranch(
        (lambda x: not x["history"], itemgetter("question")),
        RunnablePassthrough.assign(
            raw=RunnableLambda(condense_inputs)
            | condense_prompt
            | RunnableLambda(ask_condense)
            | StrOutputParser()
        )
        | RunnableLambda(lambda x: clean_standalone(x["raw"], x["question"], x["history"])),
    )

    def retrieve(x: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        started = time.perf_counter()
        # The caller's collections; a KeyError (no scope given) fails the question closed.
        within = config.get("configurable", {})[WITHIN_KEY]
        docs = retriever.invoke(x["standalone"], config, within=within)
        return {"docs": docs, "ms": (time.perf_counter() - started) * 1000, "at": started}

    def fit(x: dict[str, Any]) -> Fitted:
        return fit_context(
            x["retrieved"]["docs"],
            list(x["history"]),
            x["question"],
            window=config.window,
            answer_tokens=config.answer_tokens,
            overhead=answer_overhead,
            count=count,
            source_count=source_count,
            per_source=per_source,
        )

    def answer_inputs(x: dict[str, Any]) -> dict[str, Any]:
        fitted: Fitted = x["fitted"]
        sources = numbered(fitted)
        question = x["question"] if fitted.history or not x["history"] else x["standalone"]
        return {
            "sources": fence.format(sources),
            "question": question,
            "chat_history": _as_messages(fitted.history),
        }

    def abstain(_: Iterator[Any]) -> Iterator[str]:
        yield from re.findall(r"\S+\s*", ABSTAIN_TEXT)

    answer = RunnableBranch(
        (lambda x: not x["fitted"].documents, RunnableGenerator(abstain)),
        RunnableLambda(answer_inputs)
        | answer_prompt
        | llm.bind(stop=ANSWER_STOP)
        | StrOutputParser(),
    )
    return (
        RunnablePassthrough.assign(standalone=condense)
        | RunnablePassthrough.assign(retrieved=RunnableLambda(retrieve))
        | RunnablePassthrough.assign(fitted=RunnableLambda(fit))
        | RunnablePassthrough.assign(answer=answer)
    )


def numbered(fitted: Fitted) -> list[Source]:
    """The fitted documents as sources [1], [2], ... in the order the model sees them."""
    return [Source.from_document(i, d) for i, d in enumerate(fitted.documents, 1)]


@dataclass
class Answer:
    """A finished answer with everything needed to show and audit it."""

    question: str
    standalone: str
    text: str
    citations: list[Citation]
    sources: list[Source]
    prompt_version: str
    model: str
    timings: dict[str, float]
    tokens: dict[str, Any]
    abstained: bool
    message_id: int | None = None
    cut: str | None = None  # why the answer ended early (the endpoint failed midway)
    # Where a stored answer came from instead of the model: "cache" (the response cache)
    # or "review" (a reviewer's correction); None for an answer the model wrote now.
    served_from: str | None = None
    # The collections retrieval searched (None: all); stored with the answer, so a thumbs
    # down queues it for the reviewers of those collections (rag.review).
    within: frozenset[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The shape ``ragchat ask --json`` prints."""
        return {
            "answer": self.text,
            "citations": [c.to_json() for c in self.citations],
            "prompt_version": self.prompt_version,
            "model": self.model,
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
            "tokens": self.tokens,
            "standalone_question": self.standalone,
            "abstained": self.abstained,
            "cut": self.cut,
            "cached": self.served_from == "cache",
            "reviewed": self.served_from == "review",
        }

    def meta(self) -> dict[str, Any]:
        """What memory stores with the assistant message."""
        data = self.to_json()
        data.pop("answer")
        data["sources_shown"] = len(self.sources)
        data["within"] = None if self.within is None else sorted(self.within)
        return data


@dataclass
class AnswerStream:
    """Iterate for the answer's text as it streams; ``result`` is set when it ends."""

    _pieces: Iterator[str]
    result: Answer | None = None
    # The latest notice from the model (waiting in line, restarting, request sent), and a
    # callback for each, set before iterating. It may be called from a worker thread.
    status: ModelStatus | None = None
    on_status: StatusCallback | None = None

    def __iter__(self) -> Iterator[str]:
        yield from self._pieces

    def report(self, status: ModelStatus) -> None:
        """Record a notice from the model and pass it to ``on_status``."""
        self.status = status
        if self.on_status is not None:
            self.on_status(status)

    def close(self) -> None:
        """Stop the answer here; in a conversation, what arrived is stored as stopped."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()


class _AnsweredBy(BaseCallbackHandler):
    """Records the model that wrote the last completion, as its response names it."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.stopped: str | None = None  # why ragchat or the server stopped the answer early

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        """Keep the model name of a finished completion."""
        for generations in response.generations[:1]:
            for generation in generations[:1]:
                if isinstance(generation, ChatGeneration):
                    name = generation.message.response_metadata.get("model_name")
                    self.model = str(name) if name else self.model
                    self.stopped = generation.message.response_metadata.get("stopped")


class ChatEngine:
    """Streams answers from the chain; keeps conversations when given a memory.

    ``timeout_s`` bounds each question at the model endpoint(s), from the moment it is
    asked: the model gets the deadline through the runnable config (``DEADLINE_KEY``).

    Guardrails, each optional: ``fence`` is the chain's spotlighting (data marks the model
    copies are cleaned from the answer); ``pii`` is the guard around the chain's model (a
    fresh placeholder map per question; ``block`` refuses a question holding personal data
    before any work); ``moderator`` checks the question before any work and the whole
    answer before any of it is shown, so answers arrive in one piece while it is set. A
    refusal is a ``ContentRefusedError`` or ``PiiBlockedError``; in a conversation it is
    stored with the outcome ``refused``.
    """

    def __init__(
        self,
        chain: Runnable[dict[str, Any], dict[str, Any]],
        prompts: Prompts,
        *,
        endpoints: Sequence[Endpoint] = (),
        model_name: str = "",
        memory: ConversationStore | None = None,
        count: TokenCounter = approx_tokens,
        timeout_s: float | None = None,
        fence: Fence | None = None,
        pii: PiiGuard | None = None,
        moderator: Moderator | None = None,
        tracer: Tracer | None = None,
        tiering: Tiering | None = None,
    ) -> None:
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.fence = fence or Fence("off")
        self.pii = pii
        self.moderator = moderator
        self.chain = chain
        self.prompts = prompts
        self.endpoints = list(endpoints)
        self.model_name = model_name or (self.endpoints[0].model if self.endpoints else "")
        self.memory = memory
        self.count = count
        self.timeout_s = timeout_s
        self.tracer = tracer  # None: the process's (rag.observe.tracing)
        self.tiering = tiering or Tiering()  # which tier answers (rag.llm.router)

    @property
    def prompt_version(self) -> str:
        """The version of the prompt answers are written with (its label and the fencing)."""
        return self.prompts.answer.label + self.fence.label

    def ask(
        self,
        question: str,
        history: Sequence[Turn] = (),
        *,
        within: frozenset[str] | None,
        buffered: bool = False,
    ) -> AnswerStream:
        """Stream an answer to ``question`` given earlier turns.

        ``within``: the collections the passages may come from (None: all); the caller's
        scope, never left to a default.

        ``buffered``: the caller shows nothing until the answer is complete (``--json``,
        batch runs), so an endpoint whose stream drops midway is replaced by the fallback
        instead of the answer being cut.
        """
        return self._stream(question, list(history), None, buffered, within)

    def ask_in(
        self,
        conversation_id: str,
        question: str,
        *,
        within: frozenset[str] | None,
        buffered: bool = False,
    ) -> AnswerStream:
        """Stream an answer within a stored conversation.

        The question is stored before anything else happens; its answer is stored when
        the outcome is known: answered, cut, failed (with the error) or stopped (the
        caller stopped iterating, or called ``AnswerStream.close``, midway).
        """
        if self.memory is None:
            raise RagError("this engine has no conversation memory")
        question = question.strip()
        if not question:
            raise RagError("the question is empty")
        history = self.memory.history(conversation_id)
        asked = self.memory.ask(conversation_id, question)
        return self._stream(question, history, (conversation_id, asked.id), buffered, within)

    def retry_in(
        self,
        conversation_id: str,
        question_id: int,
        *,
        within: frozenset[str] | None,
        buffered: bool = False,
    ) -> AnswerStream:
        """Answer a stored question again (retry, regenerate), from the turns before it.

        The new outcome replaces the question's earlier answer once it is known.
        """
        if self.memory is None:
            raise RagError("this engine has no conversation memory")
        asked = self.memory.question(conversation_id, question_id)
        history = self.memory.history(conversation_id, before=question_id)
        return self._stream(asked.content, history, (conversation_id, asked.id), buffered, within)

    def serve(
        self,
        answer: Answer,
        *,
        started: float | None = None,
        conversation_id: str | None = None,
        question_id: int | None = None,
    ) -> AnswerStream:
        """Hand out a stored answer (the response cache's, a reviewed one) as this engine's own.

        The guardrails run as for an answer the model writes: the question's first (a
        refusal is raised while iterating), then the moderator on the answer's text. Its
        ``timings`` are measured from ``started`` (default: now) to the moment the text is
        handed out. In a conversation the question is stored first (unless ``question_id``
        names it, stored already) and the answer with it, as the model's would be.
        """
        asked: tuple[str, int] | None = None
        if conversation_id is not None:
            if self.memory is None:
                raise RagError("this engine has no conversation memory")
            if question_id is None:
                question_id = self.memory.ask(conversation_id, answer.question).id
            asked = (conversation_id, question_id)
        begun = time.perf_counter() if started is None else started
        stream = AnswerStream(iter(()))

        def screened() -> Iterator[str]:
            first: float | None = None
            error: BaseException | None = None
            try:
                self.screen_question(answer.question)
                self._check("answer", answer.text)
                first = time.perf_counter()
                ms = (first - begun) * 1000
                answer.timings = {"first_token_ms": ms, "total_ms": ms}
                if answer.text:  # the whole text in one piece
                    yield answer.text
                stream.result = answer
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):
                    error = exc
                raise
            finally:  # traced as a question with no steps, marked with where it came from
                self._trace(
                    stream.result, begun, None, first, error,
                    condensed=False, served_from=answer.served_from,
                )  # fmt: skip

        pieces = screened()
        stream._pieces = pieces if asked is None else self._saved(stream, pieces, *asked)
        return stream

    def screen_question(self, question: str) -> None:
        """The guardrails on a question, before any work: personal data, then moderation.

        Raises:
            PiiBlockedError: ``RAG_PII=block`` and the question holds personal data.
            ContentRefusedError: the moderator flags the question.
        """
        if self.pii is not None:  # first: a blocked question goes nowhere, moderation included
            self.pii.check_question(question)
        self._check("question", question)

    def _stream(
        self,
        question: str,
        history: list[Turn],
        asked: tuple[str, int] | None,
        buffered: bool,
        within: frozenset[str] | None,
    ) -> AnswerStream:
        question = question.strip()
        if not question:
            raise RagError("the question is empty")
        stream = AnswerStream(iter(()))
        pieces = self._run(stream, question, history, buffered, within)
        stream._pieces = pieces if asked is None else self._saved(stream, pieces, *asked)
        return stream

    def _saved(
        self, stream: AnswerStream, pieces: Iterator[str], conversation_id: str, question_id: int
    ) -> Iterator[str]:
        """``pieces``, with the answer stored when its outcome is known."""
        assert self.memory is not None
        shown: list[str] = []
        try:
            for piece in pieces:
                shown.append(piece)
                yield piece
        except GeneratorExit:  # the reader stopped midway: keep what arrived
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # ends the request to the model now, not when collected
            text = "".join(shown).strip()
            self.memory.answer(
                conversation_id, question_id, text, {"stopped": True}, outcome=STOPPED
            )
            raise
        except (ContentRefusedError, PiiBlockedError) as exc:
            self.memory.answer(
                conversation_id, question_id, "", outcome=REFUSED, error=with_id(exc)
            )
            raise
        except Exception as exc:
            self.memory.answer(conversation_id, question_id, "", outcome=FAILED, error=with_id(exc))
            raise
        answer = stream.result
        if answer is None:
            return
        outcome = CUT if answer.cut else ANSWERED
        msg = self.memory.answer(
            conversation_id, question_id, answer.text, answer.meta(), outcome=outcome
        )
        answer.message_id = msg.id

    def _run(
        self,
        stream: AnswerStream,
        question: str,
        history: list[Turn],
        buffered: bool,
        within: frozenset[str] | None,
    ) -> Iterator[str]:
        started = time.perf_counter()
        first_token: float | None = None
        state: dict[str, Any] = {}
        error: BaseException | None = None
        try:
            cites: CitationStream | None = None
            pieces = 0
            cut: str | None = None
            answered_by = _AnsweredBy()
            self.screen_question(question)
            configurable: dict[str, Any] = {
                BUFFERED_KEY: buffered,
                STATUS_KEY: stream.report,
                WITHIN_KEY: within,
                # A follow-up is answered by the answer tier: its own words say little.
                TIER_KEY: ANSWER if history else self.tiering.tier_for(question),
            }
            if self.pii is not None and self.pii.mode == "mask":
                configurable[MASKER_KEY] = self.pii.new_masker()
            if self.timeout_s is not None:
                configurable[DEADLINE_KEY] = time.monotonic() + self.timeout_s
            held: list[str] | None = [] if self.moderator is not None else None
            config: RunnableConfig = {"callbacks": [answered_by], "configurable": configurable}
            with get_usage_metadata_callback() as usage:
                try:
                    for chunk in self.chain.stream(
                        {"question": question, "history": history}, config
                    ):
                        # The chain streams each step's output as its own dict, then the answer.
                        state.update({k: v for k, v in chunk.items() if k != "answer"})
                        if "fitted" in chunk:
                            cites = CitationStream(numbered(chunk["fitted"]))
                        piece = self.fence.clean(str(chunk.get("answer") or ""))
                        if not piece or cites is None:
                            continue
                        if first_token is None:
                            first_token = time.perf_counter()
                        pieces += 1
                        shown = cites.feed(piece)
                        if shown and held is not None:
                            held.append(shown)
                        elif shown:
                            yield shown
                except AnswerCutError as exc:
                    if cites is None or not pieces:
                        raise  # nothing was shown: an error like any other
                    logger.info("answer cut: %s", exc)
                    cut, answered_by.model = str(exc), exc.model
                except ProviderError:
                    raise
                except ENDPOINT_ERRORS as exc:
                    raise provider_error(exc, self.endpoints) from exc
                if cites is None:
                    raise RagError("the chain produced no sources step")  # noqa: TRY301 (traced)
                tail = cites.finish()
                if tail and held is not None:
                    held.append(tail)
                elif tail:
                    yield tail
            if held is not None:
                self._check("answer", "".join(held))
                if held:
                    yield "".join(held)
            end = time.perf_counter()
            fitted: Fitted = state["fitted"]
            abstained = not fitted.documents
            text, citations = cites.text.strip(), list[Citation]()
            if not abstained:
                text, citations = verify(text, cites.sources, cites.citations)
            answer = Answer(
                question=question,
                standalone=state.get("standalone", question),
                text=text,
                citations=citations,
                sources=cites.sources,
                prompt_version=self.prompt_version,
                model=answered_by.model or self.model_name,
                timings={
                    "retrieval_ms": state["retrieved"]["ms"],
                    "first_token_ms": ((first_token or end) - started) * 1000,
                    "total_ms": (end - started) * 1000,
                },
                tokens=self._tokens(usage.usage_metadata, fitted, question, cites.text, pieces),
                abstained=abstained,
                cut=cut or (None if abstained else answered_by.stopped),
                within=within,
            )
            stream.result = answer
        except BaseException as exc:
            if not isinstance(exc, GeneratorExit):  # not a reader that stopped early
                error = exc
            raise
        finally:  # traced (rag.observe.tracing) when it ends or fails
            self._trace(
                stream.result, started, state.get("retrieved"), first_token, error,
                condensed=bool(history),
            )  # fmt: skip

    def _trace(
        self,
        answer: Answer | None,
        started: float,
        retrieved: dict[str, Any] | None,
        first_token: float | None,
        error: BaseException | None,
        *,
        condensed: bool,
        served_from: str | None = None,
    ) -> None:
        tracer = self.tracer if self.tracer is not None else tracing.tracer()
        at = retrieved["at"] if retrieved else None
        times = tracing.StepTimes(
            started=started,
            retrieve_started=at,
            retrieve_ended=None if not retrieved else retrieved["at"] + retrieved["ms"] / 1000,
            first_token=first_token,
            ended=time.perf_counter(),
        )
        attributes: dict[str, Any] = {
            "ragchat.prompt_version": self.prompt_version,
            "ragchat.model": answer.model if answer is not None else self.model_name,
            "ragchat.served_from": served_from,
        }
        if answer is not None:
            attributes["ragchat.abstained"] = answer.abstained
            attributes["ragchat.citations"] = len(answer.citations)
            for kind in ("prompt", "completion"):
                if isinstance(answer.tokens.get(kind), int):
                    attributes[f"ragchat.tokens.{kind}"] = answer.tokens[kind]
        try:
            tracing.record_question(tracer, times, attributes, condensed=condensed, error=error)
        except Exception as exc:  # tracing never fails a question; the log says why
            logger.warning("could not record the trace of a question: %r", exc, exc_info=True)

    def _check(self, stage: str, text: str) -> None:
        """Refuse a question or an answer the moderator flags.

        Raises:
            ContentRefusedError: naming the stage, the moderator and its categories.
        """
        if self.moderator is None or not text.strip():
            return
        verdict = self.moderator.check(text)
        if verdict.flagged:
            logger.info("%s refused by %s: %s", stage, verdict.by, ", ".join(verdict.categories))
            raise ContentRefusedError(stage, verdict.by, list(verdict.categories))

    def _tokens(
        self, usage: dict[str, Any], fitted: Fitted, question: str, text: str, pieces: int
    ) -> dict[str, Any]:
        if usage:
            return {
                "prompt": sum(u.get("input_tokens", 0) for u in usage.values()),
                "completion": sum(u.get("output_tokens", 0) for u in usage.values()),
                "estimated": False,
                # With a small model condensing, two models share the question's tokens.
                "by_model": {
                    str(name): {
                        "prompt": int(u.get("input_tokens", 0)),
                        "completion": int(u.get("output_tokens", 0)),
                    }
                    for name, u in usage.items()
                },
            }
        if not fitted.documents:
            return {"prompt": 0, "completion": 0, "estimated": False}
        prompt = (
            self.count(self.prompts.answer.system + self.prompts.answer.user + question)
            + sum(self.count(d.page_content) + 12 for d in fitted.documents)
            + sum(self.count(t.content) + 4 for t in fitted.history)
        )
        # The endpoint did not report usage while streaming: estimate (one piece ~ one token).
        return {"prompt": prompt, "completion": max(pieces, self.count(text)), "estimated": True}
