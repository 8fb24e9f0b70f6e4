"""The job store in Redis, for ``ragchat worker`` processes on several machines.

Why Redis and not the shared SQLite file: workers on other machines cannot share one
SQLite file safely (SQLite over a network file system loses locks), while every worker
already reaches the Redis server that holds the queue. Each job is a few keys:

- ``{prefix}:job:{id}``: the record (JSON), changed by a compare-and-set Lua script;
- ``{prefix}:items:{id}`` and ``{prefix}:rows:{id}``: hashes by input index; a row is
  written with ``HSETNX`` (insert-or-ignore);
- ``{prefix}:claims:{id}``: a hash index -> ``owner expires``, claimed by a Lua script;
- ``{prefix}:index``: a sorted set of job ids by creation time.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis import Redis
from redis.exceptions import WatchError

from rag.errors import JobNotFoundError, RagError
from rag.jobs.store import Claim, JobRecord, RecordChanges

# KEYS[1] claims hash; ARGV: index, owner, now, expires, limit.
_CLAIM = """
local all = redis.call('HGETALL', KEYS[1])
local live = 0
local now = tonumber(ARGV[3])
local mine = nil
for i = 1, #all, 2 do
  local owner, expires = string.match(all[i + 1], '^(.*) ([^ ]+)$')
  if tonumber(expires) < now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    live = live + 1
    if all[i] == ARGV[1] then mine = owner end
  end
end
if mine ~= nil and mine ~= ARGV[2] then return 'taken' end
if mine == nil and live >= tonumber(ARGV[5]) then return 'busy' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[4])
return 'ok'
"""

# KEYS[1] claims hash; ARGV: owner, expires, index...
_REFRESH = """
for i = 3, #ARGV do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held and string.match(held, '^(.*) [^ ]+$') == ARGV[1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1] .. ' ' .. ARGV[2])
  end
end
return 0
"""

# KEYS[1] claims hash; ARGV: index, owner.
_RELEASE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, '^(.*) [^ ]+$') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisJobStore(RecordChanges):
    """``rag.jobs.store.JobStore`` in Redis (see the module docstring for the keys)."""

    def __init__(self, url: str, *, prefix: str = "ragchat") -> None:
        try:
            self._redis = Redis.from_url(url, decode_responses=True)
        except ValueError as exc:
            raise RagError(f"RAG_QUEUE_URL {url!r} is no Redis URL: {exc}") from exc
        self._prefix = prefix
        self._claim = self._redis.register_script(_CLAIM)
        self._refresh = self._redis.register_script(_REFRESH)
        self._release = self._redis.register_script(_RELEASE)

    def _key(self, kind: str, job_id: str = "") -> str:
        return f"{self._prefix}:{kind}:{job_id}" if job_id else f"{self._prefix}:{kind}"

    def create(self, record: JobRecord, items: dict[int, dict[str, Any]]) -> None:
        """Store a new job and its input items (by input index)."""
        with self._redis.pipeline() as pipe:
            pipe.set(self._key("job", record.id), json.dumps(record.to_json()))
            if items:
                pipe.hset(
                    self._key("items", record.id),
                    mapping={str(i): json.dumps(v) for i, v in items.items()},
                )
            pipe.zadd(self._key("index"), {record.id: time.time()})
            pipe.execute()

    def record(self, job_id: str) -> JobRecord:
        """A job's record (raises ``JobNotFoundError``)."""
        raw = self._redis.get(self._key("job", job_id))
        if raw is None:
            raise JobNotFoundError(job_id)
        return JobRecord.from_json(json.loads(raw))

    def records(self) -> list[JobRecord]:
        """Every job's record, newest first."""
        ids = [str(i) for i in self._redis.zrevrange(self._key("index"), 0, -1)]
        if not ids:
            return []
        raws = self._redis.mget([self._key("job", i) for i in ids])
        return [JobRecord.from_json(json.loads(r)) for r in raws if r is not None]

    def item(self, job_id: str, index: int) -> dict[str, Any]:
        """One input item of a job (raises ``JobNotFoundError``)."""
        raw = self._redis.hget(self._key("items", job_id), str(index))
        if raw is None:
            raise JobNotFoundError(job_id)
        data: dict[str, Any] = json.loads(raw)
        return data

    def items(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every input item of a job, by input index (in input order)."""
        raw = self._redis.hgetall(self._key("items", job_id))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def _modify(self, job_id: str, change: Any) -> Any:
        key = self._key("job", job_id)
        while True:
            with self._redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise JobNotFoundError(job_id)
                    record = JobRecord.from_json(json.loads(raw))
                    outcome = change(record)
                    if outcome is False:
                        return outcome
                    pipe.multi()
                    pipe.set(key, json.dumps(record.to_json()))
                    pipe.execute()
                except WatchError:
                    continue  # changed meanwhile: read it again
                return outcome

    def put_row(self, job_id: str, index: int, row: dict[str, Any]) -> bool:
        """Write a question's row unless it has one; True when this wrote it."""
        return bool(self._redis.hsetnx(self._key("rows", job_id), str(index), json.dumps(row)))

    def has_row(self, job_id: str, index: int) -> bool:
        """Whether a question has its row."""
        return bool(self._redis.hexists(self._key("rows", job_id), str(index)))

    def rows(self, job_id: str) -> dict[int, dict[str, Any]]:
        """Every row of a job, by input index."""
        raw = self._redis.hgetall(self._key("rows", job_id))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def row_count(self, job_id: str) -> int:
        """How many rows a job has."""
        return int(self._redis.hlen(self._key("rows", job_id)))

    def claim(self, job_id: str, index: int, owner: str, ttl_s: float, limit: int) -> Claim:
        """Claim a question for ``owner`` for ``ttl_s``, if fewer than ``limit`` are claimed."""
        now = time.time()
        outcome = self._claim(
            keys=[self._key("claims", job_id)], args=[index, owner, now, now + ttl_s, limit]
        )
        return Claim(str(outcome))

    def release(self, job_id: str, index: int, owner: str) -> None:
        """Drop ``owner``'s claim on a question."""
        self._release(keys=[self._key("claims", job_id)], args=[index, owner])

    def live_claims(self, job_id: str) -> int:
        """How many of a job's questions are claimed now (expired claims not counted)."""
        now = time.time()
        held = self._redis.hvals(self._key("claims", job_id))
        return sum(1 for v in held if float(str(v).rsplit(" ", 1)[1]) >= now)

    def refresh(self, owner: str, claims: list[tuple[str, int]], ttl_s: float) -> None:
        """Extend ``owner``'s claims (its worker is alive)."""
        expires = time.time() + ttl_s
        by_job: dict[str, list[int]] = {}
        for job, idx in claims:
            by_job.setdefault(job, []).append(idx)
        for job, indices in by_job.items():
            self._refresh(keys=[self._key("claims", job)], args=[owner, expires, *indices])

    def unfinished(self) -> list[str]:
        """Ids of jobs neither finished nor cancelled."""
        return [r.id for r in self.records() if r.finished_at is None and not r.cancelled]

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
