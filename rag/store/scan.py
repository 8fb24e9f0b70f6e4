"""What ingestion found in each chunk: injection flags and personal data, kept with the index.

The ``chunk_guard`` table beside ``chunks`` holds a row for each chunk in which something
was found (most chunks have none): the injection rules that fired (``rag.guard.injection``)
and the kinds of personal data with their counts (``rag.guard.pii``). Its rows are
versioned by generation like every row (``rag.store.meta``). Each generation's manifest
names the scanner version every chunk was scanned with; an index scanned by another
version, or not at all, is scanned again in full by its next writer, so what the index
reports always covers every chunk. Without that version the index is "not scanned" and
reports nothing either way.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Protocol

from rag.store import meta

logger = logging.getLogger(__name__)


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


def summaries(db: sqlite3.Connection, gen: int) -> dict[str, GuardSummary]:
    """doc_id -> what its chunks hold in generation ``gen`` (nothing found: left out)."""
    out: dict[str, GuardSummary] = {}
    rows = db.execute(
        "SELECT c.doc_id, g.flags, g.pii FROM chunk_guard g JOIN chunks c ON c.id = g.id "
        f"WHERE {meta.live('g', gen)}"
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


def rescan(db: sqlite3.Connection, scanner: Scanner, gen: int) -> int:
    """Scan every chunk of generation ``gen`` again (the writer building it); how many."""
    total = 0
    db.execute("DELETE FROM chunk_guard WHERE added_gen = ?", (gen,))
    db.execute("UPDATE chunk_guard SET removed_gen = ? WHERE removed_gen IS NULL", (gen,))
    cursor = db.execute(f"SELECT id, text, heading FROM chunks c WHERE {meta.live('c', gen)}")
    while batch := cursor.fetchmany(1024):
        store_scans(db, [(cid, scanner(scan_text(t, h))) for cid, t, h in batch], gen)
        total += len(batch)
    logger.info("scanned %d stored chunks for injected instructions and personal data", total)
    return total


def scan_text(text: str, heading: str | None) -> str:
    """What is scanned of a chunk: its section heading (document text too) and its text."""
    return f"{heading}\n{text}" if heading else text


def store_scans(db: sqlite3.Connection, scans: list[tuple[int, ChunkScan]], gen: int) -> None:
    """Keep the scans of newly inserted chunks (those with something found)."""
    db.executemany(
        "INSERT INTO chunk_guard (id, flags, pii, added_gen) VALUES (?, ?, ?, ?)",
        [(*scan.row(cid), gen) for cid, scan in scans if not scan.empty],
    )


def chunk_flags(db: sqlite3.Connection, ids: list[int], gen: int) -> dict[int, tuple[str, ...]]:
    """Injection flags of chunks by internal id (chunks without flags left out)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT id, flags FROM chunk_guard g WHERE flags != '' AND id IN ({marks}) "
        f"AND {meta.live('g', gen)}",
        ids,
    )
    return {int(cid): tuple(flags.split(",")) for cid, flags in rows}


def flagged_count(db: sqlite3.Connection, gen: int) -> int:
    """How many chunks carry injection flags in generation ``gen``."""
    row = db.execute(
        f"SELECT COUNT(*) FROM chunk_guard g WHERE flags != '' AND {meta.live('g', gen)}"
    ).fetchone()
    return int(row[0])
