r"""Safe Markdown for model answers: links and images only where the policy allows them.

A model's answer is shown with ``st.markdown`` (GitHub-flavoured Markdown: inline, reference
and angle-bracket links, images, and bare ``https://``, ``www.`` and e-mail autolinks). A
passage planted in an uploaded document can make the model write a link that carries data
out, or an image the browser would fetch at once. ``safe_markdown`` rebuilds the answer so
that the only links and images left are the ones a ``LinkPolicy`` allows; every other URL is
shown as text in inline code, which no Markdown renderer turns into a link.

The rebuilt text is safe by construction, not by agreeing with the renderer on every corner
of the grammar: outside code, each character that could start a link, an image, an entity,
raw HTML or math (``[ ] < & $ \`` and stray backticks) is backslash-escaped; the only
unescaped brackets are citation markers (``[1]``, ``[2, 3]``) and the links written here in
one canonical form, ``[label](<url>)``. Code spans and fenced code blocks keep their content
but are re-emitted with fences chosen here (a fenced block at the start of a line, its
fence longer than any run of backticks inside), so that no input can make the renderer
read as text what was passed through as code. Link reference definitions are dropped, like
a renderer drops them; the references using them become inline links or plain text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_DANGEROUS = frozenset("\\`[]<&$")  # escaped wherever they appear as text
_LABEL_LIMIT = 1000  # longest link label looked at; longer brackets stay text

# Flags of text characters: NORMAL is escaped when dangerous, ESCAPED was escaped by the model
# and stays escaped, RAW is written as is (used only where this module knows it is inert).
NORMAL, ESCAPED, RAW = "0", "1", "2"

_CITATION = re.compile(r"\[\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*\]")
_CITATION_LABEL = re.compile(r"\s*\d{1,3}(?:\s*[,;]\s*\d{1,3})*\s*")
# A table's delimiter row, generously: also behind blockquote and list markers.
_DELIMITER_ROW = re.compile(r"^[\s>|:\-*+.)\d]*-[\s>|:\-*+.)\d]*$")
_FENCE_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_DEFINITION = re.compile(
    r"^ {0,3}\[((?:[^\[\]\\]|\\.){1,999})\]:[ \t]*(<[^<>]*>|\S+)"
    r"(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?[ \t]*$"
)
_ANGLE_AUTOLINK = re.compile(
    r"<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*|[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9]"
    r"(?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*)>"
)
# What GitHub-flavoured Markdown autolinks in plain text, found generously: a URL scheme or
# "www." anywhere, and anything shaped like an e-mail address.
_BARE_URL = re.compile(
    r"(?:https?://|www\.|mailto:|xmpp:)[^\s<>`]+|[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+", re.IGNORECASE
)
_TRAILING = "?!.,:;*_~'\""
_BACKTICKS = re.compile(r"`+")


@dataclass(frozen=True)
class LinkPolicy:
    """Where links and images in an answer may point.

    A URL is allowed when its scheme is http, https or mailto and its host is one of
    ``allowed_hosts`` or a subdomain of one, or it lies under one of ``allowed_prefixes``
    (same scheme, host and port, and a path below the prefix's), or it is one of
    ``source_urls`` (URLs found verbatim in the answer's sources). ``javascript:``,
    ``data:``, ``file:`` and every other scheme are never allowed. The default policy
    allows nothing.
    """

    allowed_hosts: frozenset[str] = frozenset()
    allowed_prefixes: tuple[str, ...] = ()
    source_urls: frozenset[str] = frozenset()
    # URLs of the passages' text allow links only: an image is fetched as soon as it is
    # shown, so a planted passage listing image URLs would be a channel out (the model
    # picks which one to show). Images render only from the allow-list and source paths.
    text_urls: frozenset[str] = frozenset()
    _prefixes: tuple[SplitResult, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = frozenset(_normal_host(h) for h in self.allowed_hosts if _normal_host(h))
        object.__setattr__(self, "allowed_hosts", hosts)
        parsed = []
        for prefix in self.allowed_prefixes:
            parts = _split(prefix)
            if parts is None or parts.scheme.lower() not in ("http", "https"):
                raise ValueError(f"link allow-list entry {prefix!r} is not an http(s) URL")
            parsed.append(parts)
        object.__setattr__(self, "_prefixes", tuple(parsed))

    @classmethod
    def for_answer(
        cls,
        allowlist: Sequence[str],
        source_texts: Iterable[str] = (),
        source_paths: Iterable[str] = (),
    ) -> LinkPolicy:
        """The policy of one answer: the configured allow-list plus the answer's own sources.

        Args:
            allowlist: Hosts (``example.com``, also allowing its subdomains) and URL
                prefixes (``https://docs.example.com/guide/``), as in ``RAG_LINK_ALLOWLIST``.
            source_texts: The text of the passages the answer cites; URLs and e-mail
                addresses written in them may be linked.
            source_paths: The sources' paths; those that are URLs may be linked.

        Raises:
            ValueError: An allow-list entry with ``://`` is not an http(s) URL.
        """
        hosts: set[str] = set()
        prefixes: list[str] = []
        for entry in allowlist:
            text = entry.strip()
            if "://" in text:
                prefixes.append(text)
            elif text:
                hosts.add(text)
        in_text: set[str] = set()
        for text in source_texts:
            in_text.update(find_urls(text))
        urls: set[str] = set()
        for path in source_paths:
            path = path.strip()
            if _scheme(path) in SAFE_SCHEMES:
                urls.add(path)
        return cls(frozenset(hosts), tuple(prefixes), frozenset(urls), frozenset(in_text))

    def allows_image(self, url: str) -> bool:
        """Whether an image at ``url`` may render (fetched at once: no passage URLs)."""
        return self.allows(url) and (url in self.source_urls or self._listed(url))

    def allows(self, url: str) -> bool:
        """Whether a link or image to ``url`` (already decoded) may render."""
        if not url or any(c.isspace() or ord(c) < 32 or c in "\\\x7f" for c in url):
            return False  # browsers strip or reinterpret these; never guess how
        parts = _split(url)
        if parts is None or parts.scheme.lower() not in SAFE_SCHEMES:
            return False
        if url in self.source_urls or url in self.text_urls:
            return True
        return self._listed(url)

    def _listed(self, url: str) -> bool:
        """Whether ``url`` is under the allow-list (a host or a URL prefix)."""
        parts = _split(url)
        if parts is None or parts.scheme.lower() not in SAFE_SCHEMES:
            return False
        if parts.scheme.lower() == "mailto":
            domain = parts.path.rpartition("@")[2]
            return bool(parts.path.count("@") == 1 and self._host_allowed(domain))
        if "@" in parts.netloc or not parts.hostname:
            return False  # user info: "https://trusted.com@elsewhere.net" goes elsewhere
        return self._host_allowed(parts.hostname) or any(
            _under(parts, prefix) for prefix in self._prefixes
        )

    def _host_allowed(self, host: str) -> bool:
        host = _normal_host(host)
        return bool(host) and any(
            host == allowed or host.endswith("." + allowed) for allowed in self.allowed_hosts
        )


NO_LINKS = LinkPolicy()


def find_urls(text: str) -> set[str]:
    """The URLs a text holds, as links to them would be written.

    ``www.`` addresses are given with ``http://`` and ``https://``, e-mail addresses as
    ``mailto:``; a URL ending in punctuation is given with and without it.
    """
    found: set[str] = set()
    for match in _BARE_URL.finditer(text):
        url = match.group(0)
        while url:
            found.update(_link_forms(url))
            if url[-1] not in _TRAILING + ")":
                break
            url = url[:-1]
    return found


def safe_markdown(text: str, policy: LinkPolicy = NO_LINKS) -> str:
    """Model output as Markdown for ``st.markdown`` with only the links ``policy`` allows.

    Allowed links (inline, reference, angle-bracket and bare URLs) are written as
    ``[label](<url>)``, allowed images as ``![alt](<url>)``. A link that is not allowed is
    shown as its label followed by the URL in inline code, ``label (`url`)``; an image as
    ``![alt](url)`` text that nothing fetches; a bare URL as inline code. HTML entities show
    literally (``&lt;`` stays ``&lt;``), ``$`` is no math, citation markers stay as written,
    and code spans and fenced code blocks keep their content.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks = _fenced_blocks(lines)
    definitions, dropped = _definitions(lines, blocks)
    inline = _Inline(policy, definitions)
    tabular = _maybe_table_rows(lines)
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i in blocks:
            end, markdown = blocks[i]
            if out and out[-1].strip():
                out.append("")  # a blank line first: nothing above can swallow the fence
            out.extend(markdown)
            i = end
            continue
        if i not in dropped:
            last = i + 1 == len(lines)
            inline.table = i in tabular
            out.append(_render(inline.parse(lines[i], line_end=not last), policy))
        i += 1
    return "\n".join(out)


def safe_stream(pieces: Iterable[str], policy: LinkPolicy = NO_LINKS) -> Iterator[str]:
    """For each streamed piece, the safe Markdown of the whole answer so far.

    Each value replaces the previous one on screen (``placeholder.markdown(value)``): a link
    split over pieces, or a fence not yet closed, is judged again as more text arrives.
    """
    text = ""
    for piece in pieces:
        text += piece
        yield safe_markdown(text, policy)


# -- URLs -----------------------------------------------------------------------------------


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        return None
    return parts


def _scheme(url: str) -> str:
    match = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", url)
    return match.group(1).lower() if match else ""


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    return host[2:] if host.startswith("*.") else host


def _under(url: SplitResult, prefix: SplitResult) -> bool:
    if url.scheme.lower() != prefix.scheme.lower() or url.hostname != prefix.hostname:
        return False
    if url.port != prefix.port:
        return False
    base = prefix.path
    if not base or base.endswith("/"):
        return url.path.startswith(base) or url.path + "/" == base
    return url.path == base or url.path.startswith(base + "/")


def _link_forms(url: str) -> list[str]:
    lower = url.lower()
    if lower.startswith("www."):
        return ["http://" + url, "https://" + url]
    if "://" in url or lower.startswith(("mailto:", "xmpp:")):
        return [url]
    return ["mailto:" + url]


def _bare_link(match: str) -> str | None:
    """The URL GFM would link for a bare match, or None when it would not link it."""
    lower = match.lower()
    if lower.startswith(("http://", "https://", "www.")):
        host = re.split(r"[/?#]", match.split("://", 1)[-1], maxsplit=1)[0]
        if "." not in host.strip("."):
            return None  # GFM links only domains with a dot
    return _link_forms(match)[0]


def _trim(url: str) -> str:
    """A bare URL without the trailing punctuation GFM leaves outside the link."""
    while url:
        unbalanced = url[-1] == ")" and url.count(")") > url.count("(")
        if url[-1] in _TRAILING or unbalanced:
            url = url[:-1]
        else:
            break
    return url


def _destination(url: str) -> str:
    """``url`` as a link destination that parses back to exactly ``url``."""
    safe = url.replace("<", "%3C").replace(">", "%3E").replace("`", "%60").replace("|", "%7C")
    return "<" + safe.replace("&", "\\&") + ">"


def _visible(url: str) -> str:
    """A URL to show as text on one line: whitespace, controls and pipes percent-encoded."""
    return "".join(
        f"%{ord(c):02X}" if c.isspace() or ord(c) < 32 or c in "|\x7f" else c for c in url
    )


def _unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def _decode(raw: str) -> str:
    """A destination as the browser receives it: escapes and entities resolved."""
    return html.unescape(_unescape(raw))


# -- code -----------------------------------------------------------------------------------


def code_span(content: str) -> str:
    """``content`` as an inline code span, whatever backticks or spaces it holds."""
    content = content.replace("\n", " ")
    longest = max((len(run) for run in _BACKTICKS.findall(content)), default=0)
    ticks = "`" * (longest + 1)
    pad = (
        content.startswith("`")
        or content.endswith("`")
        or (content.startswith(" ") and content.endswith(" ") and content.strip() != "")
    )
    space = " " if pad else ""
    return f"{ticks}{space}{content}{space}{ticks}"


def _fenced_blocks(lines: list[str]) -> dict[int, tuple[int, list[str]]]:
    """Fenced code blocks: first line -> (line after the block, the block re-fenced)."""
    blocks: dict[int, tuple[int, list[str]]] = {}
    i = 0
    while i < len(lines):
        match = _FENCE_OPEN.match(lines[i])
        if match is None or (match.group(2)[0] == "`" and "`" in match.group(3)):
            i += 1
            continue
        indent, fence = len(match.group(1).expandtabs(4)), match.group(2)
        closer = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = i + 1
        while end < len(lines) and not closer.match(lines[end]):
            end += 1
        body = [_dedent(line, indent) for line in lines[i + 1 : end]]
        info = re.sub(r"[^\w+#.\-]", "", match.group(3).strip().split(" ")[0])
        longest = max((len(r) for line in body for r in _BACKTICKS.findall(line)), default=0)
        ticks = "`" * max(3, longest + 1)
        blocks[i] = (min(end + 1, len(lines)), [ticks + info, *body, ticks])
        i = end + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    """``line`` less up to ``indent`` columns of leading whitespace (tabs count to 4)."""
    body = line.lstrip(" \t")
    lead = line[: len(line) - len(body)].expandtabs(4)
    return lead[min(indent, len(lead)) :] + body


def _definitions(
    lines: list[str], blocks: dict[int, tuple[int, list[str]]]
) -> tuple[dict[str, str], set[int]]:
    """Link reference definitions: label -> decoded URL, and the lines that hold them.

    A definition must follow a blank line, the start, or another definition (it cannot
    interrupt a paragraph); labels shaped like citation markers are never definitions.
    """
    in_code = {j for start, (end, _) in blocks.items() for j in range(start, end)}
    found: dict[str, str] = {}
    dropped: set[int] = set()
    for i, line in enumerate(lines):
        if i in in_code:
            continue
        match = _DEFINITION.match(line)
        after_break = i == 0 or not lines[i - 1].strip() or (i - 1) in dropped
        if match is None or not after_break or _CITATION_LABEL.fullmatch(match.group(1)):
            continue
        label = _label_key(match.group(1))
        if not label:
            continue
        dest = match.group(2)
        dest = dest[1:-1] if dest.startswith("<") and dest.endswith(">") else dest
        found.setdefault(label, _decode(dest))
        dropped.add(i)
    return found, dropped


def _maybe_table_rows(lines: list[str]) -> set[int]:
    """Lines that may be rows of a GFM table: near a delimiter row, no blank line between.

    Generous on purpose (any line of dashes, pipes, colons and container markers counts as
    a delimiter row): on such lines a code span holding a pipe must survive being split
    into cells.
    """
    rows: set[int] = set()
    i = 0
    while i < len(lines):
        if _DELIMITER_ROW.match(lines[i]):
            if i > 0 and lines[i - 1].strip():
                rows.add(i - 1)  # the header row
            while i < len(lines) and lines[i].strip():
                rows.add(i)
                i += 1
        i += 1
    return rows


def _label_key(label: str) -> str:
    return " ".join(label.split()).casefold()


# -- inline ---------------------------------------------------------------------------------


@dataclass
class _Text:
    """Plain text: its characters and, for each, how it is written (NORMAL/ESCAPED/RAW)."""

    chars: str
    flags: str


@dataclass
class _Raw:
    """Markdown written as is: a code span or an allowed link or image."""

    markdown: str


_Segment = _Text | _Raw


def _text(chars: str, flag: str = NORMAL) -> _Text:
    return _Text(chars, flag * len(chars))


@dataclass
class _Link:
    label: str
    url: str
    end: int


class _Inline:
    """Parses one line into text, code spans, links and images, applying the policy."""

    def __init__(self, policy: LinkPolicy, definitions: dict[str, str]) -> None:
        self.policy = policy
        self.definitions = definitions
        self.table = False  # whether the line may be a table row

    def parse(self, s: str, *, line_end: bool = False, in_label: bool = False) -> list[_Segment]:
        segs: list[_Segment] = []
        i = 0
        while i < len(s):
            c = s[i]
            if c == "\\":
                if i + 1 < len(s) and s[i + 1] in _PUNCT:
                    segs.append(_text(s[i + 1], ESCAPED))
                    i += 2
                    continue
                # A backslash ending a line is a hard line break; anywhere else it is text.
                raw_break = line_end and not in_label and i + 1 == len(s)
                segs.append(_text(c, RAW if raw_break else NORMAL))
                i += 1
            elif c == "`":
                i = self._code(s, i, segs)
            elif c == "<" and (auto := _ANGLE_AUTOLINK.match(s, i)):
                segs.extend(self._autolink(auto.group(1), in_label=in_label))
                i = auto.end()
            elif c == "[" and not in_label and (cite := _CITATION.match(s, i)):
                segs.append(_text(cite.group(0), RAW))
                i = cite.end()
                if i < len(s) and s[i] in "(:":  # "[1](x)" or "[1]: x" must stay text
                    segs.append(_text(s[i], ESCAPED))
                    i += 1
            elif c == "!" and s.startswith("[", i + 1) and (link := self._link(s, i + 1)):
                segs.extend(self._image(link, in_label=in_label))
                i = link.end
            elif c == "[" and (link := self._link(s, i)):
                segs.extend(self._anchor(link, in_label=in_label))
                i = link.end
            else:
                segs.append(_text(c))
                i += 1
        return segs

    def _code(self, s: str, i: int, segs: list[_Segment]) -> int:
        ticks = _run(s, i)
        for close in _BACKTICKS.finditer(s, i + len(ticks)):
            if close.group(0) == ticks:
                content = s[i + len(ticks) : close.start()]
                if not self.table or _inert_in_table(content):
                    if content.startswith(" ") and content.endswith(" ") and content.strip():
                        content = content[1:-1]
                    segs.append(_Raw(code_span(content)))
                else:  # its pipes could split a table cell: show it all as text
                    segs.append(_text(s[i : close.end()]))
                return close.end()
        segs.append(_text(ticks))
        return i + len(ticks)

    def _autolink(self, target: str, *, in_label: bool) -> list[_Segment]:
        url = target if _scheme(target) else "mailto:" + target
        if self.policy.allows(url) and not in_label:
            return [_Raw(f"[{_escape_all(target)}]({_destination(url)})")]
        return [_Raw(code_span(_visible(target)))]

    def _link(self, s: str, start: int) -> _Link | None:
        """The link whose label opens at ``s[start] == "["``, if the line holds one."""
        close = _label_end(s, start)
        if close is None:
            return None
        label = s[start + 1 : close]
        after = close + 1
        if s.startswith("(", after):
            parsed = _inline_destination(s, after + 1)
            if parsed is not None:
                raw, end = parsed
                return _Link(label, _decode(raw), end)
        ref, end = label, after
        if s.startswith("[", after):
            ref_close = _label_end(s, after, nested=False)
            if ref_close is None:
                return None
            ref, end = s[after + 1 : ref_close] or label, ref_close + 1
        url = self.definitions.get(_label_key(ref))
        return _Link(label, url, end) if url is not None else None

    def _anchor(self, link: _Link, *, in_label: bool) -> list[_Segment]:
        label = self.parse(link.label, in_label=True)
        if not in_label and self.policy.allows(link.url):
            return [
                _Raw(f"[{_render(label, self.policy, in_link=True)}]({_destination(link.url)})")
            ]
        if not link.url:
            return label
        return [*label, _text(" ("), _Raw(code_span(_visible(link.url))), _text(")")]

    def _image(self, link: _Link, *, in_label: bool) -> list[_Segment]:
        alt = _escape_all(_unescape(link.label))
        if self.policy.allows_image(link.url):
            return [_Raw(f"![{alt}]({_destination(link.url)})")]
        return [
            _text("!"),
            _text("[", ESCAPED),
            *self.parse(link.label, in_label=True),
            # Inert at the top of a line: every "[" before it there is escaped or closed.
            # Inside a link's label it would close that label, so it is escaped there.
            _text("]", ESCAPED if in_label else RAW),
            _text("(" + _visible(link.url) + ")"),
        ]


def _label_end(s: str, start: int, *, nested: bool = True) -> int | None:
    """Index of the "]" closing the bracket at ``start`` (code spans bind tighter)."""
    depth, j, limit = 0, start, min(len(s), start + _LABEL_LIMIT)
    while j < limit:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "`":
            ticks = _run(s, j)
            after = j + len(ticks)
            closing = next((m for m in _BACKTICKS.finditer(s, after) if m.group(0) == ticks), None)
            j = closing.end() if closing else after
            continue
        if c == "[":
            if depth and not nested:
                return None
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return None


def _run(s: str, i: int) -> str:
    """The run of backticks starting at ``s[i]``."""
    j = i
    while j < len(s) and s[j] == "`":
        j += 1
    return s[i:j]


def _inline_destination(s: str, k: int) -> tuple[str, int] | None:
    """Parse ``dest "title")`` from ``s[k]`` on: the raw destination and the index after ")"."""
    n = len(s)
    while k < n and s[k] in " \t":
        k += 1
    if k < n and s[k] == "<":
        j = k + 1
        while j < n and s[j] not in "<>":
            j += 2 if s[j] == "\\" else 1
        if j >= n or s[j] != ">":
            return None
        raw, k = s[k + 1 : j], j + 1
    else:
        j, depth = k, 0
        while j < n:
            c = s[j]
            if c == "\\" and j + 1 < n and s[j + 1] in _PUNCT:
                j += 2
                continue
            if c.isspace() or ord(c) < 32 or c == "\x7f":
                break
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        if depth:
            return None
        raw, k = s[k:j], j
    spaced = k < n and s[k] in " \t"
    while k < n and s[k] in " \t":
        k += 1
    if spaced and k < n and s[k] in "\"'(":
        closing = ")" if s[k] == "(" else s[k]
        j = k + 1
        while j < n and s[j] != closing:
            j += 2 if s[j] == "\\" else 1
        if j >= n:
            return None
        k = j + 1
        while k < n and s[k] in " \t":
            k += 1
    if k < n and s[k] == ")":
        return raw, k + 1
    return None


def _inert_in_table(content: str) -> bool:
    """Whether a code span may keep its content even if a table splits it at its pipes."""
    if "|" not in content:
        return True
    return not (set(content) & (_DANGEROUS | {"`"})) and not _BARE_URL.search(content)


# -- rendering ------------------------------------------------------------------------------


def _escape_all(text: str) -> str:
    """Text shown exactly as it is: every ASCII punctuation character escaped."""
    return "".join("\\" + c if c in _PUNCT else c for c in text)


def _render(segments: list[_Segment], policy: LinkPolicy, *, in_link: bool = False) -> str:
    """Segments as Markdown; bare URLs in the text are linked or put in inline code."""
    out: list[str] = []
    chars, flags = "", ""
    for seg in [*segments, _Raw("")]:
        if isinstance(seg, _Text):
            chars, flags = chars + seg.chars, flags + seg.flags
            continue
        out.append(_render_text(chars, flags, policy, in_link=in_link))
        out.append(seg.markdown)
        chars, flags = "", ""
    return _join(out)


def _join(pieces: list[str]) -> str:
    """Concatenate, keeping pieces from joining into other syntax.

    A code span's backticks must not merge with the next one's, and a "!" before a link
    written here must not turn it into an image.
    """
    text = ""
    for piece in pieces:
        if text.endswith("`") and piece.startswith("`"):
            text += " "
        elif text.endswith("!") and piece.startswith("["):
            backslashes = len(text) - 1 - len(text[:-1].rstrip("\\"))
            if backslashes % 2 == 0:
                text = text[:-1] + "\\!"
        text += piece
    return text


def _render_text(chars: str, flags: str, policy: LinkPolicy, *, in_link: bool) -> str:
    out: list[str] = []
    pos = search = 0
    while match := _BARE_URL.search(chars, search):
        found = _trim(match.group(0))
        url = _bare_link(found) if found else None
        if url is None:  # not linked as a whole; a part of it still may be ("x/www.a.b")
            search = match.start() + 1
            continue
        start, end = match.start(), match.start() + len(found)
        search = max(end, start + 1)
        out.append(_escape(chars[pos:start], flags[pos:start]))
        if policy.allows(url):
            label = _escape_all(found)
            out.append(label if in_link else f"[{label}]({_destination(url)})")
        else:
            out.append(code_span(_visible(found)))
        pos = end
    out.append(_escape(chars[pos:], flags[pos:]))
    return _join(out)


def _escape(chars: str, flags: str) -> str:
    return "".join(
        "\\" + c if (flag == ESCAPED or (flag == NORMAL and c in _DANGEROUS)) else c
        for c, flag in zip(chars, flags, strict=True)
    )
