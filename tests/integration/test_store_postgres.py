"""The Postgres store passes the same contract as the embedded one, on a real server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rag.store.postgres import PostgresStore
from tests.contract import CollectionsContract, IndexContract, StoreContract
from tests.pg_support import pg_stores, pg_url  # noqa: F401  (fixtures)


class TestPostgresStoreContract(StoreContract, CollectionsContract, IndexContract):
    @pytest.fixture
    def store(self, pg_stores: Callable[..., PostgresStore]) -> PostgresStore:  # noqa: F811
        return pg_stores()

    @pytest.fixture
    def open_store(self, pg_stores: Callable[..., PostgresStore]) -> Callable[..., Any]:  # noqa: F811
        return pg_stores
