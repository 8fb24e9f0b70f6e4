"""The typed errors ragchat raises; the UI and the CLI show their messages to the user."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class RagError(Exception):
    """Base of every error ragchat reports to a user.

    ``category`` sorts it for metrics, logs and retries: ``model`` (an endpoint failed),
    ``infrastructure`` (ragchat's own storage or setup), ``input`` (what the caller
    sent), ``security`` (refused for who asks or what it holds) or ``business_rule``
    (a limit or state of the installation).

    ``retryable``: whether trying again later may cure it; only then does its category's
    retry policy apply (``retry_policy``). Errors that may pass say so (a busy or briefly
    unreadable index, a model endpoint failing for a passing reason).
    """

    category = "infrastructure"
    retryable = False


class ConfigError(RagError):
    """A setting has a value ragchat cannot use."""

    category = "infrastructure"
    retryable = False

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"setting {setting}: {reason}")


class IngestError(RagError):
    """A file could not be read into the index."""

    category = "input"

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFileError(IngestError):
    """A file's content is of a type ragchat does not read."""

    category = "input"


class ParseLimitError(IngestError):
    """Parsing a file broke a configured limit (time, memory, size, archive shape)."""

    category = "input"

    def __init__(self, path: Path | str, limit: str, reason: str) -> None:
        self.limit = limit
        super().__init__(path, f"{reason} (limit {limit})")


class StoreError(RagError):
    """Base for problems with the index directory itself."""

    category = "infrastructure"
    retryable = True  # a busy or briefly unreadable index


class IndexNotFoundError(StoreError):
    """No index has been published in the directory yet."""

    category = "business_rule"
    retryable = False

    def __init__(self, index_dir: Path | str) -> None:
        self.index_dir = str(index_dir)
        super().__init__(
            f"no index in {self.index_dir}: ingest documents first (ragchat ingest PATH)"
        )


class IndexCorruptError(StoreError):
    """The published index cannot be read."""

    category = "infrastructure"
    retryable = False

    def __init__(self, index_dir: Path | str, reason: str) -> None:
        self.index_dir = str(index_dir)
        self.reason = reason
        super().__init__(f"index {self.index_dir} cannot be read: {reason}")


class IndexUnwritableError(StoreError):
    """The index folder cannot be created or written."""

    category = "infrastructure"
    retryable = False  # a full disk or a read-only folder

    def __init__(self, index_dir: Path | str, reason: str) -> None:
        self.index_dir = str(index_dir)
        self.reason = reason
        super().__init__(f"cannot write to index {self.index_dir}: {reason}")


class IndexMismatchError(StoreError):
    """The index was built with another embedding model than the one configured."""

    category = "infrastructure"
    retryable = False

    def __init__(
        self, expected_model: str, found_model: str, expected_dim: int, found_dim: int
    ) -> None:
        self.expected_model = expected_model
        self.found_model = found_model
        self.expected_dim = expected_dim
        self.found_dim = found_dim
        from rag.model_id import split_model_id

        (want, want_variant), (found, found_variant) = map(
            split_model_id, (expected_model, found_model)
        )
        fix = "re-ingest into a new --index directory or set RAG_EMBEDDING_MODEL back"
        if want == found and want_variant != found_variant:
            fix = (
                f"set RAG_EMBEDDING_VARIANT={found_variant}, the variant the index was built "
                f"with (it is {want_variant} now), or re-ingest into a new --index directory"
            )
        super().__init__(
            f"the index was built with embedding model {found_model!r} ({found_dim} dims) "
            f"but ragchat is configured with {expected_model!r} ({expected_dim} dims); {fix}"
        )


class IndexLockedError(StoreError):
    """Another process is writing to the index."""

    category = "infrastructure"

    def __init__(self, index_dir: Path | str, waited_s: float) -> None:
        self.index_dir = str(index_dir)
        self.waited_s = waited_s
        super().__init__(
            f"index {self.index_dir} is being written by another ingestion "
            f"(waited {waited_s:.0f}s); try again when it has finished"
        )


