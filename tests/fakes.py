"""Fakes for unit tests: no model, no network."""

from __future__ import annotations

import re

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from ingest.chunking import Token
from rag.guard.pii import PiiSpan
from rag.store.scan import ChunkScan


class WordTokenizer:
    """Each word or punctuation mark is one token; a 2-token CLS/SEP frame like BERT's."""

    def __init__(self, window: int = 64) -> None:
        self._window = window

    @property
    def window(self) -> int:
        return self._window

    @property
    def special_tokens(self) -> int:
        return 2

    def tokenize(self, text: str) -> list[Token]:
        return [Token(m.start(), m.end(), True) for m in re.finditer(r"\w+|[^\w\s]", text)]

    def count(self, text: str) -> int:
        return len(self.tokenize(text)) + 2


class CountingEmbeddings(DeterministicFakeEmbedding):
    """Deterministic hash embeddings that count what they were asked to embed."""

    calls: int = 0
    texts: int = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return super().embed_documents(texts)


def doc(text: str, source: str = "/docs/manual.pdf", page: int | None = 1, n: int = 0) -> Document:
    return Document(
        page_content=text,
        metadata={"source": source, "page": page, "chunk_id": f"c{n}", "relevance": 0.9},
        id=f"c{n}",
    )


class RecordingRetriever(BaseRetriever):
    """Returns canned documents per query keyword and records every query."""

    by_keyword: dict[str, list[Document]] = Field(default_factory=dict)
    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.queries.append(query)
        for keyword, docs in self.by_keyword.items():
            if keyword.lower() in query.lower():
                return docs
        return []


MAIL = re.compile(r"[\w.]+@[\w.]+\.\w+")
PHONE = re.compile(r"\+\d[\d ]{8,}\d")


class FakeDetector:
    """E-mail addresses and phone numbers by regex (the real detector has its own tests)."""

    def find(self, text: str) -> list[PiiSpan]:
        spans = [PiiSpan("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in MAIL.finditer(text)]
        spans += [PiiSpan("PHONE_NUMBER", m.start(), m.end(), 1.0) for m in PHONE.finditer(text)]
        return sorted(spans, key=lambda s: s.start)

    def count(self, text: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for span in self.find(text):
            out[span.kind] = out.get(span.kind, 0) + 1
        return out


class FakeScanner:
    """Flags one phrase and counts e-mail addresses; counts what it scanned."""

    def __init__(self, version: str = "v1") -> None:
        self.version = version
        self.scanned = 0

    def __call__(self, text: str) -> ChunkScan:
        self.scanned += 1
        flags = ("override",) if "ignore previous instructions" in text.lower() else ()
        mails = len(re.findall(r"\S+@\S+\.\w+", text))
        return ChunkScan(flags=flags, pii=(("EMAIL_ADDRESS", mails),) if mails else ())


class SteeredEmbeddings(CountingEmbeddings):
    """Hash embeddings, except for texts steered to a chosen cosine with another text.

    ``steer("How often are backups run?", "When do backups run?", 0.98)``: the first text
    then embeds at cosine 0.98 to the second (a paraphrase as a real model would place it).
    ``queries`` counts ``embed_query`` calls.
    """

    steered: dict[str, tuple[str, float]] = Field(default_factory=dict)
    queries: int = 0

    def steer(self, text: str, like: str, cosine: float) -> None:
        self.steered[text] = (like, cosine)

    def _vector(self, text: str) -> list[float]:
        if text not in self.steered:
            return super().embed_query(text)
        like, cosine = self.steered[text]
        base = np.asarray(super().embed_query(like))
        base /= np.linalg.norm(base)
        other = np.asarray(super().embed_query(f"orthogonal to {text}"))
        other -= (other @ base) * base
        other /= np.linalg.norm(other)
        return list(cosine * base + np.sqrt(1 - cosine**2) * other)

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return self._vector(text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return [self._vector(t) for t in texts]
