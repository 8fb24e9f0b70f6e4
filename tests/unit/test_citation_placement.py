"""Citation markers never corrupt the text: not inside numbers, paths, URLs or code."""

from __future__ import annotations

import pytest

from rag.citations import CitationStream, Source, resolve_citations, verify
from rag.text import answer_sentences


def sources(n: int) -> list[Source]:
    return [
        Source(n=i, source=f"/d/file{i}.md", page=None, chunk_id=f"chunk-{i}", text=f"text {i}")
        for i in range(1, n + 1)
    ]


def streamed(pieces: list[str], n: int = 2) -> tuple[list[str], CitationStream]:
    stream = CitationStream(sources(n))
    shown = [stream.feed(p) for p in pieces]
    shown.append(stream.finish())
    return shown, stream


# What the model wrote -> what the user reads.
MOVED = [
    ("Use TLS 1[1].2 or later.", "Use TLS 1.2 or later [1]."),
    ("Use TLS 1 [1].2 or later.", "Use TLS 1.2 or later [1]."),
    ("Pi is 3[1].14, roughly.", "Pi is 3.14 [1], roughly."),
    ("It costs 3[1],000 dollars.", "It costs 3,000 dollars [1]."),
    ("Edit src/main[1].rs to start.", "Edit src/main.rs to start [1]."),
    ("Set it in postgresql[1].conf.", "Set it in postgresql.conf [1]."),
    (
        "Read https://example.org[1]/docs/a.html today.",
        "Read https://example.org/docs/a.html today [1].",
    ),
    ("Open `src/main [1].rs` first.", "Open `src/main.rs` first [1]."),
    ("Open `main.rs [2]` now; then build.", "Open `main.rs` now [1]; then build."),
    ("Versions 1[1].2 and 1[2].3\nNext line.", "Versions 1.2 and 1.3 [1][2]\nNext line."),
    ("Ends in 1[1].2", "Ends in 1.2 [1]"),
]


@pytest.mark.parametrize(("written", "shown"), MOVED)
def test_marker_inside_a_token_moves_to_the_clause_end(written, shown):
    text, cites = resolve_citations(written, sources(2))
    assert text == shown
    assert cites and cites[0].source.chunk_id in ("chunk-1", "chunk-2")


@pytest.mark.parametrize(("written", "shown"), MOVED)
def test_any_streaming_split_gives_the_same_text(written, shown):
    for cut in range(1, len(written)):
        pieces, _ = streamed([written[:cut], written[cut:]])
        assert "".join(pieces) == shown, cut
    pieces, _ = streamed(list(written))  # one character at a time
    assert "".join(pieces) == shown


KEPT = [
    "TLS 1.2 is required [1].",
    "Edit `src/main.rs` [1] and restart.",
    "See https://example.org/a.html [1].",
    "It is 3.14 [1], and 3,000 [2] too.",
    "Code `x = [1]` stays; `arr[1]` too.",
    "```python\nitems = [1]\nprint(items [1])\n```\n",
    "~~~\nconf [1].x\n~~~",
]


@pytest.mark.parametrize("written", KEPT)
def test_well_placed_markers_and_code_are_left_alone(written):
    text, _ = resolve_citations(written, sources(2))
    assert text == written


def test_a_piece_ending_in_a_dot_then_the_rest_of_the_number():
    shown, _ = streamed(["Use TLS 1.", "2 [1]", " or later."])
    assert "".join(shown) == "Use TLS 1.2 [1] or later."
    assert shown[0] == "Use TLS 1."  # text without a pending marker is not held back
    shown, _ = streamed(["Use TLS 1", "[1]", ".", "2 or later."])
    assert "".join(shown) == "Use TLS 1.2 or later [1]."


def test_a_moved_marker_is_numbered_in_order_of_first_citation():
    text, cites = resolve_citations("Use TLS 1[2].2 [1] now.", sources(2))
    assert text == "Use TLS 1.2 [1][2] now."
    assert [c.source.chunk_id for c in cites] == ["chunk-2", "chunk-1"]


def keeper_sources() -> list[Source]:
    return [
        Source(1, "/d/a.md", None, "c1", "Connections require TLS 1.2 or later on port 5432."),
        Source(2, "/d/b.md", None, "c2", "The entry point src/main.rs starts the server loop."),
    ]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "Connections require TLS 1.2 or later on port 5432.",
            "Connections require TLS 1.2 or later on port 5432 [1].",
        ),
        (
            "The entry point `src/main.rs` starts the server loop.",
            "The entry point `src/main.rs` starts the server loop [1].",
        ),
        (
            "The entry point src/main.rs starts the server loop",
            "The entry point src/main.rs starts the server loop [1]",
        ),
        (
            "Connections require TLS 1.2 or later:\n\n```\nssl_min_protocol_version = 'TLSv1.2'\n"
            "# connections require TLS 1.2 or later on port 5432.\n```\n",
            "Connections require TLS 1.2 or later [1]:\n\n```\nssl_min_protocol_version = "
            "'TLSv1.2'\n# connections require TLS 1.2 or later on port 5432.\n```\n",
        ),
    ],
)
def test_attached_citations_go_at_the_sentence_end_never_inside(answer, expected):
    text, cites = verify(answer, keeper_sources(), [])
    assert text == expected
    assert cites and all(c.inferred for c in cites)


@pytest.mark.parametrize(
    "text",
    [
        "Use TLS 1.2. Then `a. b` and\n\n```\nx. y\n```\nlast",
        "```\nunclosed. fence",
        "See https://x.org/a.html. Ok",
        "",
    ],
)
def test_answer_sentences_keep_every_character(text):
    pieces = answer_sentences(text)
    assert "".join(p for p, _ in pieces) == text
    assert not any(p.endswith(("1.", "`a.", "x.org/a.")) for p, _ in pieces)
