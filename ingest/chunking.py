"""Token-aware chunking: no chunk exceeds the embedding model's window.

Sizes are counted in the embedding model's own word-pieces, so a chunk is never silently
truncated by the model. Cuts fall on word boundaries and prefer paragraph, then sentence
ends. Chunks are cut from one block at a time, so they never span two pages or sections.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ingest.loaders import Block
from rag.errors import ConfigError


@dataclass(frozen=True)
class Token:
    """A word-piece's character span in the text, and whether it starts a word."""

    start: int
    end: int
    word_start: bool


class Tokenizer(Protocol):
    """What the chunker needs from a tokenizer."""

    @property
    def window(self) -> int:
        """Most word-pieces the model reads, special tokens included."""
        ...

    @property
    def special_tokens(self) -> int:
        """Special tokens the model adds around every input (CLS/SEP)."""
        ...

    def tokenize(self, text: str) -> list[Token]:
        """Split ``text`` into word-pieces with their character spans."""
        ...

    def count(self, text: str) -> int:
        """How many word-pieces the model sees for ``text``, special tokens included."""
        ...


class HFTokenizer:
    """A Hugging Face fast tokenizer loaded from a local model folder."""

    def __init__(self, model_path: Path, window: int | None = None) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        if not self._tok.is_fast:
            raise ValueError(f"{model_path}: a fast tokenizer (tokenizer.json) is required")
        self._window = window or _window_of(model_path) or int(self._tok.model_max_length)
        # Whole blocks are tokenized to find cut points; they may exceed the window.
        self._tok.model_max_length = 1 << 30
        self._special = len(self._tok("", add_special_tokens=True)["input_ids"])

    @property
    def window(self) -> int:
        """Most word-pieces the model reads, special tokens included."""
        return self._window

    @property
    def special_tokens(self) -> int:
        """Special tokens added around every input."""
        return self._special

    def tokenize(self, text: str) -> list[Token]:
        """Word-pieces of ``text`` with character spans (no special tokens)."""
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        word_ids = enc.word_ids()
        tokens: list[Token] = []
        prev_word: int | None = None
        for (start, end), word in zip(enc["offset_mapping"], word_ids, strict=True):
            tokens.append(Token(start, end, word != prev_word))
            prev_word = word
        return tokens

    def count(self, text: str) -> int:
        """Word-pieces the model sees for ``text``, special tokens included."""
        return len(self._tok(text, add_special_tokens=True, truncation=False)["input_ids"])


def _window_of(model_path: Path) -> int | None:
    """The sentence-transformers max_seq_length of a model folder, if it declares one."""
    import json

    cfg = model_path / "sentence_bert_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value else None
    return None


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed whole."""

    text: str
    page: int | None
    heading: str | None
    offset: int


_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")


class TokenChunker:
    """Cuts blocks into chunks of at most ``size`` word-pieces with ``overlap`` repeated."""

    def __init__(self, tokenizer: Tokenizer, size: int, overlap: int) -> None:
        limit = tokenizer.window - tokenizer.special_tokens
        if size > limit:
            raise ConfigError(
                "RAG_CHUNK_SIZE",
                f"{size} word-pieces exceed the embedding model's window of {limit} "
                f"({tokenizer.window} less {tokenizer.special_tokens} special tokens)",
            )
        if not 0 <= overlap < size:
            raise ValueError(f"overlap ({overlap}) must be >= 0 and below size ({size})")
        self.tokenizer = tokenizer
        self.size = size
        self.overlap = overlap

    def split(self, blocks: Iterable[Block]) -> list[Chunk]:
        """Chunks of every block, in document order."""
        chunks: list[Chunk] = []
        for block in blocks:
            chunks.extend(self._split_block(block))
        return chunks

    def _split_block(self, block: Block) -> list[Chunk]:
        text = block.text
        tokens = self.tokenizer.tokenize(text)
        if not tokens:
            return []
        if len(tokens) <= self.size:
            return [self._chunk(block, tokens[0].start, tokens[-1].end)]
        chunks: list[Chunk] = []
        i, n = 0, len(tokens)
        while i < n:
            if n - i <= self.size:
                chunks.append(self._chunk(block, tokens[i].start, tokens[-1].end))
                break
            j = self._cut(text, tokens, i)
            if not (tokens[i].word_start and tokens[j].word_start):
                # A cut inside a word re-tokenizes differently: shrink until it fits.
                while (
                    j > i + 1
                    and self.tokenizer.count(text[tokens[i].start : tokens[j - 1].end])
                    > self.size + self.tokenizer.special_tokens
                ):
                    j -= 1
            chunks.append(self._chunk(block, tokens[i].start, tokens[j - 1].end))
            i = self._next_start(text, tokens, i, j)
        return chunks

    def _cut(self, text: str, tokens: list[Token], i: int) -> int:
        """Index of the first token of the next chunk: a word start, best at a paragraph end."""
        hi = i + self.size
        lo = i + max(1, self.size // 2)
        best_sentence = best_word = None
        for j in range(hi, lo - 1, -1):
            if not tokens[j].word_start:
                continue
            gap = text[tokens[j - 1].end : tokens[j].start]
            if "\n" in gap:
                return j
            end = tokens[j - 1].end
            if best_sentence is None and _SENTENCE_END.search(text[max(0, end - 4) : end]):
                best_sentence = j
            if best_word is None:
                best_word = j
        if best_sentence is not None:
            return best_sentence
        if best_word is not None:
            return best_word
        # A single "word" longer than half a chunk: cut inside it.
        return hi

    def _next_start(self, text: str, tokens: list[Token], i: int, j: int) -> int:
        """Where the next chunk starts: ``overlap`` tokens back, moved to a sentence start."""
        lo = max(j - self.overlap, i + 1)
        if lo >= j:
            return j
        for t in range(lo, j):
            prev_end = tokens[t - 1].end
            if tokens[t].word_start and (
                "\n" in text[prev_end : tokens[t].start]
                or _SENTENCE_END.search(text[max(0, prev_end - 4) : prev_end])
            ):
                return t
        t = lo
        while t < j and not tokens[t].word_start:
            t += 1
        return t

    @staticmethod
    def _chunk(block: Block, start: int, end: int) -> Chunk:
        return Chunk(
            text=block.text[start:end],
            page=block.page,
            heading=block.heading,
            offset=block.offset + start,
        )
