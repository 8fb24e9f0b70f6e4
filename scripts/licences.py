"""What licence a package is under, and whether ragchat may use it that way.

The licence is read from the installed package's metadata: its SPDX ``License-Expression``
(PEP 639) first, then a short ``License`` field, then its ``License ::`` classifiers, and last
the licence text itself (a long ``License`` field or the licence files), recognised by a few
telltale sentences. Each licence falls in one category:

- ``permissive``: OSI-approved with no copyleft (MIT, BSD, Apache-2.0, ISC, PSF-2.0, ...);
- ``weak copyleft``: LGPL, MPL: fine to use as an unmodified library, but a reviewer must
  confirm that is how we use it;
- ``strong copyleft``: GPL, AGPL (the AGPL reaches a network service's users);
- ``not OSI-approved``: proprietary, non-commercial, source-available, public-domain
  dedications, content licences (CC-BY);
- ``unknown``: nothing recognisable: someone has to read the licence.

Only ``permissive`` passes by itself; any other package needs a ``Review``
(``scripts/licence_review.py``) that names the licence reviewed and why it is acceptable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageMetadata
from typing import Protocol

PERMISSIVE = "permissive"
WEAK = "weak copyleft"
STRONG = "strong copyleft"
NOT_OSI = "not OSI-approved"
UNKNOWN = "unknown"
# From acceptable to not: an AND of licences takes the worst, an OR the best.
_RANK = {PERMISSIVE: 0, WEAK: 1, UNKNOWN: 2, NOT_OSI: 3, STRONG: 4}


@dataclass(frozen=True)
class Review:
    """A reviewed package whose licence is not plainly permissive.

    Attributes:
        licence: The licence as this script reports it; the review lapses when it changes.
        reason: Why it is acceptable for ragchat, as used.
    """

    licence: str
    reason: str


@dataclass(frozen=True)
class Licence:
    """A package's licence as found.

    Attributes:
        text: The licence as shown (an SPDX expression where the package gives one).
        source: Where it came from: License-Expression, License, classifier or licence text.
        category: One of the categories of the module docstring.
    """

    text: str
    source: str
    category: str


# Names as packages write them (lower case) -> SPDX identifiers.
_NAMES = {
    "mit": "MIT",
    "mit license": "MIT",
    "the mit license": "MIT",
    "mit licence": "MIT",
    "expat": "MIT",
    "bsd": "BSD",
    "bsd license": "BSD",
    "new bsd": "BSD-3-Clause",
    "new bsd license": "BSD-3-Clause",
    "modified bsd": "BSD-3-Clause",
    "3-clause bsd": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause",
    "bsd 3-clause": "BSD-3-Clause",
    "bsd-3": "BSD-3-Clause",
    "bsd 2-clause": "BSD-2-Clause",
    "simplified bsd": "BSD-2-Clause",
    "apache": "Apache-2.0",
    "apache 2": "Apache-2.0",
    "apache 2.0": "Apache-2.0",
    "apache 2.0 license": "Apache-2.0",
    "apache-2": "Apache-2.0",
    "apache license": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0",
    "apache license version 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache software license 2.0": "Apache-2.0",
    "apache software license (apache-2.0)": "Apache-2.0",
    "isc license": "ISC",
    "isc license (iscl)": "ISC",
    "python software foundation license": "PSF-2.0",
    "psf license": "PSF-2.0",
    "psf": "PSF-2.0",
    "mozilla public license 2.0 (mpl 2.0)": "MPL-2.0",
    "mpl 2.0": "MPL-2.0",
    "gnu lesser general public license v3 (lgplv3)": "LGPL-3.0",
    "gnu lesser general public license v3 or later (lgplv3+)": "LGPL-3.0-or-later",
    "gnu lesser general public license v2 (lgplv2)": "LGPL-2.1",
    "gnu library or lesser general public license (lgpl)": "LGPL",
    "gnu general public license v3 (gplv3)": "GPL-3.0",
    "gnu general public license v3 or later (gplv3+)": "GPL-3.0-or-later",
    "gnu general public license v2 (gplv2)": "GPL-2.0",
    "gnu general public license (gpl)": "GPL",
    "gnu affero general public license v3": "AGPL-3.0",
    "gnu affero general public license v3 or later (agplv3+)": "AGPL-3.0-or-later",
    "the unlicense (unlicense)": "Unlicense",
    "zlib/libpng license": "Zlib",
    "historical permission notice and disclaimer (hpnd)": "HPND",
    "boost software license 1.0 (bsl-1.0)": "BSL-1.0",
    "universal permissive license (upl)": "UPL-1.0",
    "public domain": "Public-Domain",
    "other/proprietary license": "Proprietary",
}

# SPDX identifiers (upper case; "-only"/"-or-later" dropped first) by category.
_PERMISSIVE_IDS = {
    "MIT", "MIT-0", "MIT-CMU", "X11", "BSD", "BSD-2-CLAUSE", "BSD-3-CLAUSE", "0BSD",
    "APACHE-2.0", "ISC", "PSF-2.0", "PYTHON-2.0", "PYTHON-2.0.1", "HPND", "ZLIB", "BSL-1.0",
    "UNLICENSE", "UPL-1.0", "NCSA", "MS-PL", "AFL-3.0", "ZPL-2.1", "POSTGRESQL", "UNICODE-3.0",
    "UNICODE-DFS-2016", "CNRI-PYTHON", "ECL-2.0", "OPENSSL",
}  # fmt: skip
_WEAK_PREFIXES = ("LGPL", "MPL", "EPL", "CDDL", "LGPLLR")
_STRONG_PREFIXES = ("GPL", "AGPL", "EUPL", "OSL", "SSPL", "CPAL")
_NOT_OSI_IDS = {"CC0-1.0", "PUBLIC-DOMAIN", "PROPRIETARY", "WTFPL", "BUSL-1.1", "ELASTIC-2.0"}
_NOT_OSI_PREFIXES = ("CC-", "COMMONS-CLAUSE", "LICENSEREF-PROPRIETARY")


def spdx_id(name: str) -> str:
    """The SPDX identifier of a licence name as packages write it (``MIT License`` -> ``MIT``)."""
    return _NAMES.get(name.strip().lower(), name.strip())


def _id_category(spdx: str) -> str:
    key = spdx.upper().removesuffix("+")
    for suffix in ("-ONLY", "-OR-LATER"):
        key = key.removesuffix(suffix)
    if key in _PERMISSIVE_IDS:
        return PERMISSIVE
    if key in _NOT_OSI_IDS or key.startswith(_NOT_OSI_PREFIXES):
        return NOT_OSI
    if key.startswith(_WEAK_PREFIXES):
        return WEAK
    if key.startswith(_STRONG_PREFIXES):
        return STRONG
    return UNKNOWN


def _worst(categories: Iterable[str]) -> str:
    return max(categories, key=_RANK.__getitem__, default=UNKNOWN)


def _best(categories: Iterable[str]) -> str:
    return min(categories, key=_RANK.__getitem__, default=UNKNOWN)


_OPERATORS = {"AND", "OR", "WITH", "(", ")", ","}


def _tokens(text: str) -> list[str]:
    """Operators, parentheses and terms; a term may be several words (``dependency licenses``)."""
    tokens: list[str] = []
    for word in re.findall(r"[(),]|[^\s(),]+", text):
        if word.upper() in {"AND", "OR", "WITH"}:
            tokens.append(word.upper())
        elif word in _OPERATORS or not tokens or tokens[-1] in _OPERATORS:
            tokens.append(word)
        else:
            tokens[-1] += " " + word
    return tokens


class _Parser:
    """SPDX expressions: OR of ANDs of terms (``X WITH exception``) or parenthesised groups.

    A comma counts as AND: packages write ``BSD-3-Clause, Apache-2.0`` for code under both.
    """

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def _peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self) -> str:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def parse(self) -> str:
        category = self._any()
        return category if self._peek() is None else UNKNOWN

    def _any(self) -> str:
        options = [self._all()]
        while self._peek() == "OR":
            self._take()
            options.append(self._all())
        return _best(options)

    def _all(self) -> str:
        parts = [self._one()]
        while self._peek() in {"AND", ","}:
            self._take()
            parts.append(self._one())
        return _worst(parts)

    def _one(self) -> str:
        token = self._peek()
        if token is None or token in {"AND", "OR", "WITH", ")", ","}:
            return UNKNOWN
        self._take()
        if token == "(":
            category = self._any()
            if self._peek() == ")":
                self._take()
            return category
        if self._peek() == "WITH":  # an exception only ever grants more: the licence decides
            self._take()
            if self._peek() not in {None, *_OPERATORS}:
                self._take()
        return _id_category(spdx_id(token))


def classify(expression: str) -> str:
    """The category of a licence expression.

    An SPDX expression (``MIT OR Apache-2.0``, ``(MIT OR Apache-2.0) AND MPL-2.0``) takes the
    best of its OR alternatives and the worst of its AND parts; a licence's name as packages
    write it (``Apache Software License``) is mapped to its SPDX identifier first.

    Args:
        expression: An SPDX expression or a licence's name.

    Returns:
        One of the categories of the module docstring.
    """
    text = expression.strip()
    if not text:
        return UNKNOWN
    if text.lower() in _NAMES:
        return _id_category(spdx_id(text))
    return _Parser(text).parse()


# Telltale sentences of licence texts, the more specific first.
_TEXTS = (
    ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0"),
    ("GNU LESSER GENERAL PUBLIC LICENSE", "LGPL"),
    ("GNU LIBRARY GENERAL PUBLIC LICENSE", "LGPL"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL"),
    ("Mozilla Public License Version 2.0", "MPL-2.0"),
    ("Apache License", "Apache-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
    ("Redistribution and use in source and binary forms", "BSD"),
    ("Permission to use, copy, modify, and/or distribute this software for any", "ISC"),
    ("This is free and unencumbered software released into the public domain", "Unlicense"),
    ("PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"),
)


def recognise_text(text: str) -> str | None:
    """The licence whose full text this is, from a telltale sentence, or None."""
    flat = " ".join(text.split())
    for phrase, spdx in _TEXTS:
        if phrase.lower() in flat.lower():
            if spdx == "Apache-2.0" and "version 2.0" not in flat.lower():
                continue
            if spdx == "BSD":
                return "BSD-3-Clause" if "neither the name" in flat.lower() else "BSD-2-Clause"
            return spdx
    return None


def field_of(meta: PackageMetadata, name: str) -> str:
    """A core-metadata field's first value, stripped ("" when absent)."""
    values = meta.get_all(name) or [""]
    return str(values[0]).strip()


