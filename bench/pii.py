"""PII detection: precision and recall on generated passages, false flags on a real corpus.

Generates 200 passages (seeded) that mix personal data of every kind the detector knows
with decoys that are not personal data (order numbers, versions, dates, ISBNs, ports,
amounts, hashes), runs ``PiiDetector`` and prints span-level precision and recall per kind
(a found span counts when it overlaps a true span of the same kind) and "masked" recall
(a true value is covered by any found span, whatever its kind: what masking needs).
Then it counts flags on ~2,000 paragraphs of the PostgreSQL documentation (which holds
hardly any personal data: every flag there is worth a look) and times the detector.

Names are drawn from mimesis, not from Faker (whose lists the detector uses), so PERSON
recall is not measured against the detector's own gazetteer; many common surnames are in
both, so it is still an optimistic figure.

    python bench/pii.py [--passages 200] [--paragraphs 2000] [--seed 7]

Writes ``bench/results/pii.json``.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.guard.pii import PiiDetector, PiiSpan

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpora/postgresql/usr/share/doc/postgresql-doc-15/html"
RESULT = ROOT / "results/pii.json"

# --- valid values -----------------------------------------------------------------------


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def credit_card(rng: random.Random) -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15)])
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = body + luhn_digit(body)
    sep = rng.choice([" ", "-", ""])
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def bad_card(rng: random.Random) -> str:
    """A 16-digit number that fails the Luhn check (a decoy)."""
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    wrong = str((int(luhn_digit(body)) + rng.randint(1, 9)) % 10)
    number = body + wrong
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


IBAN_BBAN = {
    "DE": lambda r: _digits(r, 18),
    "GB": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 14),
    "FR": lambda r: _digits(r, 10) + _digits(r, 11) + _digits(r, 2),
    "NL": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 10),
    "ES": lambda r: _digits(r, 20),
    "IT": lambda r: r.choice(string.ascii_uppercase) + _digits(r, 10) + _digits(r, 12),
}


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_BBAN))
    bban = IBAN_BBAN[country](rng)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    code = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4))
    return code


def us_ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def uk_nhs(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 9)
        check = 11 - sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            n = body + str(check)
            return f"{n[:3]} {n[3:6]} {n[6:]}"


def uk_nino(rng: random.Random) -> str:
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in {"GB", "NK", "TN", "BG", "KN", "NT", "ZZ"}:
        first, second = "A", "B"
    d = _digits(rng, 6)
    suffix = rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {suffix}"
    return f"{first}{second}{d}{suffix}"


def es_nif(rng: random.Random) -> str:
    n = rng.randint(1_000_000, 99_999_999)
    return f"{n:08d}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def es_nie(rng: random.Random) -> str:
    lead = rng.choice("XYZ")
    n = rng.randint(0, 9_999_999)
    full = int(str("XYZ".index(lead)) + f"{n:07d}")
    return f"{lead}{n:07d}{'TRWAGMYFPDXBNJZSQVHLCKE'[full % 23]}"


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def in_aadhaar(rng: random.Random) -> str:
    body = str(rng.randint(2, 9)) + _digits(rng, 10)
    c = 0
    for i, ch in enumerate(reversed(body)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[(i + 1) % 8][int(ch)]]
    n = body + str(_VERHOEFF_INV[c])
    return rng.choice([f"{n[:4]} {n[4:8]} {n[8:]}", n])


def au_tfn(rng: random.Random) -> str:
    weights = [1, 4, 3, 7, 5, 8, 6, 9, 10]
    while True:
        d = [rng.randint(0, 9) for _ in range(9)]
        if d[0] and sum(a * b for a, b in zip(d, weights, strict=True)) % 11 == 0:
            n = "".join(map(str, d))
            return f"{n[:3]} {n[3:6]} {n[6:]}"


def sg_nric(rng: random.Random) -> str:
    lead = rng.choice("ST")
    d = [rng.randint(0, 9) for _ in range(7)]
    total = sum(a * b for a, b in zip(d, [2, 7, 6, 5, 4, 3, 2], strict=True))
    total += 4 if lead == "T" else 0
    return lead + "".join(map(str, d)) + "JZIHGFEDCBA"[total % 11]


def faker_id(locale: str, method: str):
    from faker import Faker

    fake = Faker(locale)

    def make(rng: random.Random) -> str:
        fake.seed_instance(rng.random())
        return str(getattr(fake, method)())

    return make


def ipv4(rng: random.Random) -> str:
    first = rng.choice([23, 45, 62, 81, 93, 104, 151, 172, 185, 192, 203, 212])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    return rng.choice([":".join(groups), "2001:db8::" + groups[0], "fe80::" + ":".join(groups[:4])])


PHONE_FORMATS = [
    lambda r: (
        f"({r.choice([212, 312, 415, 617, 646, 702, 818])}) "
        f"{r.randint(201, 989)}-{r.randint(0, 9999):04d}"
    ),
    lambda r: (
        f"+1 {r.choice([202, 305, 404, 512, 720])}-{r.randint(201, 989)}-{r.randint(0, 9999):04d}"
    ),
    lambda r: f"+44 20 7{r.randint(100, 999)} {r.randint(1000, 9999)}",
    lambda r: f"07{r.randint(400, 999)} {r.randint(100000, 999999)}",
    lambda r: f"+49 30 {r.randint(1000000, 9999999)}",
    lambda r: (
        f"+33 1 {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)}"
    ),
]


def phone(rng: random.Random) -> str:
    return rng.choice(PHONE_FORMATS)(rng)


_MIMESIS_LOCALES = ["EN", "EN_GB", "DE", "FR", "ES", "IT", "NL", "PT", "SV", "DA", "PL"]


def person(rng: random.Random) -> str:
    from mimesis import Locale, Person

    p = Person(getattr(Locale, rng.choice(_MIMESIS_LOCALES)), seed=rng.random())
    return p.full_name()


def email(rng: random.Random) -> str:
    from mimesis import Locale, Person

    return Person(Locale.EN, seed=rng.random()).email()


GENERATORS = {
    "EMAIL_ADDRESS": email,
    "PHONE_NUMBER": phone,
    "IBAN_CODE": iban,
    "CREDIT_CARD": credit_card,
    "IP_ADDRESS": lambda r: ipv4(r) if r.random() < 0.7 else ipv6(r),
    "US_SSN": us_ssn,
    "UK_NHS": uk_nhs,
    "UK_NINO": uk_nino,
    "ES_NIF": es_nif,
    "ES_NIE": es_nie,
    "IT_FISCAL_CODE": faker_id("it_IT", "ssn"),
    "IN_AADHAAR": in_aadhaar,
    "AU_TFN": au_tfn,
    "SG_NRIC_FIN": sg_nric,
    "PL_PESEL": faker_id("pl_PL", "pesel"),
    "FI_PERSONAL_IDENTITY_CODE": faker_id("fi_FI", "ssn"),
    "PERSON": person,
}

# Sentences with one slot; the kind's usual context word appears in some, not all.
TEMPLATES = {
    "EMAIL_ADDRESS": [
        "Send the signed form to {}.",
        "Questions go to {} before Friday.",
        "Contact: {}",
    ],
    "PHONE_NUMBER": [
        "Call the front desk on {} if the door is locked.",
        "Her number is {}.",
        "Tel. {}",
    ],
    "IBAN_CODE": [
        "Pay the deposit into IBAN {}.",
        "Refunds are sent to account {}.",
        "Bank details: {}",
    ],
    "CREDIT_CARD": ["The booking was paid with card {}.", "Charged to {} on arrival."],
    "IP_ADDRESS": ["The login came from {}.", "Requests from {} were blocked by the firewall."],
    "US_SSN": ["His SSN is {}.", "Social security number {} was on the W-2.", "SSN: {}"],
    "UK_NHS": ["NHS number {} is on the referral letter.", "Patient ref {} was admitted."],
    "UK_NINO": ["National Insurance number: {}.", "Her NINO {} appears on the payslip."],
    "ES_NIF": ["NIF {} figura en la factura.", "The tenant's NIF is {}."],
    "ES_NIE": ["NIE {} for the residence permit.", "His foreigner id is {}."],
    "IT_FISCAL_CODE": ["Codice fiscale {}.", "The fiscal code {} was checked."],
    "IN_AADHAAR": ["Aadhaar {} was linked to the account.", "KYC done with Aadhaar number {}."],
    "AU_TFN": ["Her tax file number is {}.", "TFN {} was supplied to the employer."],
    "SG_NRIC_FIN": ["NRIC {} was scanned at the lobby.", "Visitor id {} signed in."],
    "PL_PESEL": ["PESEL {} w formularzu.", "The PESEL number {} was verified."],
    "FI_PERSONAL_IDENTITY_CODE": ["Henkilötunnus {} on lomakkeessa.", "Finnish id {} was entered."],
    "PERSON": [
        "{} signed the lease on behalf of the company.",
        "The report was reviewed by {} last week.",
        "Please forward the minutes to {} and the board.",
        "According to {}, the migration finished early.",
    ],
}

DECOYS = [
    lambda r: f"Upgrade to version {r.randint(9, 17)}.{r.randint(0, 9)}.{r.randint(0, 20)} first.",
    lambda r: (
        f"Order #{r.randint(100000, 999999)} shipped on 2024-{r.randint(1, 12):02d}-"
        f"{r.randint(1, 28):02d}."
    ),
    lambda r: (
        f"Invoice INV-2024-{r.randint(1, 9999):04d} is due on {r.randint(1, 28)}/"
        f"{r.randint(1, 12)}/2025."
    ),
    lambda r: "The ISBN is 978-3-16-148410-0 and the second edition is 978-0-306-40615-7.",
    lambda r: f"The server listens on port {r.choice([5432, 8080, 443, 6379])}.",
    lambda r: (
        f"Set shared_buffers to {r.choice([128, 256, 1024])}MB and max_connections to "
        f"{r.choice([100, 200, 500])}."
    ),
    lambda r: f"The total was ${r.randint(100, 99999):,}.{r.randint(0, 99):02d} including tax.",
    lambda r: f"Commit {''.join(r.choice('0123456789abcdef') for _ in range(40))} fixed it.",
    lambda r: (
        f"The meeting is at {r.randint(8, 17)}:{r.choice(['00', '15', '30', '45'])} "
        "in the New York office."
    ),
    lambda r: f"Tracking number {r.randint(10**11, 10**12 - 1)} was assigned by the carrier.",
    lambda r: f"{bad_card(r)} was rejected as an invalid card number.",
    lambda r: "See RFC 2616 section 14.9 and ISO 8601 for details.",
    lambda r: f"Run {r.randint(1, 9999)} of the nightly build took {r.randint(1, 59)} minutes.",
    lambda r: "The Product Manager and the Sales Director met in San Francisco on Monday.",
]


@dataclass
class Passage:
    text: str
    truth: list[PiiSpan]


def make_passage(rng: random.Random) -> Passage:
    parts: list[str] = []
    truth: list[PiiSpan] = []
    pos = 0
    kinds = rng.sample(sorted(GENERATORS), rng.randint(1, 3))
    pieces: list[tuple[str | None, str]] = []
    for kind in kinds:
        pieces.append((kind, rng.choice(TEMPLATES[kind])))
    for _ in range(rng.randint(1, 3)):
        pieces.append((None, rng.choice(DECOYS)(rng)))
    rng.shuffle(pieces)
    for kind, template in pieces:
        if kind is None:
            sentence = template
        else:
            value = GENERATORS[kind](rng)
            before, after = template.split("{}")
            truth.append(PiiSpan(kind, pos + len(before), pos + len(before) + len(value), 1.0))
            sentence = before + value + after
        parts.append(sentence)
        pos += len(sentence) + 1
    return Passage(" ".join(parts), truth)


def overlaps(a: PiiSpan, b: PiiSpan) -> bool:
    return a.start < b.end and b.start < a.end


def score_passages(detector: PiiDetector, passages: list[Passage]) -> dict[str, object]:
    tp_found: Counter[str] = Counter()
    found_n: Counter[str] = Counter()
    hit_true: Counter[str] = Counter()
    true_n: Counter[str] = Counter()
    masked: Counter[str] = Counter()
    confusions: Counter[str] = Counter()
    misses: dict[str, list[str]] = {}
    false: dict[str, list[str]] = {}
    for p in passages:
        found = detector.find(p.text)
        for f in found:
            found_n[f.kind] += 1
            if any(overlaps(f, t) and t.kind == f.kind for t in p.truth):
                tp_found[f.kind] += 1
            else:
                other = [t.kind for t in p.truth if overlaps(f, t)]
                if other:
                    confusions[f"{other[0]} as {f.kind}"] += 1
                false.setdefault(f.kind, []).append(p.text[f.start : f.end])
        for t in p.truth:
            true_n[t.kind] += 1
            if any(overlaps(f, t) and t.kind == f.kind for f in found):
                hit_true[t.kind] += 1
            covered = set()
            for f in found:
                covered.update(range(max(f.start, t.start), min(f.end, t.end)))
            if len(covered) == t.end - t.start:
                masked[t.kind] += 1
            elif not any(overlaps(f, t) and t.kind == f.kind for f in found):
                misses.setdefault(t.kind, []).append(p.text[t.start : t.end])
    per_kind = {}
    for kind in sorted(set(true_n) | set(found_n)):
        per_kind[kind] = {
            "true": true_n[kind],
            "found": found_n[kind],
            "precision": round(tp_found[kind] / found_n[kind], 3) if found_n[kind] else None,
            "recall": round(hit_true[kind] / true_n[kind], 3) if true_n[kind] else None,
            "fully_masked": round(masked[kind] / true_n[kind], 3) if true_n[kind] else None,
            "missed_examples": misses.get(kind, [])[:5],
            "false_examples": false.get(kind, [])[:5],
        }

    def overall(kinds: list[str]) -> dict[str, float]:
        f = sum(found_n[k] for k in kinds)
        t = sum(true_n[k] for k in kinds)
        return {
            "precision": round(sum(tp_found[k] for k in kinds) / f, 3) if f else 0.0,
            "recall": round(sum(hit_true[k] for k in kinds) / t, 3) if t else 0.0,
            "fully_masked": round(sum(masked[k] for k in kinds) / t, 3) if t else 0.0,
        }

    pattern = [k for k in per_kind if k != "PERSON"]
    return {
        "per_kind": per_kind,
        "pattern_kinds": overall(pattern),
        "person": overall(["PERSON"]),
        "all": overall(list(per_kind)),
        "confusions": dict(confusions),
    }


# --- the real corpus -----------------------------------------------------------------------

_BLOCK = re.compile(r"<(p|pre|li|td|dd|dt|h[1-4])\b[^>]*>(.*?)</\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def corpus_paragraphs(limit: int, rng: random.Random) -> list[str]:
    paragraphs: list[str] = []
    for path in sorted(CORPUS.glob("*.html")):
        raw = path.read_text(encoding="utf-8", errors="replace")
        for match in _BLOCK.finditer(raw):
            body = match.group(2)
            text = html.unescape(_TAG.sub(" ", body))
            if match.group(1).lower() != "pre":
                text = " ".join(text.split())
            if len(text) >= 40:
                paragraphs.append(text)
    rng.shuffle(paragraphs)
    return paragraphs[:limit]


_CREDITS = re.compile(r"\(((?:[A-Z\u00c0-\u017f][^\s(),]+(?: [^\s(),]+){1,3}(?:, )?)+)\)")


def release_note_credits() -> list[str]:
    """The "(Tom Lane, Andres Freund)" credits of the release notes: real names, as written."""
    credits: list[str] = []
    for path in sorted(CORPUS.glob("release-*.html")):
        text = " ".join(html.unescape(_TAG.sub(" ", path.read_text(encoding="utf-8"))).split())
        credits.extend(m.group(0) for m in _CREDITS.finditer(text))
    return credits


def credit_recall(detector: PiiDetector, credits: list[str]) -> dict[str, object]:
    """Share of the names in release-note credits that a PERSON span covers entirely."""
    hits = total = 0
    per_name: dict[str, bool] = {}
    for credit in credits:
        spans = [s for s in detector.find(credit) if s.kind == "PERSON"]
        pos = 1
        for name in credit[1:-1].split(", "):
            start, end = pos, pos + len(name)
            pos = end + 2
            found = any(s.start <= start and end <= s.end for s in spans)
            total += 1
            hits += found
            per_name[name] = per_name.get(name, False) or found
    missed = sorted(n for n, f in per_name.items() if not f)
    return {
        "credits": len(credits),
        "names": total,
        "recall": round(hits / total, 3) if total else None,
        "distinct_names": len(per_name),
        "distinct_recall": round((len(per_name) - len(missed)) / len(per_name), 3)
        if per_name
        else None,
        "missed_examples": missed[:20],
    }


def join_chunks(paragraphs: list[str], size: int) -> list[str]:
    """Paragraphs joined into chunks of about ``size`` characters (the ingest default)."""
    chunks: list[str] = []
    current: list[str] = []
    for p in paragraphs:
        current.append(p)
        if sum(map(len, current)) >= size:
            chunks.append("\n\n".join(current))
            current = []
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--paragraphs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    start = time.perf_counter()
    detector = PiiDetector()
    build_s = time.perf_counter() - start

    rng = random.Random(args.seed)
    passages = [make_passage(rng) for _ in range(args.passages)]
    scores = score_passages(detector, passages)

    report: dict[str, object] = {"detector_build_s": round(build_s, 2), "generated": scores}
    print(f"detector built in {build_s:.1f} s")
    print(f"\n{args.passages} generated passages (span-level, overlap with the same kind)")
    print(f"{'kind':28} {'true':>5} {'found':>5} {'prec':>6} {'recall':>6} {'masked':>6}")
    per_kind: dict[str, dict[str, object]] = scores["per_kind"]  # type: ignore[assignment]
    for kind, row in per_kind.items():
        print(
            f"{kind:28} {row['true']:>5} {row['found']:>5} {_fmt(row['precision']):>6} "
            f"{_fmt(row['recall']):>6} {_fmt(row['fully_masked']):>6}"
        )
    for label in ("pattern_kinds", "person", "all"):
        row = scores[label]  # type: ignore[assignment]
        print(
            f"{label:28} {'':>5} {'':>5} {_fmt(row['precision']):>6} {_fmt(row['recall']):>6} "
            f"{_fmt(row['fully_masked']):>6}"
        )
    if scores["confusions"]:
        print("confusions:", scores["confusions"])

    if CORPUS.is_dir():
        paragraphs = corpus_paragraphs(args.paragraphs, random.Random(args.seed))
        flags: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        flagged_chunks = 0
        start = time.perf_counter()
        results = [detector.find(p) for p in paragraphs]
        elapsed = time.perf_counter() - start
        for text, spans in zip(paragraphs, results, strict=True):
            flagged_chunks += bool(spans)
            for s in spans:
                flags[s.kind] += 1
                examples.setdefault(s.kind, []).append(text[s.start : s.end])
        n = len(paragraphs)
        chars = sum(map(len, paragraphs))
        per_1000 = {k: round(v * 1000 / n, 1) for k, v in flags.most_common()}
        corpus = {
            "paragraphs": n,
            "mean_chars": round(chars / n),
            "flags_per_1000_chunks": per_1000,
            "flagged_chunks_per_1000": round(flagged_chunks * 1000 / n, 1),
            "examples": {k: v[:8] for k, v in examples.items()},
            "seconds_per_1000_chunks": round(elapsed * 1000 / n, 2),
        }
        chunks = join_chunks(paragraphs, 1000)
        start = time.perf_counter()
        for chunk in chunks:
            detector.find(chunk)
        corpus["seconds_per_1000_chunks_of_1000_chars"] = round(
            (time.perf_counter() - start) * 1000 / len(chunks), 2
        )
        corpus["person_recall_on_release_note_credits"] = credits = credit_recall(
            detector, release_note_credits()
        )
        report["postgresql_docs"] = corpus
        print(f"\nPostgreSQL docs: {n} paragraphs (mean {chars / n:.0f} chars)")
        print(f"flagged chunks per 1,000: {corpus['flagged_chunks_per_1000']}")
        print("flags per 1,000 chunks by kind:", per_1000 or "none")
        for kind, values in examples.items():
            print(f"  {kind}: {values[:8]}")
        print(
            f"PERSON recall on release-note credits: {credits['recall']} of "
            f"{credits['names']} names ({credits['distinct_recall']} of "
            f"{credits['distinct_names']} distinct); missed e.g. {credits['missed_examples'][:8]}"
        )
        print(
            f"time: {corpus['seconds_per_1000_chunks']} s per 1,000 paragraphs, "
            f"{corpus['seconds_per_1000_chunks_of_1000_chars']} s per 1,000 chunks of "
            "~1,000 chars"
        )
    else:
        print(f"\n(no corpus at {CORPUS}: false flags on real text not measured)")

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {RESULT.relative_to(ROOT.parent)}")


def _fmt(value: object) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
