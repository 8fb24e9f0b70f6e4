from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes import CountingEmbeddings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys or RAG_* settings."""
    for name in list(os.environ):
        if name.startswith("RAG_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fake_embeddings() -> CountingEmbeddings:
    return CountingEmbeddings(size=32)


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"
