"""Citation cards show the stored passage as it is: the text a reader sees equals it."""

from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from rag.text import split_sentences as sentences
from ui.render import passage_markdown

PASSAGES = [
    "Set max_connections in postgresql.conf and restart. TLS 1.2 is the minimum.",
    "First line of the listing\nsecond line\n\nA new paragraph after a blank line.",
    "Markdown stays as typed: **bold**, _under_, `code` and # not a heading.",
    "HTML stays as typed: <b>html</b> and <script>alert(1)</script> & &amp; too.",
    "See https://www.postgresql.org/docs/16/runtime-config.html for [the] details!",
    "    indented code line\n\tand a tab\nkey = value  # two spaces",
    "1. not a list\n- not a bullet\n> not a quote\n:material/home: $5 and $6 ~x~",
]
_DIRECTIVE = re.compile(r":orange-background\[((?:\\.|[^\]\\])*)\]")


def shown_text(markdown: str) -> str:
    """What a reader sees for Streamlit Markdown: highlights unwrapped, CommonMark rendered."""
    md = MarkdownIt("commonmark")
    tokens = md.parse(_DIRECTIVE.sub(r"\1", markdown))
    paragraphs, current = [], []
    for token in tokens:
        if token.type == "inline":
            for child in token.children or []:
                if child.type in ("text", "code_inline"):
                    current.append(child.content)
                elif child.type == "hardbreak":
                    current.append("\n")
                elif child.type == "softbreak":
                    current.append(" ")
        elif token.type == "paragraph_close":
            paragraphs.append("".join(current))
            current = []
        elif token.type not in ("paragraph_open",):
            raise AssertionError(f"passage rendered as {token.type}, not as text")
    return "\n\n".join(paragraphs).replace("\u00a0", " ")


def card_app(passage: str, answer: str) -> AppTest:
    def script(passage: str, answer: str) -> None:
        from ui.render import citation_card

        citation = {"n": 1, "title": "guide.md", "source": "/x/ab12.md", "text": passage}
        citation_card(citation, answer, key="card")

    at = AppTest.from_function(script, kwargs={"passage": passage, "answer": answer})
    return at.run()


@pytest.mark.parametrize("passage", PASSAGES)
def test_card_text_equals_the_stored_passage(passage):
    at = card_app(passage, "It is set in postgresql.conf [1].")
    assert not at.exception
    header, body = (m.value for m in at.markdown)
    assert "guide" in header
    assert shown_text(body) == passage.replace("\t", "    ")  # a tab shows as four spaces


def test_no_space_is_injected_after_dots_inside_words():
    passage = "Edit postgresql.conf, then src/main.rs. Version 1.2.3 works."
    assert "".join(sentences(passage)) == passage
    assert sentences(passage) == [
        "Edit postgresql.conf, then src/main.rs. ",
        "Version 1.2.3 works.",
    ]
    assert "postgresql. conf" not in shown_text(passage_markdown(passage, ["postgresql.conf"]))


def test_highlights_cover_whole_cited_sentences():
    passage = (
        "The default value of max_connections in postgresql.conf is 100. "
        "Backups run nightly.\nLogs rotate weekly."
    )
    at = card_app(passage, "The default of max_connections is 100 [1]. Backups exist [2].")
    body = at.markdown[1].value
    highlighted = [m.replace("\\", "") for m in _DIRECTIVE.findall(body)]
    assert highlighted == ["The default value of max_connections in postgresql.conf is 100."]
    assert shown_text(body) == passage


def test_a_highlight_spanning_lines_stays_whole():
    passage = "The setting max_connections\nlimits clients to 100. Other text."
    body = passage_markdown(passage, ["max_connections limits clients to 100 [1]."])
    highlighted = [m.replace("\\", "") for m in _DIRECTIVE.findall(body)]
    assert highlighted == ["The setting max_connections", "limits clients to 100."]
    assert shown_text(body) == passage
