"""PII detection, masking, stream unmasking and log redaction (``rag.guard.pii``)."""

from __future__ import annotations

import io
import itertools
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rag.guard import pii
from rag.guard.pii import Masker, PiiDetector, PiiSpan, RedactingFilter, redact


@pytest.fixture(scope="module")
def detector() -> PiiDetector:
    # Built once: the first detector imports Presidio (and spaCy), which takes seconds.
    return PiiDetector()


def kinds(detector: PiiDetector, text: str) -> list[tuple[str, str]]:
    return [(s.kind, text[s.start : s.end]) for s in detector.find(text)]


# --- detection ---------------------------------------------------------------------------

IN_CONTEXT = [
    ("EMAIL_ADDRESS", "Send the form to {} before Friday.", "maria.lopez@example.org"),
    ("PHONE_NUMBER", "Call the front desk on {} if the door is locked.", "+44 20 7946 0958"),
    ("PHONE_NUMBER", "Her number is {}.", "(212) 555-7788"),
    ("PHONE_NUMBER", "Phone: {}", "07700 900123"),
    ("IBAN_CODE", "Pay the deposit into {}.", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN_CODE", "Refunds go to {} within a week.", "DE89370400440532013000"),
    ("CREDIT_CARD", "The booking was paid with card {}.", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "Charged to {} on arrival.", "2223-0000-4841-0010"),
    ("IP_ADDRESS", "The login came from {}.", "203.0.113.77"),
    ("IP_ADDRESS", "Requests from {} were blocked.", "2001:db8:85a3::8a2e:370:7334"),
    ("US_SSN", "His SSN is {}.", "536-90-4399"),
    ("UK_NHS", "NHS number {} is on the referral letter.", "943 476 5919"),
    ("UK_NINO", "Her National Insurance number is {}.", "AB 12 34 56 C"),
    ("ES_NIF", "The tenant's NIF is {}.", "12345678Z"),
    ("ES_NIE", "NIE {} for the residence permit.", "X1234567L"),
    ("IT_FISCAL_CODE", "Codice fiscale {}.", "RSSMRA85T10A562S"),
    ("IN_AADHAAR", "Aadhaar {} was linked to the account.", "2345 6789 0124"),
    ("AU_TFN", "Her tax file number is {}.", "123 456 782"),
    ("SG_NRIC_FIN", "NRIC {} was scanned at the lobby.", "S1234567D"),
    ("PL_PESEL", "PESEL {} w formularzu.", "44051401359"),
    ("FI_PERSONAL_IDENTITY_CODE", "Henkilötunnus {} on lomakkeessa.", "131052-308T"),
    ("PERSON", "The report was reviewed by {} last week.", "Margaret Thompson"),
    ("PERSON", "Please forward the minutes to {} and the board.", "Jürgen Weber"),
    ("PERSON", "According to {}, the migration finished early.", "Dr. Okonkwo"),
]


@pytest.mark.parametrize(("kind", "template", "value"), IN_CONTEXT)
def test_each_kind_is_found_in_a_sentence(
    detector: PiiDetector, kind: str, template: str, value: str
) -> None:
    text = template.format(value)
    found = kinds(detector, text)
    assert len(found) == 1, found
    assert found[0][0] == kind
    assert value.endswith(found[0][1])  # "Dr. Okonkwo": the name, not the title


def test_a_checksum_separates_a_card_or_an_iban_from_a_number(detector: PiiDetector) -> None:
    assert kinds(detector, "card 4111 1111 1111 1111") == [("CREDIT_CARD", "4111 1111 1111 1111")]
    assert kinds(detector, "card 4111 1111 1111 1112") == []
    assert kinds(detector, "IBAN DE89370400440532013000") == [
        ("IBAN_CODE", "DE89370400440532013000")
    ]
    assert kinds(detector, "IBAN DE89370400440532013001") == []
    assert kinds(detector, "NIF 12345678A") == []  # wrong control letter


def test_the_more_specific_kind_wins_an_overlap(detector: PiiDetector) -> None:
    # The same digits also make a phone number (score 0.4): the validated id wins.
    assert kinds(detector, "SSN 536-90-4399") == [("US_SSN", "536-90-4399")]
    assert kinds(detector, "NHS 943 476 5919") == [("UK_NHS", "943 476 5919")]


def test_find_returns_sorted_spans_that_do_not_overlap(detector: PiiDetector) -> None:
    text = "Mail a@example.com, call +1 415-555-0132, SSN 536-90-4399, Tom Lane."
    spans = detector.find(text)
    assert [s.kind for s in spans] == ["EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "PERSON"]
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert detector.count(text + " b@example.com") == {
        "EMAIL_ADDRESS": 2,
        "PHONE_NUMBER": 1,
        "US_SSN": 1,
        "PERSON": 1,
    }


NOT_PII = [
    "PostgreSQL 15.4.2 was released on 2024-03-15; upgrade from 14.9 before 15/03/2025.",
    "The server listens on port 5432 and max_connections defaults to 100.",
    "Set shared_buffers = 128MB, work_mem = 4MB and effective_cache_size = 4GB.",
    "Order #100234 shipped; invoice INV-2024-0042 totals $12,345.67 incl. tax.",
    "The ISBN is 978-3-16-148410-0; see RFC 2616 section 14.9 and ISO 8601.",
    "See section 4.1.2.1 for the syntax of constants, and 9.8.3 for formatting.",
    "SELECT '1'::int, now()::date, x::text FROM t WHERE ts > '12:30:45';",
    "Connect to localhost:8080 or 127.0.0.1 or ::1; the netmask is 255.255.255.0.",
    "Commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f fixed it in run 16384/16806.",
    "The largest int4 is 2147483647 and the OID of pg_class is 1259.",
    "The Product Manager and the Sales Director met in San Francisco on Monday.",
    "Will the planner use the index? Grant Select on the table; Max Length is 63.",
    "def load(path: str) -> dict[str, int]:\n    return json.loads(Path(path).read_text())",
    "The UUID 123e4567-e89b-12d3-a456-426614174000 names the cluster.",
    "Tracking number 153243337236 was assigned by the carrier on 2024-11-02.",
]


@pytest.mark.parametrize("text", NOT_PII)
def test_ordinary_prose_and_code_hold_no_pii(detector: PiiDetector, text: str) -> None:
    assert kinds(detector, text) == []


def test_bare_digit_ids_need_a_context_word(detector: PiiDetector) -> None:
    # One random 11-digit number in ten passes PESEL's checksum: alone it is not flagged.
    assert kinds(detector, "Row count 44051401359 after vacuum.") == []
    assert kinds(detector, "PESEL 44051401359") == [("PL_PESEL", "44051401359")]


def test_no_value_is_shown_in_a_repr(detector: PiiDetector) -> None:
    text = "write to secret.person@example.com"
    (span,) = detector.find(text)
    assert span == PiiSpan("EMAIL_ADDRESS", 9, 34, span.score)
    masker = Masker(detector)
    masker.mask(text)
    assert "secret" not in repr(span) + repr(masker) + str(masker.found())


def test_unknown_kinds_and_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PiiDetector(["EMAIL", "PERSON"])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        PiiDetector(["PERSON"], thresholds={"PERSON": 2.0})


def test_importing_the_module_does_not_import_presidio() -> None:
    code = (
        "import sys, rag.guard.pii\n"
        "assert 'presidio_analyzer' not in sys.modules and 'spacy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- no network ---------------------------------------------------------------------------


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Records (and refuses) every connection or name lookup that leaves this machine."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host in ("127.0.0.1", "::1", "localhost") or not isinstance(address, tuple):
            real_connect(self, address)  # type: ignore[arg-type]
            return
        attempts.append(address)
        raise OSError("network disabled in this test")

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list[object]:
        attempts.append(host)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts


def test_the_guard_sees_a_suffix_list_download(
    network_attempts: list[object], tmp_path: object
) -> None:
    # tldextract's default extractor (what Presidio's own EmailRecognizer uses) fetches the
    # Public Suffix List: the guard must notice, or the next test proves nothing.
    import tldextract

    logging.getLogger("tldextract").disabled = True
    try:
        tldextract.TLDExtract(cache_dir=str(tmp_path))("someone@example.com")
    finally:
        logging.getLogger("tldextract").disabled = False
    assert network_attempts


def test_detection_makes_no_network_call(
    network_attempts: list[object], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import tldextract

    # Were the module-level extractor used (as Presidio does), a cold one would fetch.
    monkeypatch.setattr(tldextract, "extract", tldextract.TLDExtract(cache_dir=str(tmp_path)))
    pii._offline_suffixes.cache_clear()  # a fresh suffix list, built under the guard
    detector = PiiDetector(["EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE"])
    text = "Mail ana@example.co.uk or bob@sub.example.com, call +1 415-555-0132."
    assert [k for k, _ in kinds(detector, text)] == ["EMAIL_ADDRESS"] * 2 + ["PHONE_NUMBER"]
    assert kinds(detector, "user@localhost and a@b.invalidtld") == []
    assert network_attempts == []


# --- masking ------------------------------------------------------------------------------


def test_masking_is_stable_per_value_and_reversible(detector: PiiDetector) -> None:
    masker = Masker(detector)
    question = "Did Margaret Thompson write to ana@example.com or to bob@example.com?"
    passage = "From: ana@example.com\nMargaret Thompson (+44 20 7946 0958) signed it."
    masked_q = masker.mask(question)
    masked_p = masker.mask(passage)
    assert masked_q == "Did <PERSON_1> write to <EMAIL_ADDRESS_1> or to <EMAIL_ADDRESS_2>?"
    assert masked_p == "From: <EMAIL_ADDRESS_1>\n<PERSON_1> (<PHONE_NUMBER_1>) signed it."
    assert masker.unmask(masked_q) == question
    assert masker.unmask(masked_p) == passage
    assert masker.found() == {"PERSON": 2, "EMAIL_ADDRESS": 3, "PHONE_NUMBER": 1}
    # a fresh masker numbers from 1 again and shares nothing
    assert Masker(detector).unmask(masked_q) == masked_q


def test_unmask_takes_placeholders_without_brackets_as_whole_words(
    detector: PiiDetector,
) -> None:
    masker = Masker(detector)
    masker.mask("ana@example.com and Tom Lane")
    assert masker.unmask("Ask PERSON_1 (EMAIL_ADDRESS_1).") == "Ask Tom Lane (ana@example.com)."
    assert masker.unmask("XPERSON_1, PERSON_10, PERSON_2") == "XPERSON_1, PERSON_10, PERSON_2"
    assert masker.unmask("<PERSON_1>'s note") == "Tom Lane's note"


def test_text_without_pii_is_returned_unchanged(detector: PiiDetector) -> None:
    masker = Masker(detector)
    text = "Run VACUUM ANALYZE after loading 15.4 data on port 5432."
    assert masker.mask(text) == text
    assert masker.unmask(text) == text
    assert masker.found() == {}


ANSWER = (
    "Write to <EMAIL_ADDRESS_1> or call PHONE_NUMBER_1; <PERSON_1> agreed [1]. "
    "EMAIL_ADDRESS_1x stays, <PERSON_3> is unknown, and <PERSON_1"
)


@pytest.fixture
def answer_masker(detector: PiiDetector) -> Masker:
    masker = Masker(detector)
    masker.mask("ana@example.com, +44 20 7946 0958, Tom Lane")
    return masker


def test_a_streamed_answer_is_unmasked_however_it_is_split(answer_masker: Masker) -> None:
    expected = answer_masker.unmask(ANSWER)
    assert "ana@example.com" in expected and "<PERSON_3>" in expected
    for cut in range(len(ANSWER) + 1):
        stream = answer_masker.stream()
        out = stream.feed(ANSWER[:cut]) + stream.feed(ANSWER[cut:]) + stream.finish()
        assert out == expected, cut
    for cut in range(1, len(ANSWER)):  # and with a third piece of every length
        stream = answer_masker.stream()
        pieces = [ANSWER[:cut], ANSWER[cut : cut + 3], ANSWER[cut + 3 :]]
        assert "".join(stream.feed(p) for p in pieces) + stream.finish() == expected, cut
    stream = answer_masker.stream()
    assert "".join(stream.feed(c) for c in ANSWER) + stream.finish() == expected


def test_a_stream_holds_back_only_a_possible_placeholder(answer_masker: Masker) -> None:
    stream = answer_masker.stream()
    assert stream.feed("Write to <EMAIL_AD") == "Write to "
    assert stream.feed("DRESS_1> today") == "ana@example.com today"
    assert stream.feed(" or <b>") == " or <b>"  # cannot become a placeholder
    assert stream.feed(" ask PERSON_1") == " ask "  # might still be PERSON_12 or PERSON_1x
    assert stream.feed(".") == "Tom Lane."
    assert stream.feed(" <PERS") == " "
    assert stream.finish() == "<PERS"


# --- redaction for logs -------------------------------------------------------------------


def test_redact_replaces_values_with_their_kind(detector: PiiDetector) -> None:
    assert (
        redact("Tom Lane <tgl@example.com> from 203.0.113.77", detector)
        == "<PERSON> <<EMAIL_ADDRESS>> from <IP_ADDRESS>"
    )


def test_the_logging_filter_redacts_messages_and_tracebacks(detector: PiiDetector) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(lambda: detector))
    log = logging.getLogger("tests.pii.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("upload from %s by %s", "ana@example.com", "Tom Lane")
        try:
            int("bad card 4111 1111 1111 1111")
        except ValueError:
            log.exception("while indexing %s", "report.pdf")
        log.warning("nothing personal in %d chunks", 12)
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "upload from <EMAIL_ADDRESS> by <PERSON>" in out
    assert (
        "while indexing report.pdf" in out
        and "ValueError: invalid literal for int() with base 10: 'bad card <CREDIT_CARD>'" in out
    )
    assert "nothing personal in 12 chunks" in out
    for value in ("ana@example.com", "Tom Lane", "4111"):
        assert value not in out


def test_the_filter_leaves_the_record_formatted_and_without_args(
    detector: PiiDetector,
) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("a@example.com",), None)
    assert RedactingFilter(detector).filter(record) is True
    assert (record.msg, record.args) == ("to <EMAIL_ADDRESS>", None)


def test_a_malformed_log_call_is_redacted_not_raised(detector: PiiDetector) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s %s", ("Tom Lane",), None)
    assert RedactingFilter(detector).filter(record) is True
    assert "Tom Lane" not in record.getMessage()


def test_a_value_found_in_one_message_is_masked_where_the_recognisers_miss_it(
    detector: PiiDetector,
) -> None:
    masker = Masker(detector)
    history = "Earlier: DE89 3704 0044 0532 0130 00 4111 1111 1111 1111 were listed."
    sources = "The account is DE89 3704 0044 0532 0130 00. The card is 4111 1111 1111 1111."
    assert detector.count(history).get("IBAN_CODE") is None  # run together: missed alone
    masked_history, masked_sources = masker.mask_many([history, sources])
    for text in (masked_history, masked_sources):
        assert "DE89" not in text and "4111" not in text
    assert masked_history == "Earlier: <IBAN_CODE_1> <CREDIT_CARD_1> were listed."
    assert masker.unmask(masked_history) == history


def test_spotlight_marks_hide_no_value_from_the_guard(detector: PiiDetector) -> None:
    from rag.guard.spotlight import MARK, remark, unmark

    marked = f"<<<source 1 ab12>>>\nMail{MARK}ops@example.org{MARK}today.\n<<<end source 1 ab12>>>"
    masked = remark(Masker(detector).mask(unmark(marked)))
    assert masked == (
        f"<<<source 1 ab12>>>\nMail{MARK}<EMAIL_ADDRESS_1>{MARK}today.\n<<<end source 1 ab12>>>"
    )


def test_log_lines_are_redacted_fast_without_presidio() -> None:
    from rag.guard.pii import LogDetector, redact

    line = (
        "answer failed for ann.lee@example.org from 203.0.113.7: card 4111 1111 1111 1111, "
        "call +44 20 7946 0958, IBAN DE89 3704 0044 0532 0130 00; took 1019.64 s, "
        "version 15.4.2, 12,391 chunks"
    )
    out = redact(line, LogDetector())
    for value in ("ann.lee", "203.0.113.7", "4111", "7946", "DE89"):
        assert value not in out
    assert "1019.64 s" in out and "15.4.2" in out and "12,391 chunks" in out
