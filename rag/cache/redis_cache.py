"""The response cache in Redis, used when the job queue is in Redis (``RAG_QUEUE_URL``).

Every process of an installation that shares its queue shares its cache too, on any
machine. Keys, under ``{prefix}`` (``ragchat:cache``):

- ``{prefix}:e:{scope}:{key}``: one entry, a hash (answer, vector, marks, expiry), which
  Redis deletes when it expires;
- ``{prefix}:s:{scope}``: the scope's entries by time stored (a sorted set), for semantic
  look-ups; trimmed to the newest ``keep`` and expiring with the newest entry.
"""

from __future__ import annotations

import math
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from rag.cache.base import Candidate, Entry
from rag.errors import CacheError
from rag.text import redacted

PREFIX = "ragchat:cache"


class RedisAnswerCache:
    """``rag.cache.base.AnswerCache`` in Redis (see the module docstring for the keys)."""

    def __init__(
        self, url: str, *, prefix: str = PREFIX, keep: int = 1000, timeout_s: float = 2.0
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        try:
            self._redis: Redis = Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        except ValueError as exc:
            raise CacheError("RAG_QUEUE_URL", f"{url!r} is no Redis URL: {exc}") from exc
        self._where = redacted(url)  # no password in messages
        self._prefix = prefix
        self._keep = keep

    def _entry(self, scope: str, key: str) -> str:
        return f"{self._prefix}:e:{scope}:{key}"

    def _index(self, scope: str) -> str:
        return f"{self._prefix}:s:{scope}"

    def get(self, scope: str, key: str, now: float) -> str | None:
        """The answer stored for this scope and question key, unless expired."""
        try:
            answer, expires = self._redis.hmget(self._entry(scope, key), ["a", "x"])
        except RedisError as exc:
            raise CacheError(self._where, f"cannot read it: {exc}") from exc
        if answer is None or expires is None or float(expires) <= now:
            return None
        return _text(answer)

    def recent(self, scope: str, limit: int, now: float) -> list[Candidate]:
        """The newest ``limit`` unexpired entries of a scope, newest first."""
        index = self._index(scope)
        try:
            keys = [_text(k) for k in self._redis.zrevrange(index, 0, limit - 1)]
            if not keys:
                return []
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._entry(scope, key), ["v", "n", "x"])
            rows = pipe.execute()
            gone = [k for k, (v, _, _) in zip(keys, rows, strict=True) if v is None]
            if gone:  # expired: Redis deleted the entry, the index still names it
                self._redis.zrem(index, *gone)
        except RedisError as exc:
            raise CacheError(self._where, f"cannot read it: {exc}") from exc
        return [
            Candidate(key, bytes(v), _text(n))
            for key, (v, n, x) in zip(keys, rows, strict=True)
            if v is not None and n is not None and x is not None and float(x) > now
        ]

    def put(self, scope: str, key: str, entry: Entry, now: float) -> None:
        """Store (or replace) the answer for this scope and question key."""
        ttl_ms = max(1, math.ceil((entry.expires_at - now) * 1000))
        name, index = self._entry(scope, key), self._index(scope)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(name)
            pipe.hset(
                name,
                mapping={
                    "a": entry.answer.encode("utf-8"),
                    "v": entry.vector,
                    "n": entry.marks.encode("utf-8"),
                    "x": repr(entry.expires_at),
                },
            )
            pipe.pexpire(name, ttl_ms)
            pipe.zadd(index, {key: now})
            pipe.zremrangebyrank(index, 0, -(self._keep + 1))
            pipe.pexpire(index, ttl_ms)
            pipe.execute()
        except RedisError as exc:
            raise CacheError(self._where, f"cannot write it: {exc}") from exc

    def clear(self) -> int:
        """Remove every entry; how many there were."""
        entries = 0
        try:
            batch: list[bytes] = []
            for name in self._redis.scan_iter(match=f"{self._prefix}:*", count=500):
                entries += bytes(name).startswith(f"{self._prefix}:e:".encode())
                batch.append(name)
                if len(batch) >= 500:
                    self._redis.delete(*batch)
                    batch = []
            if batch:
                self._redis.delete(*batch)
        except RedisError as exc:
            raise CacheError(self._where, f"cannot write it: {exc}") from exc
        return entries

    def count(self) -> int:
        """Entries stored (Redis has deleted the expired ones)."""
        try:
            return sum(1 for _ in self._redis.scan_iter(match=f"{self._prefix}:e:*", count=500))
        except RedisError as exc:
            raise CacheError(self._where, f"cannot read it: {exc}") from exc

    def close(self) -> None:
        """Close the connections."""
        self._redis.close()


def _text(value: Any) -> str:
    """A value Redis returned (bytes: the client does not decode) as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
