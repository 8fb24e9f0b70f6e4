"""The embedded index's metadata: one SQLite database in WAL mode, versioned by generation.

Every row carries the generation that added it (``added_gen``) and, once gone, the one
that removed it (``removed_gen``). A reader pinned to generation ``g`` sees the rows with
``added_gen <= g`` and no ``removed_gen`` at or before ``g``, inside one read transaction,
so every read of a view agrees. A writer tags what it adds and removes with the generation
it is building and commits just before publishing the manifest; until then (and if it
dies before) its rows are invisible to every published generation, and the next writer
rolls them back. A change to a row is a removal of the old version and an insertion of the
new one (rows the building generation added are changed in place).

Rows removed two generations ago are purged by the next writer, and chunk rows only once
their vector left every retained segment: until then a search must know the vector is
dead. ``counters.oldest_readable`` says which generation purges may have broken; a reader
pinned to an older one reads ``CURRENT`` again.

The text is stored once: nothing is copied per generation.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

SCHEMA = """
CREATE TABLE documents (
    rid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    pages INTEGER,
    chunks INTEGER NOT NULL,
    ingested_at TEXT NOT NULL,
    collection TEXT NOT NULL,
    partial_source TEXT,           -- the file of a document stored in part; NULL: complete
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER
);
CREATE INDEX documents_doc ON documents(doc_id);
CREATE TABLE sources (
    rid INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    added_at TEXT NOT NULL,
    title TEXT,
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER
);
CREATE INDEX sources_path ON sources(path);
CREATE INDEX sources_doc ON sources(doc_id);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER,
    heading TEXT,
    char_offset INTEGER NOT NULL,
    collection TEXT NOT NULL,
    segment TEXT NOT NULL,          -- the segment holding its vector in the newest generation
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER
);
CREATE INDEX chunks_doc ON chunks(doc_id, seq);
CREATE INDEX chunks_chunk_id ON chunks(chunk_id);
CREATE INDEX chunks_added ON chunks(added_gen);
CREATE INDEX chunks_removed ON chunks(removed_gen) WHERE removed_gen IS NOT NULL;
CREATE INDEX chunks_collection ON chunks(collection, id) WHERE collection != 'default';
-- The keyword (BM25) index: SQLite FTS5 over the chunks, kept in step by triggers. A row
-- stays in it from its insertion to its purge; searches drop rows their generation does
-- not see.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, heading, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, heading)
    VALUES ('delete', old.id, old.text, old.heading);
END;
-- What ingestion's scan found in a chunk (rows only where something was found).
CREATE TABLE chunk_guard (
    rid INTEGER PRIMARY KEY,
    id INTEGER NOT NULL,
    flags TEXT NOT NULL,
    pii TEXT NOT NULL,
    added_gen INTEGER NOT NULL,
    removed_gen INTEGER
);
CREATE INDEX chunk_guard_id ON chunk_guard(id);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('next_id', 1), ('next_segment', 1), ('oldest_readable', 0);
"""

VERSIONED = ("documents", "sources", "chunks", "chunk_guard")


def live(alias: str, gen: int) -> str:
    """The SQL condition: a row of ``alias`` is part of generation ``gen``."""
    g = int(gen)
    return (
        f"{alias}.added_gen <= {g} AND ({alias}.removed_gen IS NULL OR {alias}.removed_gen > {g})"
    )


def connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are begun explicitly), WAL on."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        db.execute("PRAGMA busy_timeout = 30000")
        if readonly:
            db.execute("PRAGMA query_only = ON")
    except BaseException:
        db.close()
        raise
    return db


def create(db: sqlite3.Connection) -> None:
    """Create the schema in an empty database and switch it to WAL."""
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    for statement in _statements(SCHEMA):
        db.execute(statement)
    db.execute("COMMIT")


def _statements(script: str) -> Iterable[str]:
    """The statements of a script, triggers kept whole (no ';' inside string literals)."""
    buf: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        buf.append(line)
        text = "\n".join(buf)
        if text.rstrip().endswith(";") and sqlite3.complete_statement(text):
            yield text
            buf = []


def counter(db: sqlite3.Connection, name: str) -> int:
    """A counter's value."""
    (value,) = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(value)


def set_counter(db: sqlite3.Connection, name: str, value: int) -> None:
    """Set a counter (inside the writer's transaction)."""
    db.execute("UPDATE counters SET value = ? WHERE name = ?", (int(value), name))


def take(db: sqlite3.Connection, name: str, n: int) -> int:
    """Reserve ``n`` numbers of a counter; the first of them."""
    first = counter(db, name)
    set_counter(db, name, first + n)
    return first


def roll_back_unpublished(db: sqlite3.Connection, published: int) -> int:
    """Undo what writers that never published left (rows tagged after ``published``).

    Returns how many rows were touched.
    """
    touched = 0
    for table in VERSIONED:
        touched += db.execute(f"DELETE FROM {table} WHERE added_gen > ?", (published,)).rowcount
        touched += db.execute(
            f"UPDATE {table} SET removed_gen = NULL WHERE removed_gen > ?", (published,)
        ).rowcount
    return touched


def purge(db: sqlite3.Connection, before: int, retained_segments: Iterable[str]) -> int:
    """Delete rows removed at or before generation ``before`` (no retained one sees them).

    Chunk rows whose vector is still in one of ``retained_segments`` are kept: searches of
    those segments must still know the vector is dead. Returns how many rows went.
    """
    gone = 0
    for table in ("documents", "sources", "chunk_guard"):
        gone += db.execute(
            f"DELETE FROM {table} WHERE removed_gen IS NOT NULL AND removed_gen <= ?", (before,)
        ).rowcount
    kept = sorted(set(retained_segments))
    marks = ",".join("?" * len(kept)) or "NULL"
    gone += db.execute(
        "DELETE FROM chunks WHERE removed_gen IS NOT NULL AND removed_gen <= ? "
        f"AND segment NOT IN ({marks})",
        (before, *kept),
    ).rowcount
    if before > counter(db, "oldest_readable"):
        set_counter(db, "oldest_readable", before)
    return gone


def retire(db: sqlite3.Connection, table: str, rid_column: str, rid: int, gen: int) -> None:
    """Remove one row version in generation ``gen`` (deleted outright if ``gen`` added it)."""
    db.execute(f"DELETE FROM {table} WHERE {rid_column} = ? AND added_gen = ?", (rid, gen))
    db.execute(
        f"UPDATE {table} SET removed_gen = ? WHERE {rid_column} = ? AND removed_gen IS NULL",
        (gen, rid),
    )
