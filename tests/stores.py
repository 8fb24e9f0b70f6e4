"""Small stores for store tests: fake embeddings, real FAISS and SQLite in a tmp folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rag.store.faiss import FaissStore, NewChunk
from tests.fakes import CountingEmbeddings


def make_store(
    index_dir: Path, *, model: str = "fake", dimension: int = 32, timeout: float = 5.0
) -> FaissStore:
    """A store with deterministic fake embeddings; ``timeout`` is the writer lock's."""
    return FaissStore(
        index_dir, CountingEmbeddings(size=dimension), model_id=model, dimension=dimension,
        lock_timeout_s=timeout,
    )  # fmt: skip


def add_doc(store: FaissStore, doc_id: str, texts: list[str]) -> None:
    """Publish one document (source ``/<doc_id>.txt``) with one chunk per text."""
    vectors = np.asarray(store.embeddings.embed_documents(texts), dtype="float32")
    with store.writer() as w:
        w.add_document(
            doc_id, kind="text", pages=None, source=f"/{doc_id}.txt",
            chunks=[NewChunk(t) for t in texts], vectors=vectors,
        )  # fmt: skip


def segment_files(index_dir: Path, generation: str) -> list[Path]:
    """The vector segment files a generation's manifest lists, oldest first."""
    data = json.loads((index_dir / "manifests" / f"{generation}.json").read_text())
    return [index_dir / "segments" / f"{s['name']}.faiss" for s in data["segments"]]


def newest_segment(index_dir: Path, generation: str) -> Path:
    """The segment a generation added last (the one its writer wrote)."""
    return segment_files(index_dir, generation)[-1]
