"""Answering one batch question into a result row; one question against several models.

Comparing models (``--compare A,B``, the job option ``compare``) needs an endpoint per
model name. A name alone means the configured endpoint (``RAG_LLM_BASE_URL``) asked for
that model, which is how Ollama, vLLM, LiteLLM and OpenAI-compatible gateways serve many
models; ``NAME@URL`` names another endpoint. A compared model gets no fallback: an answer
labelled with a model must come from it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rag.errors import RagError, error_id, retry_policy
from rag.evaluation import DEPTH
from rag.llm.client import Endpoint
from rag.llm.router import ANSWER, EndpointState

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.chain import Answer, ChatEngine
    from rag.service.core import RagService

logger = logging.getLogger(__name__)

# Builds (once per name) the engine that answers through one compared model.
EngineFor = Callable[[str], "ChatEngine"]


def parse_models(value: str | list[str] | None) -> list[str]:
    """``"A,B"`` or ``["A", "B"]`` as a list of distinct model names (empty when None).

    Raises:
        RagError: fewer than two models, or an empty name.
    """
    if value is None:
        return []
    names = value.split(",") if isinstance(value, str) else list(value)
    models = list(dict.fromkeys(n.strip() for n in names))
    if any(not m for m in models) or len(models) < 2:
        raise RagError("compare needs at least two distinct model names, e.g. A,B")
    return models


def model_engines(service: RagService) -> EngineFor:
    """Engines per compared model over the service's index (built at first use)."""
    from rag.service.components import build_engine_over, build_retriever

    cache: dict[str, ChatEngine] = {}
    lock = threading.Lock()

    def engine_for(spec: str) -> ChatEngine:
        with lock:
            if spec in cache:
                return cache[spec]
            model, _, url = spec.partition("@")
            update: dict[str, Any] = {"llm_model": model}
            if url:
                update["llm_base_url"] = url
            settings = service.settings.model_copy(update=update)
            if url:
                # Another endpoint: nothing of the configured one goes there (its key
                # would be sent to that URL; a bundled server would answer instead).
                endpoint = Endpoint(
                    base_url=url,
                    model=model,
                    name=spec,
                    max_concurrent=service.settings.llm_max_concurrent,
                )
            else:
                first = service.models.endpoints()[0]
                endpoint = dataclasses.replace(
                    first, model=model, name=spec, tier=ANSWER, state=EndpointState()
                )
            retriever = build_retriever(settings, service.store)
            cache[spec] = build_engine_over(settings, retriever, [endpoint])
            return cache[spec]

    return engine_for


def finish(stream: Any) -> Answer:
    """Read a buffered stream to its end; its answer."""
    for _ in stream:
        pass
    if stream.result is None:
        raise RagError("the answer ended early")
    result: Answer = stream.result
    return result


def _answer_json(answer: Answer) -> dict[str, Any]:
    data = answer.to_json()
    return {
        "answer": data["answer"],
        "citations": data["citations"],
        "abstained": data["abstained"],
        "model": data["model"],
        "prompt_version": data["prompt_version"],
        "timings": data["timings"],
        "error": None,
    }


def _failed(exc: RagError | str) -> dict[str, Any]:
    return {
        "answer": None,
        "citations": [],
        "abstained": False,
        "model": None,
        "prompt_version": None,
        "timings": {},
        "error": str(exc),
    }


def failed_row(index: int, item: dict[str, Any], error: RagError | str) -> dict[str, Any]:
    """The result row of a question that got no answer, saying why."""
    return {"index": index, "question": item.get("question"), **_failed(error)}


def answer_row(
    service: RagService,
    index: int,
    item: dict[str, Any],
    *,
    caller: Principal,
    collections: list[str] | None = None,
    compare: list[str] | None = None,
    engine_for: EngineFor | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The result row of one question; a failed answer is a row with its ``error``.

    A question that fails is asked again as its error category's retry policy says
    (``rag.errors.RETRY_POLICIES``: a model or infrastructure failure, twice or three times
    after a growing wait; never for bad input, a security refusal or a limit), waiting
    with ``sleep``.

    With ``compare`` the question goes to every model (in parallel) and the row carries
    ``answers`` by model; its top-level fields are the first model's. A labelled item
    (``sources``) also keeps what the ``ragchat eval`` metrics need under ``_eval``.
    """
    question = item["question"]
    answers: dict[str, dict[str, Any]] = {}
    raw: Answer | None = None
    if compare:
        if engine_for is None:
            raise ValueError("compare needs engine_for")
        try:
            within = service.scope(caller, collections).collections
        except RagError as exc:
            return failed_row(index, item, exc)
        results = side_by_side(question, compare, engine_for, within)
        for model, got in results.items():
            answers[model] = _answer_json(got) if not isinstance(got, RagError) else _failed(got)
        first = results[compare[0]]
        raw = None if isinstance(first, RagError) else first
        main = answers[compare[0]]
    else:
        try:
            raw = _ask_with_retries(service, question, caller, collections, sleep)
            main = _answer_json(raw)
        except RagError as exc:
            logger.info("question %d failed (error %s): %s", index, error_id(exc), exc)
            main = _failed(exc)
    row: dict[str, Any] = {"index": index, "question": question, **main}
    if compare:
        row["answers"] = answers
    if item.get("sources"):
        row["_eval"] = _eval_data(service, question, raw, caller, collections)
    return row


def _ask_with_retries(
    service: RagService,
    question: str,
    caller: Principal,
    collections: list[str] | None,
    sleep: Callable[[float], None],
) -> Answer:
    attempt = 0
    while True:
        try:
            return finish(
                service.ask(question, caller=caller, collections=collections, buffered=True)
            )
        except RagError as exc:
            attempt += 1
            policy = retry_policy(exc)
            if attempt > policy.retries:
                raise
            wait = policy.wait_s(attempt)
            logger.info(
                "question failed (%s, error %s); asking again in %.0f s",
                exc.category,
                error_id(exc),
                wait,
            )
            sleep(wait)


def side_by_side(
    question: str, models: list[str], engine_for: EngineFor, within: frozenset[str] | None
) -> dict[str, Answer | RagError]:
    """One question answered by every model at once; each answer, or its error.

    The passages come from the collections ``within`` (None: all).
    """

    def one(model: str) -> Answer | RagError:
        try:
            return finish(engine_for(model).ask(question, within=within, buffered=True))
        except RagError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="compare") as pool:
        return dict(zip(models, pool.map(one, models), strict=True))


def _eval_data(
    service: RagService,
    question: str,
    answer: Answer | None,
    caller: Principal,
    collections: list[str] | None,
) -> dict[str, Any]:
    """What ``rag.evaluation`` scores: the ranking, and the answer's citations and times."""
    try:
        hits = service.search(question, caller=caller, collections=collections, k=DEPTH)
        ranked = [[h.source, h.page, h.title] for h in hits]
    except RagError as exc:
        return {"error": f"search: {exc}"}
    data: dict[str, Any] = {"ranked": ranked}
    if answer is not None:
        data["answer"] = {
            "citations": [
                [c.source.source, c.source.page, c.source.title] for c in answer.citations
            ],
            "abstained": answer.abstained,
            "total_ms": answer.timings.get("total_ms", 0.0),
            "first_token_ms": answer.timings.get("first_token_ms", 0.0),
        }
    return data
