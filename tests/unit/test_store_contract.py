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
