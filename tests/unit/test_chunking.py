from __future__ import annotations

import itertools

import pytest

from ingest.chunking import TokenChunker
from ingest.loaders import Block
from rag.errors import ConfigError
from tests.fakes import WordTokenizer


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_short_block_is_one_chunk():
    chunker = TokenChunker(WordTokenizer(), size=10, overlap=2)
    (chunk,) = chunker.split([Block("a short text.", page=4, heading="H", offset=7)])
    assert (chunk.text, chunk.page, chunk.heading, chunk.offset) == ("a short text.", 4, "H", 7)


def test_no_chunk_exceeds_size_and_offsets_point_into_the_text():
    tok = WordTokenizer()
    chunker = TokenChunker(tok, size=12, overlap=3)
    text = ". ".join(words(7, i * 7) for i in range(30)) + "."
    block = Block(text, offset=100)
    chunks = chunker.split([block])
    assert len(chunks) > 5
    for c in chunks:
        assert tok.count(c.text) <= 12 + tok.special_tokens
        assert text[c.offset - 100 : c.offset - 100 + len(c.text)] == c.text
    covered = "".join(text[c.offset - 100 : c.offset - 100 + len(c.text)] for c in chunks)
    assert all(f"w{i}" in covered for i in range(210))


def test_neighbouring_chunks_overlap():
    chunker = TokenChunker(WordTokenizer(), size=10, overlap=4)
    chunks = chunker.split([Block(words(40))])
    for a, b in itertools.pairwise(chunks):
        assert a.text.split()[-1] in b.text.split()[:5]


def test_cuts_prefer_paragraph_ends():
    chunker = TokenChunker(WordTokenizer(), size=12, overlap=0)
    text = words(8) + "\n\n" + words(8, 8)
    chunks = chunker.split([Block(text)])
    assert chunks[0].text == words(8)


def test_chunks_never_span_two_blocks():
    chunker = TokenChunker(WordTokenizer(), size=50, overlap=5)
    chunks = chunker.split([Block("page one text", page=1), Block("page two text", page=2)])
    assert [(c.text, c.page) for c in chunks] == [("page one text", 1), ("page two text", 2)]


def test_size_above_model_window_is_a_config_error():
    with pytest.raises(ConfigError, match="RAG_CHUNK_SIZE"):
        TokenChunker(WordTokenizer(window=64), size=63, overlap=0)
    TokenChunker(WordTokenizer(window=64), size=62, overlap=0)


def test_overlap_must_be_below_size():
    with pytest.raises(ValueError, match="overlap"):
        TokenChunker(WordTokenizer(), size=10, overlap=10)


def test_a_long_line_without_spaces_becomes_many_bounded_chunks():
    chunker = TokenChunker(WordTokenizer(), size=10, overlap=2)
    text = "x" * 100_000  # one "word": one token for the tokenizer
    chunks = chunker.split([Block(text, offset=5)])
    assert len(chunks) > 100
    assert all(len(c.text) <= chunker.max_chars for c in chunks)
    assert "".join(text[c.offset - 5 : c.offset - 5 + len(c.text)] for c in chunks) == text


def test_huge_blocks_are_tokenized_in_windows_and_keep_offsets():
    tok = WordTokenizer()
    chunker = TokenChunker(tok, size=20, overlap=0)
    text = "\n\n".join(words(15, i * 15) for i in range(5_000))  # ~400 KB
    chunks = list(chunker.iter_split([Block(text)]))
    for c in chunks:
        assert text[c.offset : c.offset + len(c.text)] == c.text
        assert tok.count(c.text) <= 20 + tok.special_tokens
    assert {w for c in chunks for w in c.text.split()} == set(text.split())


def test_lone_surrogates_and_nuls_are_replaced_before_tokenizing():
    class StrictTokenizer(WordTokenizer):
        def tokenize(self, text: str):
            text.encode("utf-8")  # a fast tokenizer raises TypeError on a lone surrogate
            return super().tokenize(text)

    chunker = TokenChunker(StrictTokenizer(), size=10, overlap=0)
    (chunk,) = chunker.split([Block("bad \ud800 text \x00 here")])
    assert chunk.text == "bad \ufffd text \ufffd here"