class Distribution(Protocol):
    """What the licence lookup needs of an installed distribution."""

    @property
    def metadata(self) -> PackageMetadata:
        """The core metadata."""
        ...

    def read_text(self, filename: str) -> str | None:
        """A file of the distribution's metadata folder."""
        ...


def _licence_file(dist: Distribution, name: str) -> str | None:
    # PEP 639 puts licence files under licenses/ in the metadata folder; older wheels at its top.
    for path in (f"licenses/{name}", name):
        try:
            body = dist.read_text(path)
        except (OSError, UnicodeDecodeError):  # a Latin-1 licence file: unread, as if absent
            body = None
        if body:
            return body
    return None


def licence_of(dist: Distribution) -> Licence:
    """A package's licence from its installed metadata (see the module docstring).

    Args:
        dist: The installed distribution.

    Returns:
        The licence, with where it was found and its category.
    """
    meta = dist.metadata
    expression = field_of(meta, "License-Expression")
    if expression:
        return Licence(expression, "License-Expression", classify(expression))
    field = field_of(meta, "License")
    # A short License field is the package's own statement; a long one is a licence's text.
    short = field if field and "\n" not in field and len(field) <= 100 else ""
    if short and (category := classify(short)) != UNKNOWN:
        return Licence(short, "License", category)
    classifiers = [
        c.split("::", 1)[1].strip().removeprefix("OSI Approved ::").strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::") and c.strip() != "License :: OSI Approved"
    ]
    if classifiers:
        text = " AND ".join(_NAMES.get(c.lower(), c) for c in classifiers)
        return Licence(text, "classifier", classify(text))
    if short:
        return Licence(short, "License", UNKNOWN)
    texts = [field] if field else []
    texts += [
        body for name in meta.get_all("License-File") or [] if (body := _licence_file(dist, name))
    ]
    for body in texts:
        spdx = recognise_text(body)
        if spdx is not None:
            return Licence(spdx, "licence text", classify(spdx))
    return Licence("(none found)", "-", UNKNOWN)


def judge(name: str, licence: Licence, reviewed: dict[str, Review]) -> tuple[str, str]:
    """The verdict on one package's licence and the note shown beside it.

    Args:
        name: The canonical package name.
        licence: Its licence as found.
        reviewed: The reviewed exceptions.

    Returns:
        ``("ok", "")``, ``("reviewed", reason)`` or ``("FAIL", what to do)``.
    """
    review = reviewed.get(name)
    if licence.category == PERMISSIVE:
        if review is not None:
            return "FAIL", "permissive now: remove its entry from REVIEWED"
        return "ok", ""
    if review is None:
        return "FAIL", f"{licence.category}: read the licence, then add it to REVIEWED"
    if review.licence != licence.text:
        return "FAIL", f"licence changed since the review ({review.licence!r}): review again"
    return "reviewed", review.reason
