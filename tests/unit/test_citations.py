from __future__ import annotations

import pytest

from rag.citations import CitationStream, Source, resolve_citations


def sources(n: int) -> list[Source]:
    return [
        Source(n=i, source=f"/d/file{i}.pdf", page=i * 10, chunk_id=f"chunk-{i}", text=f"text {i}")
        for i in range(1, n + 1)
    ]


def test_markers_map_to_the_exact_chunks_shown():
    text, cites = resolve_citations("Alpha [2]. Beta [1].", sources(3))
    assert text == "Alpha [1]. Beta [2]."  # renumbered in order of first citation
    assert [(c.n, c.source.chunk_id, c.source.page) for c in cites] == [
        (1, "chunk-2", 20),
        (2, "chunk-1", 10),
    ]


def test_hallucinated_marker_is_removed_and_not_listed():
    text, cites = resolve_citations("Real [1]. Invented [9]. Both [1, 9].", sources(2))
    assert text == "Real [1]. Invented . Both [1]."
    assert [c.source.chunk_id for c in cites] == ["chunk-1"]


def test_only_cited_sources_are_listed_once_each():
    _, cites = resolve_citations("A [3] B [3][1] C [3]", sources(4))
    assert [c.source.chunk_id for c in cites] == ["chunk-3", "chunk-1"]


def test_grouped_markers_are_split():
    text, _ = resolve_citations("See [1, 2; 3].", sources(3))
    assert text == "See [1][2][3]."


@pytest.mark.parametrize(
    "plain", ["an array [a, b]", "use `x[0] = 1` here [1]", "[link](http://x)", "[ 12 apples"]
)
def test_non_markers_pass_through(plain: str):
    text, cites = resolve_citations(plain, sources(1))
    assert text == plain
    assert len(cites) == plain.count("[1]")


def test_markers_split_across_streamed_pieces():
    stream = CitationStream(sources(2))
    shown = [stream.feed(p) for p in ["Fact ", "[", "2", "]", " and [", "1", "0", "]."]]
    shown.append(stream.finish())
    assert "".join(shown) == "Fact [1] and ."
    assert shown[1] == shown[2] == ""  # held back until the marker closes
    assert [c.source.chunk_id for c in stream.citations] == ["chunk-2"]


def test_unclosed_bracket_is_released_at_the_end():
    stream = CitationStream(sources(1))
    assert stream.feed("total [1") == "total"  # the space may have to go with a marker
    assert stream.finish() == " [1"


def keeper_sources() -> list[Source]:
    return [
        Source(1, "/d/a.pdf", 2, "c1", "The keeper recorded wind speeds every four hours."),
        Source(2, "/d/b.md", None, "c2", "Backups are written to the vault at two."),
    ]


def test_uncited_answer_gets_clearly_supported_sources_attached():
    from rag.citations import verify

    text, cites = verify(
        "The keeper recorded wind speeds every four hours. Penguins like fish.",
        keeper_sources(),
        [],
    )
    assert text == "The keeper recorded wind speeds every four hours [1]. Penguins like fish."
    (cite,) = cites
    assert cite.inferred and cite.source.chunk_id == "c1" and cite.support == 1.0
    assert cite.to_json()["inferred"] is True


def test_model_citations_are_kept_and_scored_not_replaced():
    from rag.citations import verify

    text, cites = verify(
        "Backups go to the vault at two [1]. Wind is logged [2].",
        keeper_sources(),
        resolve_citations("x [2] y [1]", keeper_sources())[1],
    )
    assert text == "Backups go to the vault at two [1]. Wind is logged [2]."
    assert [(c.n, c.source.chunk_id, c.inferred) for c in cites] == [
        (1, "c2", False),
        (2, "c1", False),
    ]
    assert cites[0].support > 0.5


def test_nothing_is_attached_without_strong_support():
    from rag.citations import verify

    text, cites = verify("Lighthouses are tall buildings near water.", keeper_sources(), [])
    assert cites == [] and "[" not in text


def test_attaching_citations_keeps_paragraphs_and_lists():
    from rag.citations import verify

    answer = "Intro line.\n\n- The keeper recorded wind speeds every four hours.\n- Other."
    text, cites = verify(answer, keeper_sources(), [])
    assert text == (
        "Intro line.\n\n- The keeper recorded wind speeds every four hours [1].\n- Other."
    )
    assert len(cites) == 1


@pytest.mark.parametrize(
    "text", ["", "No end", "A. B? C!", '"Quoted." Next\n\n\nLast', "...leading dots", "x\n"]
)
def test_sentence_split_keeps_every_character(text):
    from rag.text import split_sentences

    assert "".join(split_sentences(text)) == text
