"""The response cache: answers served again, exactly or to a question that means the same.

- ``base``: the backend interface, the scope of an answer and the question keys;
- ``answers``: ``ResponseCache``, the exact and semantic look-ups and what is kept;
- ``codec``: an answer as JSON and back;
- ``sqlite_cache`` and ``redis_cache``: the two backends.

``RagService.ask`` looks a first question up after every check on it, serves a hit
through the engine's guardrails, and keeps complete answers of first questions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.cache.answers import Hit, Lookup, ResponseCache
from rag.cache.base import AnswerCache, CacheScope

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from rag.settings import Settings

__all__ = ["AnswerCache", "CacheScope", "Hit", "Lookup", "ResponseCache", "build_cache"]


def build_cache(settings: Settings, embeddings: Embeddings) -> ResponseCache | None:
    """The cache the settings ask for (None with ``RAG_CACHE=false``).

    In Redis when the job queue is (``RAG_QUEUE_URL`` redis://), so every process and
    machine of the installation shares it; otherwise a SQLite file under the data folder.

    Raises:
        CacheError: the database cannot be opened.
    """
    if not settings.cache:
        return None
    backend: AnswerCache
    if settings.queue_url:
        from rag.cache.redis_cache import RedisAnswerCache

        backend = RedisAnswerCache(settings.queue_url, keep=settings.cache_scan)
    else:
        from rag.cache.sqlite_cache import SqliteAnswerCache

        backend = SqliteAnswerCache(settings.cache_path)
    return ResponseCache(
        backend,
        embeddings,
        similarity=settings.cache_similarity,
        ttl_s=settings.cache_ttl_s,
        scan=settings.cache_scan,
    )
