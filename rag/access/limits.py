"""Rate limits with the ``limits`` library.

Requests per minute (per user and per API key), model tokens per day (per user), failed
sign-ins (per account and per address).

Counters live in the storage RAG_RATE_LIMIT_STORAGE names: ``memory://`` (this process)
or ``redis://...`` (shared by every server and worker of an installation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from rag.access.principal import Principal
from rag.errors import RateLimitedError


@dataclass(frozen=True)
class LimitSettings:
    """The limits (0 turns one off)."""

    requests_per_minute: int = 120
    key_requests_per_minute: int = 60
    tokens_per_day: int = 0
    signin_failures: int = 5  # per account, per 15 minutes
    signin_failures_per_address: int = 20  # per address, per 15 minutes


class RateLimits:
    """Checks and counts; each check raises ``RateLimitedError`` with when to try again."""

    def __init__(self, settings: LimitSettings, storage: str | Storage = "memory://") -> None:
        self.settings = settings
        self.storage = storage_from_string(storage) if isinstance(storage, str) else storage
        self._window = MovingWindowRateLimiter(self.storage)
        self._requests = _item(settings.requests_per_minute, "minute")
        self._key_requests = _item(settings.key_requests_per_minute, "minute")
        self._tokens = _item(settings.tokens_per_day, "day")
        self._signin = _item(settings.signin_failures, "15 minutes")
        self._signin_address = _item(settings.signin_failures_per_address, "15 minutes")

    def request(self, caller: Principal) -> None:
        """Count one request of ``caller`` (per user, and per key when it came with one)."""
        if self._key_requests is not None and caller.key_id is not None:
            self._hit(
                self._key_requests, "requests per minute for this API key", "key", caller.key_id
            )
        if self._requests is not None:
            self._hit(self._requests, "requests per minute", "user", caller.user_id)

    def tokens_left(self, caller: Principal) -> None:
        """Refuse a question when the user's model tokens for the day are spent."""
        item = self._tokens
        if item is None:
            return
        if not self._window.test(item, "tokens", caller.user_id):
            raise RateLimitedError(
                "model tokens per day", self._reset_in(item, "tokens", caller.user_id)
            )

    def spend_tokens(self, caller: Principal, tokens: int) -> None:
        """Count the model tokens a question used (prompt and answer)."""
        item = self._tokens
        if item is None or tokens <= 0:
            return
        # A question may overshoot what is left (counted up to the budget): the next is
        # refused. (A hit above what is left would count nothing.)
        left = self._window.get_window_stats(item, "tokens", caller.user_id).remaining
        if left > 0:
            self._window.hit(item, "tokens", caller.user_id, cost=min(tokens, left))

    def signin_allowed(self, name: str, address: str) -> None:
        """Refuse a sign-in while the account or the address has failed too often."""
        for item, kind, key in (
            (self._signin, "account", name.lower()),
            (self._signin_address, "address", address),
        ):
            if item is not None and not self._window.test(item, "signin", kind, key):
                raise RateLimitedError(
                    f"failed sign-ins for this {kind}", self._reset_in(item, "signin", kind, key)
                )

    def signin_failed(self, name: str, address: str) -> None:
        """Count a failed sign-in against the account and the address."""
        if self._signin is not None:
            self._window.hit(self._signin, "signin", "account", name.lower())
        if self._signin_address is not None:
            self._window.hit(self._signin_address, "signin", "address", address)

    def _hit(self, item: RateLimitItem, what: str, *ids: str) -> None:
        if not self._window.hit(item, *ids):
            raise RateLimitedError(what, self._reset_in(item, *ids))

    def _reset_in(self, item: RateLimitItem, *ids: str) -> float:
        stats = self._window.get_window_stats(item, *ids)
        return max(1.0, stats.reset_time - time.time())


def _item(amount: int, per: str) -> RateLimitItem | None:
    if amount < 0:
        raise ValueError("a rate limit cannot be negative")
    return None if amount == 0 else parse(f"{amount} per {per}")
