"""The Postgres side of ``bench/scale.py --backend postgres``: disk and server memory.

``bench/scale.py`` measures what a ragchat process sees (publish, first query, hybrid
latency, recall, the client's peak RSS); with Postgres the index's disk and much of the
memory are the server's. This prints, for the index in ``--url``:

- disk: the index's tables with their indexes and TOAST (``pg_total_relation_size``),
  each table and index, against the raw text + vector bytes of its chunks;
- server memory: the proportional set size (PSS) of every process of the server whose
  data folder is ``--pgdata`` (shared buffers counted once), when it runs on this machine.

    python bench/scale_postgres.py --url postgresql://... [--pgdata DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def disk(url: str, schema: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT c.relname, c.relkind, pg_total_relation_size(c.oid), pg_relation_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'i') ORDER BY 3 DESC",
            (schema,),
        ).fetchall()
        raw = conn.execute(
            f"SELECT count(*), sum(octet_length(text)), sum(vector_dims(embedding)) * 4 "
            f'FROM "{schema}".chunks'
        ).fetchone()
    tables = {name: total for name, kind, total, _ in rows if kind == "r"}
    indexes = {name: size for name, kind, _, size in rows if kind == "i"}
    total = sum(tables.values())
    chunks, text_bytes, vector_bytes = (int(x or 0) for x in raw or (0, 0, 0))
    return {
        "chunks": chunks,
        "total_bytes": total,
        "raw_text_and_vector_bytes": text_bytes + vector_bytes,
        "ratio_to_raw": round(total / max(text_bytes + vector_bytes, 1), 2),
        "tables": tables,
        "indexes": indexes,
    }


def server_memory(pgdata: Path) -> dict[str, Any] | None:
    import psutil

    procs = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" or "postgres:" in cmd or str(pgdata) in cmd:
            try:
                procs.append((cmd[:60], proc.memory_full_info()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    if not procs:
        return None
    return {
        "processes": len(procs),
        "pss_mb": round(sum(m.pss for _, m in procs) / 2**20),
        "largest_rss_mb": round(max(m.rss for _, m in procs) / 2**20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", default="ragchat")
    parser.add_argument("--pgdata", type=Path, help="the server's data folder (for memory)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    result = {"disk": disk(args.url, args.schema)}
    if args.pgdata is not None:
        result["server_memory"] = server_memory(args.pgdata)
    out = json.dumps(result, indent=2)
    print(out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
