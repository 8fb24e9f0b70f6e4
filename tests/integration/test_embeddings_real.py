"""The numpy pass of the bundled model gives sentence-transformers' vectors and tokens."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.chunking import HFTokenizer
from rag.embeddings import BertEmbeddings, load_embeddings
from rag.settings import load_settings

TEXTS = [
    "How many connections does the server accept by default?",
    "max_connections (integer) sets the maximum number of concurrent connections. " * 30,
    "Ünïcödé, 日本語のテキスト, émoji 🎉 and TLS 1.2 in postgresql.conf",
    "def main():\n    return src/main.rs  # code\n\n\n\ttabs",
    "",
    "a" * 5000,
    "x",
]


@pytest.fixture(scope="module")
def reference() -> object:
    settings = load_settings(embedding_backend="sentence-transformers")
    return load_embeddings(settings)


def test_auto_runs_queries_in_numpy_and_documents_on_sentence_transformers() -> None:
    assert isinstance(load_embeddings(load_settings(), for_queries=True), BertEmbeddings)
    assert not isinstance(load_embeddings(load_settings()), BertEmbeddings)
    assert isinstance(load_embeddings(load_settings(embedding_backend="numpy")), BertEmbeddings)


def test_numpy_vectors_equal_sentence_transformers(reference: object) -> None:
    ours = load_embeddings(load_settings(embedding_batch_size=3), for_queries=True)
    expected = np.array(reference.embed_documents(TEXTS))  # type: ignore[attr-defined]
    got = np.array(ours.embed_documents(TEXTS))
    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert np.abs(got - expected).max() < 1e-5
    query = TEXTS[0]
    assert (
        np.abs(
            np.array(ours.embed_query(query)) - np.array(reference.embed_query(query))  # type: ignore[attr-defined]
        ).max()
        < 1e-5
    )


def test_the_chunker_counts_tokens_as_transformers_does() -> None:
    from transformers import AutoTokenizer

    path = load_settings().embedding_model_path()
    theirs = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ours = HFTokenizer(path)
    assert ours.window == 256 and ours.special_tokens == 2
    for text in TEXTS:
        enc = theirs(text, add_special_tokens=False, return_offsets_mapping=True)
        assert [(t.start, t.end) for t in ours.tokenize(text)] == [
            tuple(span) for span in enc["offset_mapping"]
        ]
        assert ours.count(text) == len(theirs(text)["input_ids"])
