"""What ingestion found in each chunk: injection flags and personal data, kept with the index.

A table beside ``chunks`` holds a row for each chunk in which something was found (most
chunks have none): the injection rules that fired (``rag.guard.injection``) and the kinds
of personal data with their counts (``rag.guard.pii``). The ``guard_scan`` counter names
the scanner version every stored chunk was scanned with; an index written before this
table existed, or by another scanner version, is scanned again in full by its next
writer, so what the index reports always covers every chunk. Without that counter the
index is "not scanned" and reports nothing either way.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_guard (
    id INTEGER PRIMARY KEY,
    flags TEXT NOT NULL,
    pii TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS chunk_guard_delete AFTER DELETE ON chunks BEGIN
    DELETE FROM chunk_guard WHERE id = old.id;
END;
"""
COUNTER = "guard_scan"


@dataclass(frozen=True)
class ChunkScan:
    """What one chunk holds: injection rules that fired, kinds of personal data (counts)."""

    flags: tuple[str, ...] = ()
    pii: tuple[tuple[str, int], ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing was found."""
        return not self.flags and not self.pii

    def row(self, chunk_id: int) -> tuple[int, str, str]:
        """The ``chunk_guard`` row of this scan."""
        return chunk_id, ",".join(self.flags), json.dumps(dict(self.pii)) if self.pii else ""


class Scanner(Protocol):
    """Scans chunk texts; ``version`` changes whenever what it finds may change."""

    version: str

    def __call__(self, text: str) -> ChunkScan:
        """Scan one chunk's text."""
        ...


@dataclass
class GuardSummary:
    """What the scan found in one document."""

    pii: dict[str, int] = field(default_factory=dict)
    flagged: int = 0  # chunks with instruction-like text
    flags: dict[str, int] = field(default_factory=dict)  # rule -> chunks


def has_table(db: sqlite3.Connection) -> bool:
    """Whether this generation has the scan table."""
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunk_guard'"
    ).fetchone()
    return row is not None


def scanned_with(db: sqlite3.Connection) -> str | None:
    """The scanner version every chunk was scanned with (None: not scanned)."""
    if not has_table(db):
        return None
    if not _has_meta(db):
        return None
    row = db.execute("SELECT value FROM guard_meta WHERE name = ?", (COUNTER,)).fetchone()
    return str(row[0]) if row else None


def _has_meta(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'guard_meta'"
    ).fetchone()
    return row is not None


def summaries(db: sqlite3.Connection) -> dict[str, GuardSummary] | None:
    """doc_id -> what its chunks hold (documents with nothing found are left out).

    None when the index was not scanned.
    """
    if scanned_with(db) is None:
        return None
    out: dict[str, GuardSummary] = {}
    rows = db.execute(
        "SELECT c.doc_id, g.flags, g.pii FROM chunk_guard g JOIN chunks c ON c.id = g.id"
    )
    for doc_id, flags, pii in rows:
        summary = out.setdefault(doc_id, GuardSummary())
        if flags:
            summary.flagged += 1
            for rule in flags.split(","):
                summary.flags[rule] = summary.flags.get(rule, 0) + 1
        for kind, n in (json.loads(pii) if pii else {}).items():
            summary.pii[kind] = summary.pii.get(kind, 0) + int(n)
    return out


def prepare(db: sqlite3.Connection, scanner: Scanner | None) -> tuple[bool, bool]:
    """Make a writer's generation ready for scan rows: (scan new chunks, rescanned all).

    With a scanner whose version differs from the one the index was scanned with (or an
    index never scanned), every stored chunk is scanned again now. A writer without a
    scanner leaves its chunks unscanned, so the index stops claiming to be scanned.
    """
    if scanner is None:
        if _has_meta(db):
            db.execute("DELETE FROM guard_meta WHERE name = ?", (COUNTER,))
        return False, False
    db.executescript(SCHEMA)
    db.execute("CREATE TABLE IF NOT EXISTS guard_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    if scanned_with(db) == scanner.version:
        return True, False
    total = 0
    db.execute("DELETE FROM chunk_guard")
    cursor = db.execute("SELECT id, text, heading FROM chunks")
    while batch := cursor.fetchmany(1024):
        scans = [(cid, scanner(scan_text(text, heading))) for cid, text, heading in batch]
        db.executemany(
            "INSERT INTO chunk_guard VALUES (?, ?, ?)",
            [scan.row(cid) for cid, scan in scans if not scan.empty],
        )
        total += len(batch)
    db.execute("INSERT OR REPLACE INTO guard_meta VALUES (?, ?)", (COUNTER, scanner.version))
    logger.info("scanned %d stored chunks for injected instructions and personal data", total)
    return True, True


def scan_text(text: str, heading: str | None) -> str:
    """What is scanned of a chunk: its section heading (document text too) and its text."""
    return f"{heading}\n{text}" if heading else text


def store_scans(db: sqlite3.Connection, scans: list[tuple[int, ChunkScan]]) -> None:
    """Keep the scans of newly inserted chunks (those with something found)."""
    db.executemany(
        "INSERT OR REPLACE INTO chunk_guard VALUES (?, ?, ?)",
        [scan.row(cid) for cid, scan in scans if not scan.empty],
    )


def chunk_flags(db: sqlite3.Connection, ids: list[int]) -> dict[int, tuple[str, ...]]:
    """Injection flags of chunks by internal id (chunks without flags left out)."""
    if not ids or not has_table(db):
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT id, flags FROM chunk_guard WHERE flags != '' AND id IN ({marks})", ids
    )
    return {int(cid): tuple(flags.split(",")) for cid, flags in rows}


def flagged_count(db: sqlite3.Connection) -> int:
    """How many chunks carry injection flags."""
    if not has_table(db):
        return 0
    return int(db.execute("SELECT COUNT(*) FROM chunk_guard WHERE flags != ''").fetchone()[0])
