"""The response cache's Redis backend passes the cache contract, on a real ``redis-server``.

The server runs on a free loopback port for this module; the test is skipped only when
``/usr/bin/redis-server`` is not installed (``make redis`` installs it).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest
from redis import Redis

from rag.cache.base import AnswerCache
from rag.cache.redis_cache import RedisAnswerCache
from rag.errors import CacheError
from rag.llm.local import free_port
from tests.cache_contract import SCOPE, AnswerCacheContract, Clock, answer
from tests.fakes import SteeredEmbeddings

_PREFIXES = itertools.count()


class TestRedisAnswerCache(AnswerCacheContract):
    @pytest.fixture
    def open_backend(self, redis_url: str) -> Callable[[], AnswerCache]:
        prefix = f"test{next(_PREFIXES)}:cache"  # each test its own keys
        return lambda: RedisAnswerCache(redis_url, prefix=prefix)


def test_redis_deletes_expired_entries_and_their_index_itself(redis_url: str) -> None:
    backend = RedisAnswerCache(redis_url, prefix="expiry:cache")
    from rag.cache.answers import ResponseCache

    clock = Clock()
    cache = ResponseCache(backend, SteeredEmbeddings(size=32), ttl_s=0.3, clock=clock)
    cache.keep(cache.lookup("When do backups run?", SCOPE), answer())
    assert backend.count() == 1
    time.sleep(0.5)  # Redis's own clock: the keys are gone, whatever ours says
    assert backend.count() == 0
    client = Redis.from_url(redis_url)
    assert client.keys("expiry:cache:*") == []
    client.close()


def test_the_index_of_a_scope_keeps_the_newest_entries(redis_url: str) -> None:
    backend = RedisAnswerCache(redis_url, prefix="trim:cache", keep=3)
    from rag.cache.answers import ResponseCache

    clock = Clock()
    cache = ResponseCache(backend, SteeredEmbeddings(size=32), clock=clock)
    for i in range(5):
        clock.now += 1
        cache.keep(cache.lookup(f"Question {'abcde'[i]}?", SCOPE), answer())
    client = Redis.from_url(redis_url)
    assert client.zcard(f"trim:cache:s:{SCOPE.id}") == 3
    client.close()
    assert cache.lookup("question a", SCOPE).hit is not None  # exact look-ups still find it


def test_an_unreachable_server_is_a_cache_error() -> None:
    backend = RedisAnswerCache(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(CacheError, match="cannot read it"):
        backend.get(SCOPE.id, "k", 0.0)
    with pytest.raises(CacheError):
        RedisAnswerCache("http://nowhere")


def test_a_cache_error_names_the_server_without_its_password() -> None:
    backend = RedisAnswerCache(f"redis://ann:s3cret@127.0.0.1:{free_port()}/0", timeout_s=0.5)
    with pytest.raises(CacheError) as caught:
        backend.get(SCOPE.id, "k", 0.0)
    assert "s3cret" not in str(caught.value) and "ann@127.0.0.1" in str(caught.value)
