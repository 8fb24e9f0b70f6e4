"""Where to put RAG_CACHE_SIMILARITY: paraphrases vs different questions, bundled model.

Embeds pairs of questions with the bundled all-MiniLM-L6-v2 (as the cache does) and
prints each pair's cosine similarity, then, for a few thresholds, the share of paraphrases
served from the cache (semantic hits) and of different questions wrongly served (false
hits), with and without the cache's rule that a semantic hit must share the question's
marks (``rag.cache.base.question_marks``: numbers, negations, the ends of scales).

    python bench/cache_similarity.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.cache.base import normalise_question, question_marks
from rag.embeddings import load_embeddings
from rag.settings import Settings

# The same question asked in other words: a hit is wanted.
SAME = [
    ("What is the default value of max_connections?", "What's max_connections set to by default?"),
    ("What is the default value of max_connections?", "What is max_connections' default value?"),
    ("How do I reset my password?", "How can I reset my password?"),
    ("How do I reset my password?", "how to reset my password"),
    ("How often do backups run?", "How frequently are backups run?"),
    ("How often do backups run?", "How often are backups run?"),
    ("Who can delete a collection?", "Who is allowed to delete a collection?"),
    ("What file formats can I upload?", "Which file formats can be uploaded?"),
    ("How do I add documents to a collection?", "How can I add documents to a collection?"),
    ("What does the relevance threshold do?", "What is the relevance threshold for?"),
    ("How do I enable TLS?", "How can TLS be enabled?"),
    ("Which port does the API listen on?", "On which port does the API listen?"),
    ("What is the refund policy?", "What's the refund policy?"),
    ("How do I share a collection with a user?", "How can I share a collection with a user?"),
    ("Is Python 3.11 supported?", "Does it support Python 3.11?"),
    ("What was the revenue in 2022?", "What was the 2022 revenue?"),
    ("How do I start the server?", "How can I start the server?"),
    ("How many vacation days do employees get?", "How many days of vacation do employees get?"),
    ("What does error code 404 mean?", "What is the meaning of error code 404?"),
    ("Who is the CEO of Acme?", "Who's Acme's CEO?"),
]  # fmt: skip

# Close in words, different in meaning: a hit would serve a wrong answer.
DIFFERENT = [
    ("What is the default value of max_connections?",
     "What is the maximum value of max_connections?"),
    ("What is the default value of max_connections?",
     "What is the default value of shared_buffers?"),
    ("How do I reset my password?", "How do I change my password?"),
    ("How do I reset my password?", "How do I reset my username?"),
    ("How often do backups run?", "Where are backups stored?"),
    ("Who can delete a collection?", "Who can create a collection?"),
    ("What file formats can I upload?", "What is the maximum file size I can upload?"),
    ("How do I add documents to a collection?", "How do I remove documents from a collection?"),
    ("What is the refund period for product A?", "What is the refund period for product B?"),
    ("Is TLS 1.2 supported?", "Is TLS 1.3 supported?"),
    ("Which port does the API listen on?", "Which port does the database listen on?"),
    ("How do I enable TLS?", "How do I disable TLS?"),
    ("What happens when the index is corrupt?", "What happens when the index is locked?"),
    ("Can viewers upload documents?", "Can editors upload documents?"),
    ("What is the default chunk size?", "What is the default chunk overlap?"),
    ("What changed in version 2.1?", "What changed in version 2.2?"),
    ("How do I install ragchat on Windows?", "How do I install ragchat on Linux?"),
    ("Is Python 3.11 supported?", "Is Python 3.12 supported?"),
    ("What does error code 404 mean?", "What does error code 403 mean?"),
    ("What was the revenue in 2022?", "What was the revenue in 2023?"),
    ("What was the revenue in Q1?", "What was the revenue in Q2?"),
    ("Who is the CEO of Acme?", "Who is the CFO of Acme?"),
    ("How do I start the server?", "How do I stop the server?"),
    ("What is the minimum password length?", "What is the maximum password length?"),
    ("Can I upload PDF files?", "Can I upload DOCX files?"),
    ("What is section 4.2 about?", "What is section 4.3 about?"),
    ("How many vacation days do employees get?", "How many sick days do employees get?"),
    ("When does the trial period end?", "When does the notice period end?"),
    ("Is the feature supported?", "Is the feature not supported?"),
    ("Should I enable compression?", "Should I not enable compression?"),
]  # fmt: skip

THRESHOLDS = [0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]


def main() -> None:
    embeddings = load_embeddings(Settings(), for_queries=True)

    def cosine(a: str, b: str) -> float:
        va = np.asarray(embeddings.embed_query(a))
        vb = np.asarray(embeddings.embed_query(b))
        return float(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))

    def scored(pairs: list[tuple[str, str]]) -> list[tuple[float, bool, str, str]]:
        out = []
        for a, b in pairs:
            if normalise_question(a) == normalise_question(b):
                continue  # an exact hit, not a semantic one
            same_marks = question_marks(a) == question_marks(b)
            out.append((cosine(a, b), same_marks, a, b))
        return sorted(out)

    same, different = scored(SAME), scored(DIFFERENT)
    for label, rows in (("paraphrases", same), ("different questions", different)):
        print(f"{label}:")
        for score, marks, a, b in rows:
            mark = "" if marks else "  (other marks)"
            print(f"  {score:.3f}  {a} | {b}{mark}")
    print("threshold  semantic hits on paraphrases  false hits  (marks rule off)")
    for t in THRESHOLDS:
        hits = sum(s >= t and n for s, n, _, _ in same)
        wrong = sum(s >= t and n for s, n, _, _ in different)
        wrong_any = sum(s >= t for s, _, _, _ in different)
        print(
            f"  {t:.2f}     {hits:2d}/{len(same)}                          "
            f"{wrong}/{len(different)}        ({wrong_any}/{len(different)})"
        )


if __name__ == "__main__":
    main()
