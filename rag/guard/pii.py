"""Personal data in text: detection, masking with stable placeholders, redaction for logs.

``PiiDetector`` runs Presidio's pattern recognisers directly (no ``AnalyzerEngine``, which
wants a spaCy model): e-mail addresses, phone numbers, IBANs, card numbers, IP addresses
and national ids whose recognisers check a checksum or a strict format. Names are found
by a gazetteer (first names and surnames from Faker's person providers) since no offline
NER model can be installed. Everything runs offline: the e-mail check uses tldextract's
bundled Public Suffix List snapshot, never the network.

``Masker`` replaces each value with a placeholder such as ``<EMAIL_ADDRESS_1>``, the same
one for the same value across every text it masks, and puts the values back in the
model's answer (also while it streams). ``redact`` and ``RedactingFilter`` keep values
out of logs.

Importing this module is cheap: Presidio (which imports spaCy, seconds) and Faker are
imported when the first detector is built. No value found is ever logged, and neither
``PiiSpan`` nor ``Masker`` shows one in its ``repr``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_THRESHOLDS",
    "Masker",
    "PiiDetector",
    "PiiSpan",
    "RedactingFilter",
    "StreamUnmasker",
    "redact",
]

logger = logging.getLogger(__name__)

#: Kinds a detector looks for unless told otherwise.
DEFAULT_KINDS: tuple[str, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IBAN_CODE",
    "CREDIT_CARD",
    "IP_ADDRESS",
    "US_SSN",
    "UK_NHS",
    "UK_NINO",
    "ES_NIF",
    "ES_NIE",
    "IT_FISCAL_CODE",
    "IN_AADHAAR",
    "AU_TFN",
    "SG_NRIC_FIN",
    "PL_PESEL",
    "FI_PERSONAL_IDENTITY_CODE",
    "PERSON",
)

#: Lowest score (after the context boost) at which a match counts, per kind. Chosen by
#: measurement (``bench/pii.py``): the scores Presidio gives a validated match, lowered
#: where a context word ("SSN", "phone") is needed for a weak pattern to pass.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "EMAIL_ADDRESS": 0.5,
    "PHONE_NUMBER": 0.4,
    "IBAN_CODE": 0.5,
    "CREDIT_CARD": 0.5,
    "IP_ADDRESS": 0.5,
    "US_SSN": 0.4,
    "UK_NHS": 0.5,
    "UK_NINO": 0.4,
    "ES_NIF": 0.5,
    "ES_NIE": 0.5,
    "IT_FISCAL_CODE": 0.5,
    "IN_AADHAAR": 0.5,
    "AU_TFN": 0.5,
    "SG_NRIC_FIN": 0.4,
    "PL_PESEL": 0.5,
    "FI_PERSONAL_IDENTITY_CODE": 0.5,
    "PERSON": 0.5,
}

# How much a context word just before a match raises its score, and how far back to look
# (the values Presidio's own context enhancer uses: +0.35, five words before).
_CONTEXT_BOOST = 0.35
_CONTEXT_WORDS_BEFORE = 5
_WORD = re.compile(r"\w+")

# Presidio's recogniser class (in ``presidio_analyzer.predefined_recognizers``) per kind.
_PRESIDIO: Mapping[str, str] = {
    "PHONE_NUMBER": "PhoneRecognizer",
    "IBAN_CODE": "IbanRecognizer",
    "CREDIT_CARD": "CreditCardRecognizer",
    "IP_ADDRESS": "IpRecognizer",
    "US_SSN": "UsSsnRecognizer",
    "UK_NHS": "NhsRecognizer",
    "UK_NINO": "UkNinoRecognizer",
    "ES_NIF": "EsNifRecognizer",
    "ES_NIE": "EsNieRecognizer",
    "IT_FISCAL_CODE": "ItFiscalCodeRecognizer",
    "IN_AADHAAR": "InAadhaarRecognizer",
    "AU_TFN": "AuTfnRecognizer",
    "SG_NRIC_FIN": "SgFinRecognizer",
    "PL_PESEL": "PlPeselRecognizer",
    "FI_PERSONAL_IDENTITY_CODE": "FiPersonalIdentityCodeRecognizer",
}


@dataclass(frozen=True)
class PiiSpan:
    """One value found: its kind and where it lies in the text (never the value itself)."""

    kind: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class _Result:
    """A match of one of our own recognisers (the fields Presidio's results have)."""

    entity_type: str
    start: int
    end: int
    score: float


class _Recognizer(Protocol):
    """What the detector needs from a recogniser (Presidio's ``EntityRecognizer`` API)."""

    @property
    def supported_entities(self) -> list[str]:
        """The kinds it finds."""
        ...

    @property
    def context(self) -> list[str] | None:
        """Words that, just before a match, make it likelier."""
        ...

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """Results with ``entity_type``, ``start``, ``end`` and ``score``."""
        ...


class PiiDetector:
    """Finds personal data in text, offline.

    Recognisers are built once per detector (the first detector of a process imports
    Presidio, which takes seconds); ``find`` is then safe to call from several threads.
    """

    def __init__(
        self,
        kinds: Iterable[str] | None = None,
        *,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        """Build the recognisers.

        Args:
            kinds: the kinds to look for (default ``DEFAULT_KINDS``).
            thresholds: per-kind lowest score, over ``DEFAULT_THRESHOLDS``.

        Raises:
            ValueError: for an unknown kind or a threshold outside 0..1.
        """
        chosen = tuple(DEFAULT_KINDS if kinds is None else kinds)
        unknown = sorted(set(chosen) - set(DEFAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}; known: {list(DEFAULT_KINDS)}")
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
        bad = sorted(k for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0)
        if bad:
            raise ValueError(f"PII thresholds must lie in 0..1 (kinds {bad})")
        self.kinds = chosen
        self._recognizers = _build_recognizers(chosen)

    def find(self, text: str) -> list[PiiSpan]:
        """Values in ``text``: non-overlapping, sorted by position.

        Where two matches overlap, the one with the higher score wins, then the longer one
        (a validated SSN beats the phone number the same digits also make).
        """
        if not text:
            return []
        candidates: list[PiiSpan] = []
        for recognizer in self._recognizers:
            for result in recognizer.analyze(text, list(recognizer.supported_entities), None):
                kind = str(result.entity_type)
                if kind not in self.thresholds:
                    continue
                start, end = int(result.start), int(result.end)
                if text[start] == "(" and ")" not in text[start:end]:
                    start += 1  # phonenumbers keeps an unbalanced "(" of "(+44 20 …)"
                context = _has_context(text, start, kind, recognizer.context)
                if not _plausible(kind, text, start, end, context=context):
                    continue
                score = float(result.score)
                if context:
                    score = min(1.0, score + _CONTEXT_BOOST)
                if score >= self.thresholds[kind]:
                    candidates.append(PiiSpan(kind, start, end, score))
        return _resolve(candidates)

    def count(self, text: str) -> dict[str, int]:
        """Occurrences per kind in ``text``."""
        found: dict[str, int] = {}
        for span in self.find(text):
            found[span.kind] = found.get(span.kind, 0) + 1
        return found


def _has_context(text: str, start: int, kind: str, words: Sequence[str] | None) -> bool:
    """Whether one of the kind's context words or phrases is among the five words before."""
    before = _WORD.findall(text[max(0, start - 80) : start].lower())[-_CONTEXT_WORDS_BEFORE:]
    if not before:
        return False
    joined = " ".join(before)
    for word in _CONTEXT.get(kind, words or ()):
        entry = word.lower()
        if entry in before if " " not in entry else f" {entry} " in f" {joined} ":
            return True
    return False


# Context words in place of Presidio's, where its list is too broad ("number" for phones)
# or too narrow.
_CONTEXT: Mapping[str, tuple[str, ...]] = {
    "PHONE_NUMBER": (
        *("phone", "telephone", "tel", "cell", "mobile", "call", "fax", "reach", "ring"),
        *("whatsapp", "sms", "text", "dial", "hotline"),
    ),
    "IP_ADDRESS": ("ip", "ipv4", "ipv6", "address", "host", "from", "client", "login"),
    "UK_NHS": ("nhs", "national health service", "health authority", "patient"),
    "PL_PESEL": ("pesel",),
    "AU_TFN": ("tfn", "tax file number", "tax file"),
    "IN_AADHAAR": ("aadhaar", "aadhar", "uidai", "uid"),
}

# Kinds whose bare form (digits only) is, without a context word, as likely to be an order
# number, a count or an OID: 10 % of random 11-digit numbers pass PESEL's checksum.
_BARE_NEEDS_CONTEXT = frozenset({"PL_PESEL", "UK_NHS", "AU_TFN", "IN_AADHAAR"})

# What a phone number written for people looks like: "+44 20 7946 0958", "(212) 555-7788",
# "415-555-0132"; not "16384/16806", "0.423130" or "2147483647".
_PHONE_SHAPE = re.compile(r"(?:\+|\(\d)[\d\s().-]+|\d{2,5}(?:[ -]\d{2,8}){2,4}|0\d{2,4}[ -]\d{5,8}")
# A match inside a longer run of digit groups ("4111 1111 1111 1112" holds an Aadhaar-like
# 12 digits) is a part of another number.
_MORE_DIGITS_BEFORE = re.compile(r"\d[ -]?$")
_MORE_DIGITS_AFTER = re.compile(r"^[ -]?\d")
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")


def _plausible(kind: str, text: str, start: int, end: int, *, context: bool) -> bool:
    """Drop matches of a valid format that are, in running text, rarely personal data."""
    value = text[start:end]
    if value[:1].isdigit() and _MORE_DIGITS_BEFORE.search(text, max(0, start - 2), start):
        return False
    if value[-1:].isdigit() and _MORE_DIGITS_AFTER.match(text[end : end + 2]):
        return False
    if kind in _BARE_NEEDS_CONTEXT and value.isdigit():
        return context
    if kind == "PHONE_NUMBER":
        digits = sum(c.isdigit() for c in value)
        if digits > 15 or _DATE_LIKE.search(value) or "/" in value or "\n" in value:
            return False  # E.164 numbers have at most 15 digits
        return context or bool(_PHONE_SHAPE.fullmatch(value.strip()))
    if kind == "IP_ADDRESS":
        return _plausible_ip(value, context=context)
    return True


def _plausible_ip(value: str, *, context: bool) -> bool:
    """Hosts, not loopback, netmasks or section numbers ("see 4.1.2.1")."""
    try:
        address = ipaddress.ip_interface(value).ip
    except ValueError:
        return False
    if address.is_loopback or address.is_unspecified or address.is_multicast:
        return False
    if address.version == 4:
        octets = [int(o) for o in str(address).split(".")]
        if octets[0] in (0, 255):
            return False
        if max(octets) < 32:  # "4.1.2.1", "10.0.0.1": a section number unless told
            return context
    return True


def _resolve(candidates: list[PiiSpan]) -> list[PiiSpan]:
    """Keep the best of overlapping spans: higher score, then longer, then earlier."""
    kept: list[PiiSpan] = []
    for span in sorted(candidates, key=lambda s: (-s.score, s.start - s.end, s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def _build_recognizers(kinds: Sequence[str]) -> list[_Recognizer]:
    """Presidio's recognisers for ``kinds`` (imported here: Presidio imports spaCy)."""
    recognizers: list[_Recognizer] = []
    presidio = [k for k in kinds if k in _PRESIDIO]
    if presidio or "EMAIL_ADDRESS" in kinds:
        from presidio_analyzer import predefined_recognizers

        _quiet_presidio_logs()
        recognizers.extend(_presidio_recognizer(predefined_recognizers, k) for k in presidio)
        if "EMAIL_ADDRESS" in kinds:
            recognizers.append(_offline_email_recognizer())
    if "PERSON" in kinds:
        recognizers.append(NameRecognizer())
    return recognizers


def _presidio_recognizer(module: Any, kind: str) -> _Recognizer:
    recognizer: _Recognizer
    if kind == "CREDIT_CARD":
        from presidio_analyzer import Pattern

        # Presidio's pattern predates Mastercard's 2221-2720 range.
        two_series = r"\b2(?:2[2-9]\d|[3-6]\d{2}|7[01]\d|720)[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b"
        cls = module.CreditCardRecognizer
        patterns = [*cls.PATTERNS, Pattern("Mastercard 2-series (weak)", two_series, 0.3)]
        recognizer = cls(patterns=patterns)
    elif kind == "PHONE_NUMBER":
        recognizer = _Windowed(module.PhoneRecognizer(), _PHONE_CANDIDATE)
    else:
        recognizer = getattr(module, _PRESIDIO[kind])()
    return recognizer


# Where a phone number may be: the phone recogniser (libphonenumber, once per region) is
# by far the slowest, so it reads only these stretches of a text, and a little around them.
_PHONE_CANDIDATE = re.compile(r"\+?\(?\d[\d \t().\-/]{4,}\d")
_WINDOW_PAD = 3


class _Windowed:
    """Runs a recogniser on the stretches of a text a cheap pattern finds, not all of it."""

    def __init__(self, inner: _Recognizer, candidate: re.Pattern[str]) -> None:
        self._inner = inner
        self._candidate = candidate

    @property
    def supported_entities(self) -> list[str]:
        """The inner recogniser's kinds."""
        return self._inner.supported_entities

    @property
    def context(self) -> list[str] | None:
        """The inner recogniser's context words."""
        return self._inner.context

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        """The inner recogniser's results on each stretch, at their places in ``text``."""
        windows: list[list[int]] = []
        for match in self._candidate.finditer(text):
            start = max(0, match.start() - _WINDOW_PAD)
            end = min(len(text), match.end() + _WINDOW_PAD)
            if windows and start <= windows[-1][1]:
                windows[-1][1] = end
            else:
                windows.append([start, end])
        results: list[Any] = []
        for start, end in windows:
            for r in self._inner.analyze(text[start:end], entities, nlp_artifacts):
                results.append(_Result(r.entity_type, r.start + start, r.end + start, r.score))
        return results


@cache
def _offline_suffixes() -> Any:
    """A tldextract extractor on the bundled Public Suffix List: no fetch, no disk cache."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


_PRIVATE_TLDS = frozenset(
    {"example", "test", "invalid", "localhost", "local", "internal", "corp", "lan", "home"}
)


def _offline_email_recognizer() -> _Recognizer:
    """Presidio's e-mail recogniser, its domain check made offline.

    Presidio validates with ``tldextract.extract``, whose default extractor downloads the
    Public Suffix List on first use. The reserved top-level domains of RFC 2606/6761
    (``.example``, ``.test``, ``.invalid``, ``.localhost``) and internal ones (``.local``,
    ``.internal``, ``.corp``, ``.lan``) are in no suffix list, yet addresses under them are
    someone's address all the same: they count too.
    """
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            tld = pattern_text.rsplit(".", 1)[-1].lower()
            return tld in _PRIVATE_TLDS or bool(_offline_suffixes()(pattern_text).fqdn)

    recognizer: _Recognizer = OfflineEmailRecognizer()
    return recognizer


class _ScrubPresidioArgs(logging.Filter):
    """Drops the arguments of Presidio's own log records (one logs the text it validated)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = f"{record.msg} (arguments withheld: they may hold personal data)"
            record.args = None
        return True


_presidio_lock = threading.Lock()


def _quiet_presidio_logs() -> None:
    presidio_logger = logging.getLogger("presidio-analyzer")
    with _presidio_lock:
        if not any(isinstance(f, _ScrubPresidioArgs) for f in presidio_logger.filters):
            presidio_logger.addFilter(_ScrubPresidioArgs())


# --- names ------------------------------------------------------------------------------

# Faker locales with first and last names in Latin script (or romanised: ja_JP, zh_CN,
# et_EE's Russian names); names in other scripts are skipped.
_NAME_LOCALES = (
    *("en_US", "en_GB", "en_IE", "en_IN", "en_PK", "en_KE", "de_DE", "fr_FR", "es_ES"),
    *("es_MX", "it_IT", "nl_NL", "pt_PT", "pt_BR", "sv_SE", "da_DK", "no_NO", "fi_FI"),
    *("pl_PL", "cs_CZ", "sk_SK", "hu_HU", "ro_RO", "hr_HR", "sl_SI", "lt_LT", "lv_LV"),
    *("et_EE", "tr_TR", "id_ID", "yo_NG", "sw", "ja_JP", "zh_CN"),
)

# First names that are also everyday (or documentation) words when capitalised at the
# start of a sentence or in a heading: "Will Smith" is lost, "Will Postgres" is not flagged.
# English words, plus the names that occur as lower-case words in the PostgreSQL manual
# ("Server", "Line", "Edit", "Peer"; Faker's Turkish and Indonesian lists hold them).
_NOT_FIRST_NAMES = frozenset(
    """
    Abbey Among Angel Apple April Art August Autumn Bill Blue Bond Brand Brook Buck Bud
    Camp Can Cash Chance Chase Cherry Christian Clay Colt Conn Crystal Dale Dawn Dean
    Delta Des Destiny Dev Don Dusty Easter Echo Eden Edit Edu Elif Else Faith Fancy Fern
    Floor Ford Frank Gay Gene German Glen Grace Grant Guy Hall Harm Harmony Heath Holly
    Honor Hope Hunter Iris Ivy Jade Jay Jewel Job Joy Judge June King Lance Lane Laurel
    Liberty Lily Line Lo Long Lot Love Lucky Made Man Mark Mason Max Melody Mercy Merry
    Meta Miles Miller Min Mint Misty Moe More My Nova Odd Ole Page Paris Pat Patience
    Pearl Peer Penny Per Pierce Piper Prince Rain Ray Reed Rich River Rob Robin Rose
    Ruby Rush Sad Sage Said Sep Server Shad Sine Sky Sol Sole Star Sterling Stone Storm
    Summer Sunny Sys Tad Tan Temple Ties Till Trinity True Us Van Violet Wade Ward West
    Will Win Winter Wolf Young
    """.split()
)

# Words after a first name that make a heading or a phrase, not a surname.
_NOT_SURNAMES = frozenset(
    """
    About After All Also And Are Because Before But Can For From Has Have How If In Into
    Is It Its May Not Of On Or Should That The Then There These This Those To Was Were
    What When Where Which While Who Will With Would You
    """.split()
)

_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
_NAME_WORD = (
    rf"(?:(?:Mc|Mac|O'|D'|d'|De|Di|Le|La)?[{_UPPER}][{_LOWER}]+(?:-[{_UPPER}][{_LOWER}]+)?)"
)
_NAME_TOKEN = re.compile(rf"(?<![\w.@/-]){_NAME_WORD}(?![\w@/]|\.\w)")
_GAP = re.compile(rf"[ \t]{{1,2}}(?:[{_UPPER}]\.[ \t]{{1,2}})?")
_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?[ \t]{1,2}$")
_PLAIN_WORD = re.compile(rf"^[{_UPPER}][{_LOWER}]+$")


@cache
def _name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """First names and surnames from Faker's person providers (single words only)."""
    import importlib

    first: set[str] = set()
    last: set[str] = set()
    for locale in _NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in dir(provider):
            if not attr.startswith(
                ("first_name", "first_romanized", "last_name", "last_romanized")
            ):
                continue
            values = getattr(provider, attr)
            if "pairs" in attr or not isinstance(values, (list, tuple, dict)):
                continue
            bucket = first if attr.startswith("first") else last
            bucket.update(v for v in values if isinstance(v, str) and _PLAIN_WORD.match(v))
    return frozenset(first - _NOT_FIRST_NAMES), frozenset(last - _NOT_SURNAMES)


class NameRecognizer:
    """Names of people by gazetteer: a known first name followed by a surname-like word.

    A known surname after the first name scores 0.85, any other capitalised word 0.5 (the
    default threshold keeps both: on the PostgreSQL documentation nearly every such pair is
    a real name, "Julian Date" and "Ada Logics" excepted; raise ``PERSON`` above 0.5 to
    keep only known surnames); a title such as "Dr." before a capitalised name scores 0.85
    too. First names outside Faker's lists, and single names ("Alice said"), are missed.
    """

    supported_entities: list[str] = ["PERSON"]  # noqa: RUF012 (Presidio's attribute name)
    context: list[str] | None = None

    KNOWN_SURNAME = 0.85
    OTHER_SURNAME = 0.5
    TITLED = 0.85

    def __init__(self) -> None:
        self._first, self._last = _name_lists()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[_Result]:
        """Name spans in ``text`` (``entities`` and ``nlp_artifacts`` are ignored)."""
        del entities, nlp_artifacts
        tokens = list(_NAME_TOKEN.finditer(text))
        results: list[_Result] = []
        for i, token in enumerate(tokens):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            joined = nxt is not None and _GAP.fullmatch(text, token.end(), nxt.start())
            if token.group() in self._first and joined and nxt is not None:
                surname = nxt.group()
                if surname in _NOT_SURNAMES:
                    continue
                score = self.KNOWN_SURNAME if surname in self._last else self.OTHER_SURNAME
                results.append(_Result("PERSON", token.start(), nxt.end(), score))
            elif _TITLE.search(text, max(0, token.start() - 8), token.start()):
                end = nxt.end() if joined and nxt is not None else token.end()
                results.append(_Result("PERSON", token.start(), end, self.TITLED))
        return _merge(results)


def _merge(results: list[_Result]) -> list[_Result]:
    """Join overlapping name spans ("Paul Martin" and "Martin Smith": "Paul Martin Smith")."""
    merged: list[_Result] = []
    for result in results:
        if merged and result.start < merged[-1].end:
            prev = merged[-1]
            score = max(prev.score, result.score)
            merged[-1] = _Result("PERSON", prev.start, max(prev.end, result.end), score)
        else:
            merged.append(result)
    return merged


# --- masking ------------------------------------------------------------------------------


def _canonical(kind: str, value: str) -> str:
    """The form two occurrences of one value share ("GB82 WEST…" and "GB82WEST…")."""
    if kind in ("PERSON", "EMAIL_ADDRESS"):
        return " ".join(value.split()).casefold()
    if kind == "IP_ADDRESS":
        return value.lower()
    return re.sub(r"[\s.\-()/]", "", value).upper()


class Masker:
    """Masks values with stable placeholders, and puts them back; one per answer.

    The same value gets the same placeholder in every text this masker masks (question,
    history, passages), so the model can still tell that two passages name one person.
    The mapping lives only in this object.
    """

    def __init__(self, detector: PiiDetector) -> None:
        self._detector = detector
        self._lock = threading.Lock()
        self._placeholders: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._numbers: dict[str, int] = {}
        self._found: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Masker({len(self._values)} placeholders)"

    def mask(self, text: str) -> str:
        """``text`` with each value replaced by its placeholder, e.g. ``<EMAIL_ADDRESS_1>``."""
        return self.mask_many([text])[0]

    def mask_many(self, texts: Sequence[str]) -> list[str]:
        """Mask texts that go out together (the messages of one request).

        A value found anywhere among them is masked everywhere among them, also where the
        recognisers miss it (run together with other numbers, say, in an earlier answer):
        first every text is scanned, then every known value is replaced in every text.
        """
        found = [self._detector.find(text) for text in texts]
        with self._lock:
            for text, spans in zip(texts, found, strict=True):
                for span in spans:
                    self._placeholder(span.kind, text[span.start : span.end])
                    self._found[span.kind] = self._found.get(span.kind, 0) + 1
            known = sorted(self._values.items(), key=lambda item: -len(item[1]))
        pattern = re.compile("|".join(re.escape(value) for _, value in known)) if known else None
        by_value = {value: name for name, value in known}
        out = []
        for text, spans in zip(texts, found, strict=True):
            pieces: list[str] = []
            last = 0
            for span in spans:
                pieces.append(self._known(text[last : span.start], pattern, by_value))
                name = self._placeholder(span.kind, text[span.start : span.end])
                pieces.append(f"<{name}>")
                last = span.end
            pieces.append(self._known(text[last:], pattern, by_value))
            out.append("".join(pieces))
        return out

    @staticmethod
    def _known(text: str, pattern: re.Pattern[str] | None, by_value: dict[str, str]) -> str:
        if pattern is None or not text:
            return text
        return pattern.sub(lambda m: f"<{by_value[m.group(0)]}>", text)

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, _canonical(kind, value))
        name = self._placeholders.get(key)
        if name is None:
            self._numbers[kind] = self._numbers.get(kind, 0) + 1
            name = f"{kind}_{self._numbers[kind]}"
            self._placeholders[key] = name
            self._values[name] = value
        return name

    def names(self) -> frozenset[str]:
        """The placeholder names given so far, without brackets (e.g. ``PERSON_1``)."""
        with self._lock:
            return frozenset(self._values)

    def unmask(self, text: str) -> str:
        """``text`` with placeholders (with or without their brackets) replaced by values."""
        return self._unmask(text, 0)

    def _unmask(self, text: str, start: int) -> str:
        """Unmask ``text[start:]``; the text before ``start`` only gives word boundaries."""
        with self._lock:
            values = dict(self._values)
        if not values:
            return text[start:]
        pattern = _placeholder_pattern(frozenset(values))
        out: list[str] = []
        last = start
        for match in pattern.finditer(text, start):
            out.append(text[last : match.start()])
            out.append(values[match.group(1) or match.group(2)])
            last = match.end()
        out.append(text[last:])
        return "".join(out)

    def found(self) -> dict[str, int]:
        """Occurrences masked so far per kind (never the values)."""
        with self._lock:
            return dict(self._found)

    def stream(self) -> StreamUnmasker:
        """An unmasker for an answer that arrives in pieces."""
        return StreamUnmasker(self)


@cache
def _placeholder_pattern(names: frozenset[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"<({alternatives})>|(?<!\w)({alternatives})(?!\w)")


class StreamUnmasker:
    """Unmasks a streamed answer, holding back only what may be a partial placeholder.

    ``feed`` returns the text that can be shown now; ``finish`` returns the rest. Joined,
    the outputs equal ``masker.unmask`` of the whole answer, however it was split.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._pending = ""
        self._before = ""  # the last character given out, for word boundaries

    def feed(self, piece: str) -> str:
        """Take the next piece of the answer; return what can be shown now."""
        buffer = self._pending + piece
        names = self._masker.names()
        cut = _hold_from(self._before, buffer, names) if names else len(buffer)
        self._pending = buffer[cut:]
        return self._emit(buffer[:cut])

    def finish(self) -> str:
        """The end of the answer: whatever was held back, unmasked."""
        rest, self._pending = self._pending, ""
        return self._emit(rest)

    def _emit(self, text: str) -> str:
        if not text:
            return ""
        out = self._masker._unmask(self._before + text, len(self._before))
        self._before = text[-1]
        return out


def _hold_from(before: str, buffer: str, names: frozenset[str]) -> int:
    """Where the tail of ``buffer`` that may still become a placeholder starts."""
    longest = max(len(n) for n in names) + 2
    for i in range(max(0, len(buffer) - longest), len(buffer)):
        tail = buffer[i:]
        if tail[0] == "<":
            # "<PERS", "<PERSON_1": not yet closed, may still become "<PERSON_1>"/"<PERSON_12>"
            if any((n + ">").startswith(tail[1:]) and len(tail) <= len(n) + 1 for n in names):
                return i
            continue
        previous = buffer[i - 1] if i else before
        if previous and (previous.isalnum() or previous == "_"):
            continue
        # a bare "PERS" or "PERSON_1": the next character decides (a word boundary or more)
        if any(n.startswith(tail) for n in names):
            return i
    return len(buffer)


# --- redaction for logs --------------------------------------------------------------------


def redact(text: str, detector: PiiDetector | LogDetector) -> str:
    """``text`` with each value replaced by its kind, e.g. ``<EMAIL_ADDRESS>``."""
    out: list[str] = []
    last = 0
    for span in detector.find(text):
        out.append(text[last : span.start])
        out.append(f"<{span.kind}>")
        last = span.end
    out.append(text[last:])
    return "".join(out)


class LogDetector:
    """Fast patterns for log lines: no Presidio, nothing to load, errs towards redacting.

    Log redaction runs in every process, also in commands that never build the full
    detector (building it imports spaCy: seconds, too slow for a shutdown message). These
    patterns cover e-mail addresses, IPv4 addresses, IBAN-shaped codes and any number of
    seven digits or more (phones, cards, national ids); names are not covered.
    """

    _PATTERNS = (
        ("EMAIL_ADDRESS", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
        ("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")),
        ("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")),
        ("NUMBER", re.compile(r"(?<![\w.])\+?\d(?:[ ().-]?\d){6,}(?![\w])")),
    )

    def find(self, text: str) -> list[PiiSpan]:
        """Spans that look like personal data, first pattern first where they overlap."""
        spans: list[PiiSpan] = []
        for kind, pattern in self._PATTERNS:
            for m in pattern.finditer(text):
                if not any(m.start() < s.end and s.start < m.end() for s in spans):
                    spans.append(PiiSpan(kind, m.start(), m.end(), 1.0))
        return sorted(spans, key=lambda s: s.start)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts personal data from records before they are written.

    It formats the message (``msg % args``), redacts it and stores it as ``msg`` with no
    ``args``; an exception's traceback and a stack are formatted and redacted into
    ``exc_text`` / ``stack_info``, and ``exc_info`` is dropped so no handler formats the
    raw traceback again. Attach it to handlers (it then sees records of every logger).
    """

    def __init__(self, detector: PiiDetector | LogDetector | Callable[[], PiiDetector]) -> None:
        """Redact with ``detector``.

        Args:
            detector: the detector, or a callable returning it (to build it at first use).
        """
        super().__init__()
        self._detector = detector
        self._busy = threading.local()

    def _get(self) -> PiiDetector | LogDetector:
        if isinstance(self._detector, PiiDetector | LogDetector):
            return self._detector
        return self._detector()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        if getattr(self._busy, "on", False):
            # A record logged while redacting (by the detector's libraries): those never
            # carry the text being redacted (their arguments are withheld, see above).
            return True
        self._busy.on = True
        try:
            detector = self._get()
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a malformed call: logging would report it
                message = f"{record.msg} (arguments withheld: they do not fit the message)"
            record.msg = redact(message, detector)
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
            if record.exc_text:
                record.exc_text = redact(record.exc_text, detector)
            if record.stack_info:
                record.stack_info = redact(record.stack_info, detector)
        finally:
            self._busy.on = False
        return True
