"""Content moderation of questions and answers: a local blocklist and/or a remote endpoint.

A ``Moderator`` looks at one text and returns a ``Verdict``; the chain refuses a flagged
question before any work and a flagged answer before it is stored (``ContentRefusedError``).
Two kinds ship: ``BlocklistModerator`` (terms and regular expressions from a local file,
``RAG_MODERATION_BLOCKLIST``) and ``EndpointModerator`` (any OpenAI-compatible
``/moderations`` route, ``RAG_MODERATION_URL``). ``build_moderator`` assembles what the
settings ask for. Verdicts, errors and logs name categories and endpoints, never the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rag.errors import ConfigError, EndpointFault, ProviderError
from rag.guard.injection import normalize

if TYPE_CHECKING:
    import httpx

    from rag.settings import Settings

BLOCKLIST_SETTING = "RAG_MODERATION_BLOCKLIST"
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Verdict:
    """What a moderator decided about one text.

    Attributes:
        flagged: Whether the text must be refused.
        categories: The categories it was flagged for (empty when not flagged).
        by: Who decided, for the refusal message ("the blocklist", "the moderation
            endpoint").
    """

    flagged: bool
    categories: tuple[str, ...] = ()
    by: str = ""


class Moderator(Protocol):
    """Anything that can judge a question or an answer."""

    def check(self, text: str) -> Verdict:
        """The verdict on ``text``.

        Raises:
            ProviderError: A remote moderator could not give one.
        """
        ...


def normalise(text: str) -> str:
    """Text as the blocklist matches it: the injection scanner's normal form.

    NFKC, casefolded, invisible characters (tag characters too) removed, look-alike
    letters mapped to Latin, spaced-out letters joined, runs of white space made one.
    """
    return " ".join(normalize(text).split())


class BlocklistModerator:
    """Flags texts containing a blocked term (as a whole word) or matching a blocked pattern.

    Terms and texts are compared after ``normalise``, so case, width variants, invisible
    characters and runs of whitespace do not matter; a term matches only as whole words
    ("ass" does not match "class"). Patterns are regular expressions searched in the
    normalised text, case-insensitively.
    """

    by = "the blocklist"

    def __init__(self, terms: Sequence[str] = (), patterns: Sequence[str] = ()) -> None:
        """Build from terms and patterns.

        Raises:
            ValueError: A term is empty after normalising, or a pattern is not a valid
                regular expression.
        """
        words = []
        for term in terms:
            word = normalise(term)
            if not word:
                raise ValueError(f"blocklist term {term!r} is empty")
            words.append(re.escape(word).replace(r"\ ", r"\s+"))
        self._terms: re.Pattern[str] | None = None
        if words:
            alternatives = "|".join(sorted(words, key=len, reverse=True))
            self._terms = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
        self._patterns: list[re.Pattern[str]] = []
        for pattern in patterns:
            try:
                self._patterns.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc.msg}") from None

    @classmethod
    def from_file(cls, path: Path | str) -> BlocklistModerator:
        """Read a blocklist file: one term a line, ``re:`` before a regular expression.

        Blank lines and lines starting with ``#`` are skipped; surrounding whitespace is
        ignored.

        Raises:
            ConfigError: ``RAG_MODERATION_BLOCKLIST``: the file cannot be read, or a line
                holds an invalid regular expression (the line number is named).
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(BLOCKLIST_SETTING, f"{path} is not UTF-8 text") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(BLOCKLIST_SETTING, f"cannot read {path}: {reason}") from None
        terms: list[str] = []
        patterns: list[str] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("re:"):
                pattern = line[3:].strip()
                try:
                    re.compile(pattern, re.IGNORECASE)
                except re.error as exc:
                    raise ConfigError(
                        BLOCKLIST_SETTING,
                        f"{path} line {number}: invalid regular expression: {exc.msg}",
                    ) from None
                if not pattern:
                    raise ConfigError(BLOCKLIST_SETTING, f"{path} line {number}: empty pattern")
                patterns.append(pattern)
            elif normalise(line):
                terms.append(line)
        return cls(terms, patterns)

    def check(self, text: str) -> Verdict:
        """Flagged when a term or a pattern occurs in the normalised text."""
        plain = normalise(text)
        if (self._terms is not None and self._terms.search(plain)) or any(
            p.search(plain) for p in self._patterns
        ):
            return Verdict(True, ("blocklist",), self.by)
        return Verdict(False, (), self.by)


class EndpointModerator:
    """An OpenAI-compatible moderation endpoint: ``POST {base_url}/moderations``.

    Sends ``{"input": text, "model": model}`` and reads ``{"results": [{"flagged": bool,
    "categories": {name: bool}}]}``; the text is flagged when any result is.
    """

    by = "the moderation endpoint"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Configure the endpoint; nothing is sent until ``check``.

        Raises:
            ValueError: ``base_url`` is not an http(s) URL or ``timeout_s`` is not positive.
        """
        import httpx

        if not re.match(r"https?://[^/\s]+", base_url):
            raise ValueError(f"moderation endpoint {base_url!r} is not an http(s) URL")
        if timeout_s <= 0:
            raise ValueError("moderation timeout must be positive")
        self.url = base_url.rstrip("/") + "/moderations"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s), headers=headers, transport=transport
        )
        self._timeout_s = timeout_s

    def check(self, text: str) -> Verdict:
        """Ask the endpoint about ``text``.

        Raises:
            ProviderError: The endpoint cannot be reached, times out, answers with an HTTP
                error, or answers something that is not a moderation result.
        """
        import httpx

        payload: dict[str, Any] = {"input": text}
        if self.model:
            payload["model"] = self.model
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException:
            raise self._error(
                None, f"no answer within {self._timeout_s:g} s", EndpointFault.TIMEOUT
            ) from None
        except httpx.HTTPError as exc:
            raise self._error(
                None, f"cannot be reached ({type(exc).__name__})", EndpointFault.UNREACHABLE
            ) from None
        status = response.status_code
        if status >= 400:
            fault = (
                EndpointFault.RATE_LIMITED
                if status == 429
                else EndpointFault.SERVER_ERROR
                if status >= 500
                else EndpointFault.CLIENT_ERROR
            )
            raise self._error(status, f"answered HTTP {status}", fault)
        try:
            body = response.json()
        except ValueError:
            raise self._error(status, "the answer is not JSON", EndpointFault.MALFORMED) from None
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list) or not results:
            raise self._error(status, "the answer holds no results", EndpointFault.MALFORMED)
        flagged = False
        categories: list[str] = []
        for result in results:
            if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
                raise self._error(
                    status, "a result has no boolean 'flagged'", EndpointFault.MALFORMED
                )
            named = result.get("categories") or {}
            if not isinstance(named, dict):
                raise self._error(status, "'categories' is not an object", EndpointFault.MALFORMED)
            if result["flagged"]:
                flagged = True
                categories += [
                    str(k) for k, v in named.items() if v is True and k not in categories
                ]
        return Verdict(flagged, tuple(categories) if flagged else (), self.by)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _error(self, status: int | None, reason: str, fault: EndpointFault) -> ProviderError:
        # Named as the moderation endpoint with its URL; never the text that was checked.
        return ProviderError(f"the moderation endpoint {self.url}", status, reason, fault=fault)


class CombinedModerator:
    """Several moderators in order; the first to flag decides, and later ones are not asked."""

    def __init__(self, moderators: Sequence[Moderator]) -> None:
        """Combine ``moderators`` (at least one).

        Raises:
            ValueError: No moderator was given.
        """
        if not moderators:
            raise ValueError("CombinedModerator needs at least one moderator")
        self.moderators = list(moderators)

    def check(self, text: str) -> Verdict:
        """The combined verdict.

        Raises:
            ProviderError: A remote moderator could not give its verdict.
        """
        # The first flag decides: the text goes to no further moderator (an endpoint, say).
        for moderator in self.moderators:
            verdict = moderator.check(text)
            if verdict.flagged:
                return verdict
        return Verdict(False, (), verdict.by)


class MaskedModerator:
    """Checks texts with personal data masked (for a moderation endpoint that is remote)."""

    def __init__(self, moderator: Moderator, mask: Callable[[str], str]) -> None:
        self.moderator = moderator
        self.mask = mask

    def check(self, text: str) -> Verdict:
        """The inner moderator's verdict on ``text`` with its personal data masked."""
        return self.moderator.check(self.mask(text))


def build_moderator(
    settings: Settings, mask: Callable[[str], str] | None = None
) -> Moderator | None:
    """The moderator the settings ask for, or None when moderation is off.

    The blocklist (``RAG_MODERATION_BLOCKLIST``) checks first, then the endpoint
    (``RAG_MODERATION_URL`` with ``RAG_MODERATION_MODEL`` and ``RAG_MODERATION_API_KEY``).
    ``mask``, when given, masks personal data in what the endpoint receives.

    Raises:
        ConfigError: The blocklist cannot be read or holds an invalid pattern, or the
            endpoint URL is not an http(s) URL.
    """
    moderators: list[Moderator] = []
    blocklist = settings.moderation_blocklist
    if blocklist is not None:
        moderators.append(BlocklistModerator.from_file(blocklist))
    url = (settings.moderation_url or "").strip()
    if url:
        key = settings.moderation_api_key
        try:
            endpoint = EndpointModerator(
                url,
                key.get_secret_value() if key is not None else None,
                settings.moderation_model,
                settings.moderation_timeout_s,
            )
        except ValueError as exc:
            raise ConfigError("RAG_MODERATION_URL", str(exc)) from None
        moderators.append(endpoint if mask is None else MaskedModerator(endpoint, mask))
    if not moderators:
        return None
    return moderators[0] if len(moderators) == 1 else CombinedModerator(moderators)