class UsageLogError(RagError):
    """The usage log (the Metrics page's history of answers) cannot be read or written."""

    category = "infrastructure"

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"usage log {self.path}: {reason}")


class ReviewError(RagError):
    """The review queue's database cannot be read or written."""

    category = "infrastructure"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the review queue cannot be read or written: {reason}")


class CacheError(RagError):
    """The response cache's database (SQLite file or Redis server) failed.

    A question never fails for it: the service logs it and answers as on a miss.
    """

    category = "infrastructure"

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"response cache {where}: {reason}")


class DocumentNotFoundError(RagError):
    """No indexed document matches an id or path."""

    category = "input"

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no indexed document matches {key!r}")


class InvalidInputError(RagError):
    """A request, a batch file or an argument is malformed; ``field`` names what is at fault.

    ``field`` is a JSON path or column name (``questions[3].question``), or ``line 7`` of an
    uploaded file.
    """

    category = "input"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class BaselineError(RagError):
    """An earlier evaluation (``ragchat eval --baseline FILE``) cannot be compared with.

    ``path`` is the file; ``reason`` what is wrong with it (missing, not JSON, no
    per-question scores, no question or mode in common with this run).
    """

    category = "input"

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"baseline {self.path}: {reason}")


class JobNotFoundError(RagError):
    """No job has this id (it never existed, or its records were removed)."""

    category = "input"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class EndpointFault(StrEnum):
    """What went wrong at a model endpoint, in categories that decide retry and fallback."""

    UNREACHABLE = "unreachable"  # refused, no route, DNS or TLS failure
    TIMEOUT = "timeout"  # no connection, no first token, or the time limit reached
    RATE_LIMITED = "rate_limited"  # HTTP 429
    SERVER_ERROR = "server_error"  # HTTP 5xx, or an error event inside the stream
    CLIENT_ERROR = "client_error"  # HTTP 4xx: bad request, auth, unknown model
    STREAM_DROPPED = "stream_dropped"  # the connection closed before the answer finished
    MALFORMED = "malformed"  # not server-sent events, not JSON, or not a chat completion
    EMPTY = "empty"  # the completion finished without any text


# Faults that may pass: retried at the endpoint, and a reason to ask again later.
PASSING_FAULTS = frozenset(
    {
        EndpointFault.UNREACHABLE,
        EndpointFault.TIMEOUT,
        EndpointFault.RATE_LIMITED,
        EndpointFault.SERVER_ERROR,
        EndpointFault.STREAM_DROPPED,
    }
)


@dataclass(frozen=True)
class EndpointFailure:
    """How one endpoint failed a request, after all the attempts made there."""

    endpoint: str
    fault: EndpointFault
    reason: str
    status: int | None = None
    attempts: int = 1
    # True when the endpoint itself was not at fault: the request waited out its time in
    # this process's line for the endpoint (busy, not broken).
    local: bool = False

    @property
    def endpoint_at_fault(self) -> bool:
        """Whether this says the endpoint is failing (what the circuit breaker counts).

        Unreachable, timed out, overloaded, server errors, dropped or malformed streams, a
        refused key or an unknown model; not a request it rightly refused (400, a context
        too long for it), an empty completion, or a wait in this process's own line.
        """
        if self.local:
            return False
        if self.fault is EndpointFault.CLIENT_ERROR:
            return self.status in (401, 403, 404)
        return self.fault is not EndpointFault.EMPTY

    @property
    def label(self) -> str:
        """The fault, with the HTTP status when there is one: ``rate_limited, HTTP 429``."""
        return f"{self.fault}, HTTP {self.status}" if self.status else str(self.fault)

    @property
    def detail(self) -> str:
        """The reason, with the number of attempts when there were several."""
        return f"{self.reason} ({self.attempts} attempts)" if self.attempts > 1 else self.reason


