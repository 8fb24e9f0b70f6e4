"""Retrieval quality on the PostgreSQL 15 manual with 100 hand-labelled questions.

The questions are written the way users ask, each labelled with the manual page(s) that
answer it. ``postgres_questions.jsonl`` (50) is the development set, on which the fusion
defaults were chosen; ``postgres_questions_heldout.jsonl`` (50) was written afterwards and
only measured. Prints vector, keyword and hybrid side by side for each set and for all 100.

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
SETS = {
    "development": HERE / "data" / "postgres_questions.jsonl",
    "held-out": HERE / "data" / "postgres_questions_heldout.jsonl",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=CORPORA / "indexes" / "postgresql")
    args = parser.parse_args()
    results = HERE / "results" / "postgresql"
    combined = results / "all-questions.jsonl"
    combined.parent.mkdir(parents=True, exist_ok=True)
    combined.write_text("".join(p.read_text(encoding="utf-8") for p in SETS.values()))
    for name, dataset in [*SETS.items(), ("all", combined)]:
        print(f"\n== {name} ({dataset.name}) ==")
        ingest_and_eval(corpus("postgresql"), dataset, args.index, results / name)


if __name__ == "__main__":
    main()
