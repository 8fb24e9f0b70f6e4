"""Small text helpers shared by the chain, citations and the UI: words and sentences."""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A sentence with its end punctuation, closing quotes/brackets and trailing blanks, or a
# run of newlines; the last alternative takes an unterminated tail. Together they cover
# every character, so "".join(split_sentences(t)) == t.
_SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+[\"')\]]*[ \t]*|\n+)|[^.!?\n]+$")

STOPWORDS = frozenset(
    """a about also an and any are as at be been being but by can could did do does doing
    for from had has have he her him his how i if in into is it its just me more most my
    not of on only or our over please she should so such than that the their them then
    there these they this those to too under us very was we were what when where which who
    whom why will with would you your""".split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased words of three or more letters that are not stopwords."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in STOPWORDS}


def split_sentences(text: str) -> list[str]:
    """Sentences (and blank-line runs), keeping every character of ``text``."""
    return _SENTENCE.findall(text)