class ProviderError(RagError):
    """A model endpoint failed.

    ``fault`` and ``failures`` are set when ragchat's own client categorised the failure:
    ``failures`` holds one entry per endpoint tried, in order (the fallback last).
    """

    category = "model"

    def __init__(
        self,
        provider: str,
        status: int | str | None,
        reason: str,
        *,
        fault: EndpointFault | None = None,
        failures: Sequence[EndpointFailure] = (),
    ) -> None:
        self.provider = provider
        self.status = status
        self.reason = reason
        self.fault = fault
        self.failures = list(failures)
        label = fault if fault is not None else status
        if fault is not None and isinstance(status, int):
            label = f"{fault}, HTTP {status}"
        label_txt = f" ({label})" if label is not None else ""
        # A URL is named as one; a phrase ("the bundled model") as itself.
        where = provider if provider.startswith("the ") else f"model endpoint {provider}"
        super().__init__(f"{where} failed{label_txt}: {reason}")

    @classmethod
    def from_failures(cls, failures: Sequence[EndpointFailure]) -> ProviderError:
        """One line naming every endpoint tried and how each failed."""
        if not failures:
            raise ValueError("no failures to report")
        first, rest = failures[0], failures[1:]
        reason = first.detail + "".join(
            f"; fallback {f.endpoint} also failed ({f.label}): {f.detail}"
            if f.attempts
            else f"; fallback {f.endpoint} not tried: {f.reason}"
            for f in rest
        )
        return cls(first.endpoint, first.status, reason, fault=first.fault, failures=failures)

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Whether a later try may succeed: some endpoint failed for a passing reason.

        A refused key, an unknown model or a bad request fails the same way again.
        """
        faults: list[EndpointFault | None] = [f.fault for f in self.failures] or [self.fault]
        return any(f is None or f in PASSING_FAULTS for f in faults)


class AnswerCutError(ProviderError):
    """The endpoint failed after part of the answer had already been shown to the user.

    Nothing can be retried or sent to the fallback then; the caller ends the answer with
    what arrived and says that it was cut. ``model`` names the model that wrote that part.
    """

    category = "model"

    def __init__(
        self, provider: str, fault: EndpointFault, reason: str, *, model: str, tokens: int
    ) -> None:
        self.model = model
        self.tokens = tokens
        failure = EndpointFailure(provider, fault, reason)
        super().__init__(provider, None, reason, fault=fault, failures=[failure])


class PiiBlockedError(RagError):
    """``RAG_PII=block``: the text for a remote model holds personal data, so none was sent.

    ``kinds`` names the kinds found (EMAIL_ADDRESS, ...), never the values; ``where`` says
    which part of the prompt held them (the question, the conversation, the passages).
    """

    category = "security"

    def __init__(self, kinds: Sequence[str], where: Sequence[str] = ()) -> None:
        self.kinds = sorted(set(kinds))
        self.where = list(where)
        place = f" in {' and '.join(self.where)}" if self.where else ""
        super().__init__(
            f"refused: personal data ({', '.join(self.kinds)}){place} would go to a remote "
            "model endpoint, and RAG_PII=block sends none; ask without it, or set RAG_PII=mask"
        )


class ContentRefusedError(RagError):
    """A question or an answer was refused by content moderation.

    ``stage`` is "question" or "answer"; ``by`` names the moderator (the blocklist or the
    endpoint); ``categories`` are the categories it flagged (never the text).
    """

    category = "security"

    def __init__(self, stage: str, by: str, categories: Sequence[str]) -> None:
        self.stage = stage
        self.by = by
        self.categories = list(categories)
        what = f" ({', '.join(self.categories)})" if self.categories else ""
        super().__init__(f"refused: the {stage} was flagged by {by}{what}")


class AuthenticationError(RagError):
    """The caller is not signed in: no key or session, or one that is not valid (HTTP 401).

    ``reason`` says what is wrong with what was given (expired, revoked, tampered with), and
    never echoes the secret itself.
    """

    category = "security"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not signed in: {reason}")


class PermissionDeniedError(RagError):
    """The caller is signed in but may not do this (HTTP 403).

    Only for actions on things the caller may see (a viewer uploading to a collection shared
    with them, a read-only key deleting); a thing the caller may not read is not found.
    """

    category = "security"

    def __init__(self, action: str, reason: str) -> None:
        self.action = action
        self.reason = reason
        super().__init__(f"not allowed to {action}: {reason}")


class NotFoundError(RagError):
    """No ``kind`` has this id, or the caller may not read it: the two answer alike (404)."""

    category = "input"

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} {key!r}")


class RateLimitedError(RagError):
    """A rate limit was reached; ``retry_after_s`` says when to try again (HTTP 429)."""

    category = "business_rule"

    def __init__(self, limit: str, retry_after_s: float) -> None:
        self.limit = limit
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        super().__init__(
            f"rate limit reached ({limit}); try again in {_duration(self.retry_after_s)}"
        )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{(seconds + 59) // 60} min"
    return f"{(seconds + 3599) // 3600} h"


CATEGORIES = ("model", "infrastructure", "input", "security", "business_rule")


def category_of(error: BaseException) -> str:
    """The category of any error (one that is not a ``RagError`` is a bug: infrastructure)."""
    return error.category if isinstance(error, RagError) else "infrastructure"


@dataclass(frozen=True)
class RetryPolicy:
    """What happens after an error of one category.

    ``retries``: how many more times an automatic caller (a batch question) tries, waiting
    ``backoff_s`` and then twice as long each time. ``client_retry_after_s``: the
    ``Retry-After`` the HTTP API sends with it (None: none; the same request would fail
    again, or, for a rate limit, the error names its own).
    """

    retries: int
    backoff_s: float = 0.0
    client_retry_after_s: int | None = None

    def wait_s(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return self.backoff_s * 2 ** (attempt - 1)


NO_RETRY = RetryPolicy(0)

# Per category. A model failure has already been retried on each endpoint (with backoff,
# RAG_LLM_MAX_RETRIES) and sent to the other endpoints (rag.llm.router) within the
# question's deadline; a batch question tries twice more, later, when the endpoint may be
# back. Infrastructure (a busy index, a storage hiccup) passes within seconds. Input,
# security and business rules fail the same way again: never retried.
RETRY_POLICIES: dict[str, RetryPolicy] = {
    "model": RetryPolicy(retries=2, backoff_s=5.0, client_retry_after_s=10),
    "infrastructure": RetryPolicy(retries=3, backoff_s=1.0, client_retry_after_s=2),
    "input": NO_RETRY,
    "security": NO_RETRY,
    "business_rule": NO_RETRY,
}


def retry_policy(error: BaseException) -> RetryPolicy:
    """The retry policy for an error: its category's, or none when it cannot pass."""
    if isinstance(error, RagError) and not error.retryable:
        return NO_RETRY
    return RETRY_POLICIES[category_of(error)] if isinstance(error, RagError) else NO_RETRY


def error_id(error: BaseException) -> str:
    """The short id a user sees with an error; the log line about it carries the same id.

    Made at the first call and kept on the exception, so every adapter that shows the
    error and the log name it alike (8 hex digits, the first a letter: unique enough to
    find in a day's log).
    """
    found = getattr(error, "_ragchat_error_id", None)
    if isinstance(found, str):
        return found
    # It starts with a letter: an id of eight decimal digits would read as a number to the
    # log redaction (rag.guard.pii.LogDetector) and be masked, losing the link to the log.
    made = secrets.choice("abcdef") + secrets.token_hex(4)[1:]
    with contextlib.suppress(AttributeError):  # an exception type without a __dict__
        error._ragchat_error_id = made  # type: ignore[attr-defined]
    return made


def with_id(error: BaseException, message: str | None = None) -> str:
    """The message a user is shown: the error's (or ``message``) and its id."""
    return f"{message if message is not None else error} (error id {error_id(error)})"
