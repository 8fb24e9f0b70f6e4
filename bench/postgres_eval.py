"""Retrieval quality on the PostgreSQL 15 manual with 50 hand-labelled questions.

The questions (bench/data/postgres_questions.jsonl) are written the way users ask, each
labelled with the manual page(s) that answer it. Prints vector, keyword and hybrid side
by side.

    python bench/postgres_eval.py [--index DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import CORPORA, corpus
from bench.evalrun import ingest_and_eval

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=CORPORA / "indexes" / "postgresql")
    args = parser.parse_args()
    ingest_and_eval(
        corpus("postgresql"),
        HERE / "data" / "postgres_questions.jsonl",
        args.index,
        HERE / "results" / "postgresql",
    )


if __name__ == "__main__":
    main()
