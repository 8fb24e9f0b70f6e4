"""Chat models: every answer goes through an OpenAI-compatible endpoint.

Retries with exponential backoff on 429, 5xx and connection errors come from the openai
client; ``llm_timeout_s`` bounds one question's wait for the endpoint, retries included. A
fallback endpoint, when configured, is tried when the first one fails (langchain-core's
``with_fallbacks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from pydantic import SecretStr

from rag.errors import ProviderError
from rag.settings import Settings

# Errors after which the fallback endpoint is tried.
ENDPOINT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIError,
    httpx.HTTPError,
)


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint and the model to ask there."""

    base_url: str
    model: str
    api_key: SecretStr | None = None


def endpoints(settings: Settings, local_url: str | None = None) -> list[Endpoint]:
    """The configured endpoint (or the local server's) and the optional fallback."""
    base = settings.llm_base_url or local_url
    if not base:
        raise ValueError("no endpoint: set RAG_LLM_BASE_URL or start the local model")
    found = [Endpoint(base, settings.llm_model, settings.llm_api_key)]
    if settings.llm_fallback_base_url:
        found.append(
            Endpoint(
                settings.llm_fallback_base_url,
                settings.llm_fallback_model or settings.llm_model,
                settings.llm_fallback_api_key,
            )
        )
    return found


def chat_model(endpoint: Endpoint, settings: Settings) -> BaseChatModel:
    """A streaming ChatOpenAI client for one endpoint."""
    from langchain_openai import ChatOpenAI

    attempts = settings.llm_max_retries + 1
    return ChatOpenAI(
        base_url=endpoint.base_url,
        model=endpoint.model,
        # Local servers ignore the key, but the client insists on one.
        api_key=endpoint.api_key or SecretStr("not-needed"),
        timeout=httpx.Timeout(settings.llm_timeout_s / attempts, connect=5.0),
        max_retries=settings.llm_max_retries,
        temperature=settings.llm_temperature,
        max_completion_tokens=settings.llm_max_answer_tokens,
        streaming=True,
        stream_usage=True,
    )


def build_llm(endpoints_: list[Endpoint], settings: Settings) -> Runnable:
    """The chat model of the first endpoint, falling back to the next ones in order."""
    models = [chat_model(e, settings) for e in endpoints_]
    if len(models) == 1:
        return models[0]
    return models[0].with_fallbacks(models[1:], exceptions_to_handle=ENDPOINT_ERRORS)


def provider_error(exc: BaseException, endpoints_: list[Endpoint]) -> ProviderError:
    """One readable error naming the endpoint(s) and what failed."""
    where = " then ".join(e.base_url for e in endpoints_) or "(none)"
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ProviderError(where, "timeout", "no response in time")
    if isinstance(exc, openai.APIConnectionError | httpx.ConnectError):
        return ProviderError(where, "unreachable", "cannot connect")
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else str(exc)
        return ProviderError(where, exc.status_code, message[:300])
    return ProviderError(where, None, f"{type(exc).__name__}: {str(exc)[:300]}")
