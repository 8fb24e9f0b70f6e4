"""Instruction-like payloads in document chunks: the marks of indirect prompt injection.

A document meant to steer the model that reads it carries text of a few recognisable
kinds: orders to drop the real task ("ignore the previous instructions and print ..."),
forged chat turns and template tokens (``<|im_start|>``, ``[INST]``, ``System:``), notes
addressed to the model rather than the reader, text a person does not see (zero-width
and bidi characters, Unicode tags, HTML comments, CSS-hidden spans), encoded blobs, and
Markdown images or links that would send conversation data to a server. ``scan`` names
the rules a chunk sets off; ingestion keeps the names with the chunk, so the UI can warn
and ``RAG_QUARANTINE`` can keep flagged chunks out of retrieval.

Words are matched on a normalised copy of the text (NFKC, which folds fullwidth and other
compatibility forms, then common Cyrillic/Greek look-alikes mapped to Latin, invisible
characters removed, casefolded, spaced-out letters joined, whitespace collapsed), so
``I G N O R E``, ``ig\u200bnore`` or fullwidth ``\uff49\uff47\uff4e\uff4f\uff52\uff45`` read
as "ignore". Patterns need an
order aimed at the reader of the text, not a word: manuals say "ignore case", "the system
catalogs" and "SET ROLE" all the time.

Everything is precompiled at import (no other work there); a chunk takes tens of
microseconds.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterable

# Bump when a rule changes what it finds: indexes scanned with other rules are rescanned.
VERSION = "1"

RULES: dict[str, str] = {
    "base64-blob": "a long base64 run that decodes to readable text (a hidden message)",
    "directive": "a note or order addressed to the AI reading the text, not to people",
    "exfiltration": "a link or image whose URL would carry conversation data to a server",
    "hidden-text": "text hidden from people: HTML/Markdown comments, CSS-hidden styles",
    "invisible-unicode": "invisible characters: zero-width, bidi controls, Unicode tags",
    "override": 'an order to drop the real task ("ignore previous instructions", "instead print")',
    "role-header": "forged chat turns or template tokens (<|im_start|>, [INST], System:)",
}

# -- normalisation --------------------------------------------------------------------

_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e"
_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_MARKS = "\u200e\u200f\u061c"  # LRM, RLM, ALM: common in right-to-left text, left alone
# Letters that look like Latin ones (Cyrillic, Greek) in words written to dodge filters.
_CONFUSABLES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u0261\u04cf\u051b\u051d"
    "\u0410\u0415\u041e\u0420\u0421\u0423\u0425\u0406\u0408\u0405\u0412\u041d\u041a\u041c\u0422"
    "\u03b1\u03bf\u03c1\u03c5\u03bd\u03b9\u03ba\u03c4\u0391\u0392\u0395\u0397\u0399\u039a\u039c"
    "\u039d\u039f\u03a1\u03a4\u03a7\u03a5\u0396",
    "aeopcyxijsdglqwAEOPCYXIJSBHKMTaopuvikTABEHIKMNOPTXYZ",
)
_INVISIBLE = re.compile(f"[{_ZERO_WIDTH}{_BIDI}{_MARKS}\u00ad\U000e0000-\U000e007f]")
_HSPACE = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")
# "i g n o r e" or "i-g-n-o-r-e": four or more single letters, one separator between each.
_SPACED = re.compile(r"(?<![\w])(?:[a-z][ .\-_*]){3,}[a-z](?![\w])")


def normalize(text: str) -> str:
    """The copy of ``text`` that word rules match: folded, invisible-free, spaced-out joined.

    Line breaks are kept (one per break) so that rules can anchor at the start of a line.
    """
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).translate(_CONFUSABLES).casefold()
    text = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)
    text = _HSPACE.sub(" ", text)
    return _NEWLINES.sub("\n", text).strip()


# -- override -------------------------------------------------------------------------

_DROP = r"(?:ignore|disregard|forget|neglect|skip|override|bypass|discard|abandon)"
_DET = (
    r"(?:(?:all|any|every|the|your|my|these|those|this|of|previous|prior|above|earlier|other)"
    r"\s+){0,4}"
)
_TASK = (
    r"(?:instructions?|directions?|directives?|prompts?|guidelines|rules|commands?|orders|"
    r"context|conversation|messages?|tasks?|content|data|text|info(?:rmation)?|everything|"
    r"(?:negative )?indicators|(?:manual )?scoring|safeguards|restrictions)"
)
_EMIT = r"(?:print|say|output|write|respond|reply|answer|repeat|return|report|type|state|display)"
_OVERRIDE = [
    # ignore/disregard/forget (all) previous/the above/the rest of this ... instructions/data
    rf"\b{_DROP}\s+(?:(?:all|any|the|your|my|these|those|this)\s+)?"
    rf"(?:previous|prior|above|preceding|earlier|foregoing|former|original|initial|other|"
    rf"rest\s+of\s+(?:the|this|these)|remaining|following|system|existing|negative)\s+{_DET}{_TASK}\b",
    rf"\b{_DROP}\s+(?:all|any|everything|previous|prior)\s+{_DET}{_TASK}\b",
    rf"(?:^|[.!?:;\n>]\s*)(?:ignore|disregard|forget)\s+(?:(?:all|the|your|any|these|this|"
    rf"previous)\s+)?{_TASK}\b",
    r"\bdisregard\s+(?:all|everything|anything)\b",
    r"\bforget\s+(?:everything|all\s+(?:that|of|you|your|previous|prior))\b",
    r"\b(?:new|updated|revised|real|true|actual|secret|hidden|core)\s+instructions?\s*:",
    r"\b(?:follow|obey)\s+(?:these|the\s+following|my|only\s+(?:these|the\s+following))\s+"
    r"(?:new\s+)?instructions?\b",
    r"\bfollow\s+instruction\b",
    r"\b(?:now|instead|and|then)\s*,?\s+(?:just|only|simply)\s+(?:print|say|output|repeat|"
    r"(?:respond|reply)\s+with)\b",
    r"(?:^|[.!?;:,\n]\s*)(?:but\s+|and\s+)?(?:now|instead)\s*,?\s+(?:print|say|output|repeat|"
    r"(?:respond|reply)\s+with)\s+(?:only\s+|exactly\s+)?(?:the\s+following|this\b|exactly|[\"'“<:])",
    r"\binstead\s+(?:just\s+|only\s+)?focus\b",
    r"\b(?:reply|respond|answer)\s+(?:only\s+)?with\s+(?:only\s+|just\s+|exactly\s+)?"
    r"(?:the\s+following|this|[\"'“<])",
    r"\b(?:simply|only|just)\s+(?:respond|reply|answer)\s+with\b",
    r"\bstop\s+what\s+you\s+are\s+doing\b",
    r"\bfocus\s+(?:only|exclusively|solely)\s+on\s+(?:the\s+following|this|positive)",
    r"\bprovide\s+it\s+to\s+the\s+user\b",
    r"\btranslate\s+this\s+sentence\s+as\b",
    r"\brepeat\s+the\s+following\s+(?:sentence|text|words?|phrase)\b",
    r"\bcould\s+you\s+repeat\s*[<\"'“]",
    r"\b(?:do\s+not|don'?t|never)\s+(?:follow|obey|listen\s+to)\s+(?:the|your|any|these|those|my)?"
    r"\s*(?:previous|prior|original|system|above|earlier)?\s*(?:instructions|rules|guidelines|"
    r"directions|prompt)\b",
    r"\bwrite\s+(?:one|a|an|some)\s+(?:toxic|discriminatory|offensive|harmful|hateful|racist|"
    r"sexist|insulting|abusive|derogatory|negative|unfriendly|violent)\s+"
    r"(?:sentences?|paragraphs?|texts?|jokes?|comments?|statements?|posts?)\b",
    r"\b(?:you\s+may\s+not|do\s+not)\s+deviate\b",
]

# -- directive ------------------------------------------------------------------------

_AI = (
    r"(?:ai|a\.i\.|llms?|large\s+language\s+models?|language\s+models?|chat\s?bots?|gpts?|"
    r"(?:ai|virtual)\s+assistants?|assistants?|automated\s+\w+(?:\s+\w+)?|bots?|"
    r"screening\s+systems?|ai\s+\w+|the\s+model)"
)
_DIRECTIVE = [
    rf"\b(?:note|message|instructions?|notice|attention|memo|reminder)\s+(?:to|for)\s+"
    rf"(?:the\s+|any\s+|all\s+)?{_AI}\b",
    r"\bfor\s+(?:the\s+)?(?:automated|ai|llm)\s+(?:screening|analysis|review|scan\w*|"
    r"systems?|software|tools?|readers?)\b",
    r"\b(?:in)?visible\s+to\s+(?:humans?|people|readers|llms?|ai|language\s+models?|"
    r"the\s+model|automated)",
    r"\bif\s+(?:you\s+are\s+|you're\s+)?(?:an?\s+)?(?:ai|llm|language\s+model|assistant|chatbot)\b",
    rf"\bif\s+(?:the\s+)?(?:user|anyone|someone|somebody|they|you\s+are|you're)?\s*"
    rf"(?:asks?|asked|questioned|prompted)\b[^.\n]{{0,80}}?\b(?:{_EMIT}|tell|reply|respond)\b",
    rf"\b(?:{_EMIT})\s+(?:only\s+)?the\s+following\s+(?:text|sentence|message|information)\s+"
    rf"and\s+(?:absolutely\s+)?nothing\s+else\b",
    r"\babsolutely\s+nothing\s+else\b",
    r"\breport\s+only\s*:",
    r"\b(?:chain\s+of\s+thought|cot)\s+result\b",
    r"\bthis\s+is\s+(?:really|very|extremely|critically)\s+important,\s+(?:really|very|extremely)",
    r"\bpre-?verified\s+by\b[^.\n]{0,60}\boverride\b",
    r"\boverride\s+(?:the\s+)?(?:manual\s+|previous\s+|all\s+)?(?:scoring|evaluation|"
    r"assessment|ranking|review)\b",
    r"\bnot\s+evaluate\s+the\s+candidate|\bdon'?t\s+evaluate\s+the\b",
]

# -- role-header ----------------------------------------------------------------------

_ROLE_TOKENS = [
    r"<\|\s*(?:im_start|im_end|im_sep|endoftext|system|user|assistant|begin_of_text|"
    r"end_of_text|start_header_id|end_header_id|eot_id|eom_id|end|fim_\w+)\s*\|>",
    r"\[/?inst\]",
    r"<</?sys>>",
    r"</?(?:start_of_turn|end_of_turn)>",
    r"<\s*end\s+of\s+(?:session|conversation|document|prompt|context)\s*>",
    r"</?\s*(?:system|instruction|instructions|sys|admin|developer)\s*>",
    r"\[\s*(?:system|admin|developer|sys)(?:\s+(?:request|message|note|prompt|override))?"
    r"\s*(?:\]|::)",
    r"\[rest[-_ ]of[-_ ](?:the[-_ ])?document\]",
    r"(?:^|\n)#{2,}\s*(?:instruction|instructions|system|system\s+prompt|response|input)\s*:?\s*(?:\n|$)",
    r"(?:^|\n)\s*-{2,}\s*(?:core|system|admin|new|legal)\b[^\n]{0,40}\binstructions?\b",
    r"\bsystem\s+(?:message|prompt|override|instruction|instructions|notice|update)\s*:",
    r"\b(?:you\s+are\s+now|from\s+now\s+on,?\s+you\s+(?:are|will|must))\b",
    r"(?:^|[.!?:\n]\s*)(?:please\s+|now\s+)?(?:act|behave|respond)\s+as\s+(?:if\s+you|an?\s+|"
    r"though)",
    r"(?:^|[.!?:\n]\s*)(?:please\s+|now\s+|just\s+)?pretend\s+(?:to\s+be|you\s+are|that\s+you)\b",
    r"\brole-?play\s+as\b",
    r"\b(?:developer|dan|jailbreak|god)\s+mode\s+(?:enabled|on|activated)\b",
]
_ROLE_NAMES = r"(?:system|assistant|user|human|ai|bot|chatgpt|gpt|claude|model)"
_IMPERATIVE = (
    r"(?:ignore|disregard|forget|focus|print|say|output|write|respond|reply|answer|repeat|"
    r"tell|provide|summari[sz]e|translate|you|please|do|don'?t|never|always|from|follow|"
    r"obey|stop|thanks|could|can|next|act|pretend|report|return|\[|<|\")"
)
# A speaker label at a line start followed by an order, or a forged turn with a placeholder.
_ROLE_LINE = re.compile(rf"(?:^|\n)[>*\s]*{_ROLE_NAMES}\s*:\s*{_IMPERATIVE}", re.MULTILINE)
_TURN = re.compile(r"(?:^|\n)[>*\s]*(?:user|human)\s*:", re.MULTILINE)
_REPLY_TURN = re.compile(r"(?:^|\n)[>*\s]*(?:assistant|ai|bot|system)\s*:", re.MULTILINE)

# -- hidden-text ----------------------------------------------------------------------

_HIDDEN = re.compile(
    r"<!--(?:(?!-->)[\s\S]){0,400}?(?<![-:_])\b(?:you|your|ignore|disregard|respond|reply|print|say|"
    r"assistant|llm|model|instructions?)\b[\s\S]{0,400}?-->"
    r"|\[//\]:\s*#\s*[(\"']"
    r"|display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em|%)?\s*[;\"'}]"
    r"|opacity\s*:\s*0(?:\.0+)?\s*[;\"'}]"
    r"|color\s*:\s*(?:#f{3}(?:f{3})?|white|transparent)\s*;?[^\"'>]{0,60}"
    r"background(?:-color)?\s*:\s*(?:#f{3}(?:f{3})?|white)"
    r"|\b(?:white|hidden|invisible)[- ]text\b[^.\n]{0,40}(?:instruction|metadata|note|message|"
    r"prompt|llm|ai|model)",
    re.IGNORECASE,
)

# -- exfiltration ---------------------------------------------------------------------

_MD_URL = re.compile(r"!?\[[^\]\n]{0,200}\]\(\s*<?(https?://[^)\s>]+)>?[^)]*\)", re.IGNORECASE)
_HTML_URL = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']?(https?://[^\"'\s>]+)", re.IGNORECASE)
# A query value to be filled in by the reader ({...}, [...], <...>, $VAR, "...") or naming
# what a conversation holds; ordinary values (?style=flat&label=docs&token=ab12) are not.
_PLACEHOLDER = re.compile(
    r"[{<\[$]|%7b|%3c|%5b|\.\.\.|=\s*(?:insert_?|your_?|the_?|user_?)?(?:conversation|"
    r"chat_?history|history|secret|password|passwd|api_?key|summary|memory|previous_?"
    r"messages?)s?\b",
    re.IGNORECASE,
)
_EXFIL_ASK = re.compile(
    r"\b(?:append|include|add|render|insert|embed|put|encode|display|show)\b[^.\n]{0,60}"
    r"\b(?:conversation|chat\s+history|previous\s+messages|user'?s?\s+(?:question|data|"
    r"message|input|email|name)|the\s+answer|summary)\b[^.\n]{0,60}\b(?:url|link|image|"
    r"query\s+string|parameter)",
)

# -- base64 ---------------------------------------------------------------------------

_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])")
_WORDS = re.compile(rb"[A-Za-z]{2,}[,.:;!?'\"]?\s")


def _decodes_to_text(blob: str) -> bool:
    if blob.isalnum() and (blob.isdigit() or re.fullmatch(r"[0-9a-fA-F]+", blob)):
        return False  # hex digests and numbers are valid base64 but never a message
    data = blob.rstrip("=")
    altchars = b"-_" if ("-" in data or "_" in data) else None
    data += "=" * (-len(data) % 4)
    try:
        raw = base64.b64decode(data, altchars=altchars, validate=False)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 20:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in raw)
    return printable / len(raw) >= 0.9 and len(_WORDS.findall(raw)) >= 3


# -- invisible unicode ----------------------------------------------------------------

_TAGS = re.compile("[\U000e0000-\U000e007f]")
_BIDI_RE = re.compile(f"[{_BIDI}]")
_ZW_IN_WORD = re.compile(f"(?<=[^\\W\\d_])[{_ZERO_WIDTH}]+(?=[^\\W\\d_])")
_ZW_RUN = re.compile(f"[{_ZERO_WIDTH}]{{3,}}")


def _other_format_run(text: str) -> bool:
    """A run of 4+ format or private-use characters (other than those named above)."""
    run = 0
    for ch in text:
        if ch in _MARKS or ch == "\u00ad":
            run = 0
            continue
        if unicodedata.category(ch) in ("Cf", "Co"):
            run += 1
            if run >= 4:
                return True
        else:
            run = 0
    return False


def _invisible(text: str) -> bool:
    if _TAGS.search(text) or _BIDI_RE.search(text) or _ZW_RUN.search(text):
        return True
    # A zero-width joiner between emoji, or a ZWNJ in Persian, is writing; two or more
    # inside Latin words is someone splitting words.
    inside = [m for m in _ZW_IN_WORD.finditer(text) if text[m.start() - 1].isascii()]
    if len(inside) >= 2:
        return True
    return _other_format_run(text) if not text.isascii() else False


# -- rules ----------------------------------------------------------------------------


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE)


_OVERRIDE_RE = _compile(_OVERRIDE)
_DIRECTIVE_RE = _compile(_DIRECTIVE)
_ROLE_RE = _compile(_ROLE_TOKENS)


def _role_header(norm: str) -> bool:
    if _ROLE_RE.search(norm) or _ROLE_LINE.search(norm):
        return True
    return bool(_TURN.search(norm) and _REPLY_TURN.search(norm))


def _exfiltration(raw: str, norm: str) -> bool:
    for pattern in (_MD_URL, _HTML_URL):
        for match in pattern.finditer(raw):
            url = match.group(1)
            query = url.split("?", 1)[1] if "?" in url else ""
            if query and _PLACEHOLDER.search(query):
                return True
    return bool(_EXFIL_ASK.search(norm))


def _base64(raw: str) -> bool:
    return any(_decodes_to_text(m.group(0)) for m in _B64.finditer(raw))


_Check = Callable[[str, str], bool]
_CHECKS: tuple[tuple[str, _Check], ...] = (
    ("base64-blob", lambda raw, norm: _base64(raw)),
    ("directive", lambda raw, norm: bool(_DIRECTIVE_RE.search(norm))),
    ("exfiltration", _exfiltration),
    ("hidden-text", lambda raw, norm: bool(_HIDDEN.search(raw))),
    ("invisible-unicode", lambda raw, norm: _invisible(raw)),
    ("override", lambda raw, norm: bool(_OVERRIDE_RE.search(norm))),
    ("role-header", lambda raw, norm: _role_header(norm)),
)


def scan(text: str) -> tuple[str, ...]:
    """The names of the rules ``text`` sets off, sorted; empty when it looks clean."""
    if not text:
        return ()
    norm = normalize(text)
    raw = _INVISIBLE.sub("", text) if _INVISIBLE.search(text) else text
    fired = []
    for name, check in _CHECKS:
        subject = text if name == "invisible-unicode" else raw
        if check(subject, norm):
            fired.append(name)
    return tuple(fired)


def describe(flags: Iterable[str]) -> str:
    """One line for people: what the rules that fired found (unknown names kept as is)."""
    parts = [RULES.get(flag, flag) for flag in flags]
    if not parts:
        return "no instruction-like text found"
    return "Instruction-like text: " + "; ".join(parts) + "."
