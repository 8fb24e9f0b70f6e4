"""The embedded store passes the whole store contract (``tests/contract.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rag.store.faiss import FaissStore
from tests.contract import IndexContract
from tests.fakes import CountingEmbeddings


class TestFaissStoreIndexContract(IndexContract):
    @pytest.fixture
    def open_store(self, index_dir: Path) -> Callable[..., FaissStore]:
        def open_store(
            *, model: str = "fake", dimension: int = 32, timeout: float = 5.0, scanner: Any = None
        ) -> FaissStore:
            return FaissStore(
                index_dir, CountingEmbeddings(size=dimension), model_id=model,
                dimension=dimension, lock_timeout_s=timeout, scanner=scanner,
            )  # fmt: skip

        return open_store

    @pytest.fixture
    def store(self, open_store: Callable[..., FaissStore]) -> FaissStore:
        return open_store()


def test_the_settings_choose_the_backend(tmp_path: Path) -> None:
    from rag.errors import ConfigError
    from rag.service.components import build_store
    from rag.settings import load_settings
    from rag.store.postgres import PostgresStore

    folder = build_store(load_settings(data_dir=tmp_path), CountingEmbeddings(size=384))
    assert isinstance(folder, FaissStore)
    url = "postgresql://app:s3cret@db.internal:5432/rag"
    shared = build_store(load_settings(data_dir=tmp_path, store_url=url))
    assert isinstance(shared, PostgresStore)  # nothing is connected until first use
    assert shared.label == "postgresql://app@db.internal:5432/rag"  # no password in messages
    for bad in ("mysql://db/rag", "db.internal:5432", "sqlite:///x.db"):
        with pytest.raises(ConfigError, match="RAG_STORE_URL") as caught:
            load_settings(store_url=bad)
        assert "postgresql://" in str(caught.value)
    assert load_settings(store_url="").store_url is None
