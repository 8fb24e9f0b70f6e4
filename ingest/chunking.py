"""Token-aware chunking: no chunk exceeds the embedding model's window.

Sizes are counted in the embedding model's own word-pieces, so a chunk is never silently
truncated by the model. Cuts fall on word boundaries and prefer paragraph, then sentence
ends. Chunks are cut from one block at a time, so they never span two pages or sections.

Characters are bounded too (``CHARS_PER_PIECE`` per word-piece of the chunk size): a BERT
tokenizer reads any word over 100 characters as one ``[UNK]`` piece, so a 10 MB line without
spaces would otherwise be a single 10 MB chunk. Blocks are tokenized in windows of at most
``TOKENIZE_WINDOW`` characters, so memory stays flat however long a block is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ingest.loaders import Block, cut_at, replace_unsafe
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
    """A Hugging Face fast tokenizer (``tokenizer.json``) of a local model folder.

    Read with the ``tokenizers`` library itself, not transformers: it is the same tokenizer
    the embedding model runs (``rag.embeddings``), and importing transformers cost seconds.
    """

    def __init__(self, model_path: Path, window: int | None = None) -> None:
        from tokenizers import Tokenizer as FastTokenizer

        from rag.embeddings import max_seq_length

        file = model_path / "tokenizer.json"
        if not file.is_file():
            raise ValueError(f"{model_path}: a fast tokenizer (tokenizer.json) is required")
        self._tok = FastTokenizer.from_file(str(file))
        # Whole blocks are tokenized to find cut points; they may exceed the window.
        self._tok.no_truncation()
        self._tok.no_padding()
        self._window = window or max_seq_length(model_path) or _model_max_length(model_path)
        self._special = len(self._tok.encode("", add_special_tokens=True).ids)

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
        enc = self._tok.encode(text, add_special_tokens=False)
        tokens: list[Token] = []
        prev_word: int | None = None
        for (start, end), word in zip(enc.offsets, enc.word_ids, strict=True):
            tokens.append(Token(start, end, word != prev_word))
            prev_word = word
        return tokens

    def count(self, text: str) -> int:
        """Word-pieces the model sees for ``text``, special tokens included."""
        return len(self._tok.encode(text, add_special_tokens=True).ids)


def _model_max_length(model_path: Path) -> int:
    """The tokenizer's declared ``model_max_length`` (512 when it declares none)."""
    import json

    cfg = model_path / "tokenizer_config.json"
    value = json.loads(cfg.read_text()).get("model_max_length") if cfg.is_file() else None
    return int(value) if isinstance(value, int | float) and value < 1 << 20 else 512


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed whole."""

    text: str
    page: int | None
    heading: str | None
    offset: int


_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")

# Most characters a chunk may hold per word-piece of its size.
CHARS_PER_PIECE = 16
# Longest stretch of a block tokenized at once; chunks do not cross these windows.
TOKENIZE_WINDOW = 32 * 1024


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

    @property
    def max_chars(self) -> int:
        """Most characters in one chunk."""
        return self.size * CHARS_PER_PIECE

    def split(self, blocks: Iterable[Block]) -> list[Chunk]:
        """Chunks of every block, in document order."""
        return list(self.iter_split(blocks))

    def iter_split(self, blocks: Iterable[Block]) -> Iterator[Chunk]:
        """Chunks of every block, in document order, one at a time."""
        for block in blocks:
            yield from self._split_block(block)

    def _split_block(self, block: Block) -> Iterator[Chunk]:
        # Loaders already did this; blocks from other callers may still hold such characters.
        text = replace_unsafe(block.text)
        start = 0
        while start < len(text):
            end = start + cut_at(text[start : start + TOKENIZE_WINDOW + 1], TOKENIZE_WINDOW)
            yield from self._split_window(block, text[start:end], block.offset + start)
            start = end

    def _pieces(self, text: str) -> list[Token]:
        """Word-pieces of ``text``, with any piece longer than 1/8 of a chunk cut up."""
        longest = max(1, self.max_chars // 8)
        tokens: list[Token] = []
        for tok in self.tokenizer.tokenize(text):
            if tok.end - tok.start <= longest:
                tokens.append(tok)
                continue
            for at in range(tok.start, tok.end, longest):
                tokens.append(
                    Token(at, min(at + longest, tok.end), tok.word_start and at == tok.start)
                )
        return tokens

    def _split_window(self, block: Block, text: str, base: int) -> Iterator[Chunk]:
        tokens = self._pieces(text)
        i, n = 0, len(tokens)
        while i < n:
            hi = min(n, i + self.size)
            while hi > i + 1 and tokens[hi - 1].end - tokens[i].start > self.max_chars:
                hi -= 1
            if hi == n:
                yield self._chunk(block, text, base, tokens[i].start, tokens[-1].end)
                break
            j = self._cut(text, tokens, i, hi)
            if not (tokens[i].word_start and tokens[j].word_start):
                # A cut inside a word re-tokenizes differently: shrink until it fits.
                while (
                    j > i + 1
                    and self.tokenizer.count(text[tokens[i].start : tokens[j - 1].end])
                    > self.size + self.tokenizer.special_tokens
                ):
                    j -= 1
            yield self._chunk(block, text, base, tokens[i].start, tokens[j - 1].end)
            i = self._next_start(text, tokens, i, j)

    def _cut(self, text: str, tokens: list[Token], i: int, hi: int) -> int:
        """Index of the first token of the next chunk, at most ``hi``.

        A word start, best at a paragraph end, else a sentence end.
        """
        lo = i + max(1, (hi - i) // 2)
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
    def _chunk(block: Block, text: str, base: int, start: int, end: int) -> Chunk:
        return Chunk(
            text=text[start:end],
            page=block.page,
            heading=block.heading,
            offset=base + start,
        )
