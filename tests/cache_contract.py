"""The contract every response-cache backend passes, through ``ResponseCache``.

A test module subclasses ``AnswerCacheContract`` and provides ``open_backend``: a callable
that opens another backend over the same database each time it is called (a second
process, as far as the cache can tell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rag.cache.answers import EXACT, SEMANTIC, ResponseCache, cacheable
from rag.cache.base import AnswerCache, CacheScope, question_key
from rag.chain import Answer
from rag.citations import Citation, Source
from tests.fakes import SteeredEmbeddings

QUESTION = "When do backups run?"
SCOPE = CacheScope(frozenset({"ops"}), "g000003@2026-01-01T00:00:00+00:00", "answer@v3", "m", "")


def answer(text: str = "Backups run nightly at two [1].") -> Answer:
    source = Source(
        1, "/docs/ops.md", 3, "c7", "Backups run nightly at two.", heading="Backups",
        relevance=0.81, title="Operations", flags=("override",),
    )  # fmt: skip
    return Answer(
        question=QUESTION,
        standalone=QUESTION,
        text=text,
        citations=[Citation(1, source, 0.75, inferred=False)],
        sources=[source],
        prompt_version="answer@v3",
        model="smollm2",
        timings={"retrieval_ms": 12.0, "first_token_ms": 900.0, "total_ms": 2000.0},
        tokens={"prompt": 700, "completion": 20, "estimated": False},
        abstained=False,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


OpenBackend = Callable[[], AnswerCache]


class AnswerCacheContract:
    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def embeddings(self) -> SteeredEmbeddings:
        return SteeredEmbeddings(size=32)

    @pytest.fixture
    def cache(
        self, open_backend: OpenBackend, embeddings: SteeredEmbeddings, clock: Clock
    ) -> ResponseCache:
        return self.over(open_backend(), embeddings, clock)

    @staticmethod
    def over(backend: AnswerCache, embeddings: Any, clock: Clock, **kw: Any) -> ResponseCache:
        return ResponseCache(backend, embeddings, ttl_s=3600, clock=clock, **kw)

    def kept(self, cache: ResponseCache, question: str = QUESTION, scope: CacheScope = SCOPE):
        lookup = cache.lookup(question, scope)
        assert lookup.hit is None
        assert cache.keep(lookup, answer())
        return lookup

    def test_an_exact_repeat_is_served_whole_without_an_embedding(
        self, cache: ResponseCache, embeddings: SteeredEmbeddings
    ) -> None:
        self.kept(cache)
        before = embeddings.queries
        hit = cache.lookup("  when DO backups   run ", SCOPE).hit
        assert hit is not None and hit.kind == EXACT and embeddings.queries == before
        got, want = hit.answer, answer()
        assert got.text == want.text and got.citations == want.citations
        assert got.sources == want.sources and got.model == "smollm2"
        assert got.prompt_version == "answer@v3" and got.served_from == "cache"
        assert got.question == "when DO backups   run"  # the asker's own question
        assert got.tokens == {"prompt": 0, "completion": 0, "estimated": False}
        assert got.to_json()["cached"] is True and got.to_json()["reviewed"] is False

    def test_a_paraphrase_above_the_threshold_is_a_semantic_hit(
        self, cache: ResponseCache, embeddings: SteeredEmbeddings
    ) -> None:
        self.kept(cache)
        embeddings.steer("How often are backups run?", QUESTION, 0.98)
        embeddings.steer("Where are backups stored?", QUESTION, 0.90)
        hit = cache.lookup("How often are backups run?", SCOPE).hit
        assert hit is not None and hit.kind == SEMANTIC
        assert hit.similarity == pytest.approx(0.98, abs=1e-4)
        assert hit.answer.text == answer().text
        assert cache.lookup("Where are backups stored?", SCOPE).hit is None

    @pytest.mark.parametrize(
        ("kept", "other", "same"),
        [
            ("What was the revenue in 2022?", "What was the revenue in 2023?",
             "What was the 2022 revenue?"),
            ("Should I enable compression?", "Should I not enable compression?",
             "Do I enable compression?"),
            ("Why don\u2019t backups run?", "Why do backups run?", "Why do backups not run?"),
            ("What is the minimum password length?", "What is the maximum password length?",
             "How short can a password be at minimum?"),
            ("What is max_connections?", "What is the max of connections?",
             "What does max_connections mean?"),
        ],
    )  # fmt: skip
    def test_other_numbers_negations_or_extremes_are_no_semantic_hit(
        self,
        cache: ResponseCache,
        embeddings: SteeredEmbeddings,
        kept: str,
        other: str,
        same: str,
    ) -> None:
        self.kept(cache, kept)
        embeddings.steer(other, kept, 0.99)
        embeddings.steer(same, kept, 0.99)
        assert cache.lookup(other, SCOPE).hit is None
        hit = cache.lookup(same, SCOPE).hit
        assert hit is not None and hit.kind == SEMANTIC

    def test_similarity_one_serves_exact_repeats_only(
        self, open_backend: OpenBackend, embeddings: SteeredEmbeddings, clock: Clock
    ) -> None:
        cache = self.over(open_backend(), embeddings, clock, similarity=1.0)
        self.kept(cache)
        embeddings.steer("How often are backups run?", QUESTION, 0.999)
        assert cache.lookup("How often are backups run?", SCOPE).hit is None
        assert cache.lookup("when do backups run", SCOPE).hit is not None

    @pytest.mark.parametrize(
        "other",
        [
            replace(SCOPE, collections=frozenset({"ops", "hr"})),
            replace(SCOPE, collections=None),
            replace(SCOPE, index="g000004@2026-01-01T00:00:09+00:00"),
            replace(SCOPE, index="g000003@2026-02-01T00:00:00+00:00"),  # rebuilt from nothing
            replace(SCOPE, prompt_version="answer@v4"),
            replace(SCOPE, model="other"),
            replace(SCOPE, settings="k=8"),
        ],
    )
    def test_another_scope_never_matches(
        self, cache: ResponseCache, embeddings: SteeredEmbeddings, other: CacheScope
    ) -> None:
        self.kept(cache)
        embeddings.steer("How often are backups run?", QUESTION, 0.99)
        assert cache.lookup(QUESTION, other).hit is None
        assert cache.lookup("How often are backups run?", other).hit is None
        assert cache.lookup(QUESTION, SCOPE).hit is not None

    def test_an_answer_expires_after_its_ttl(self, cache: ResponseCache, clock: Clock) -> None:
        self.kept(cache)
        clock.now += 3599
        assert cache.lookup(QUESTION, SCOPE).hit is not None
        clock.now += 2
        assert cache.lookup(QUESTION, SCOPE).hit is None
        self.kept(cache)  # stored again, it is served again
        assert cache.lookup(QUESTION, SCOPE).hit is not None

    def test_keeping_again_replaces_the_answer(self, cache: ResponseCache) -> None:
        lookup = self.kept(cache)
        assert cache.keep(lookup, answer("Backups run hourly [1]."))
        hit = cache.lookup(QUESTION, SCOPE).hit
        assert hit is not None and hit.answer.text == "Backups run hourly [1]."

    def test_only_complete_answers_of_the_model_are_kept(self, cache: ResponseCache) -> None:
        lookup = cache.lookup(QUESTION, SCOPE)
        for unfit in (
            replace(answer(), abstained=True),
            replace(answer(), cut="the endpoint failed"),
            replace(answer(), served_from="cache"),
            replace(answer(), served_from="review"),
            replace(answer(), text="  "),
        ):
            assert not cacheable(unfit)
            assert not cache.keep(lookup, unfit)
        assert cache.lookup(QUESTION, SCOPE).hit is None

    def test_another_instance_over_the_same_database_sees_the_answers(
        self, open_backend: OpenBackend, cache: ResponseCache, clock: Clock
    ) -> None:
        self.kept(cache)
        other = self.over(open_backend(), SteeredEmbeddings(size=32), clock)
        hit = other.lookup("When do backups run", SCOPE).hit
        assert hit is not None and hit.kind == EXACT
        assert other.clear() == 1
        assert cache.lookup(QUESTION, SCOPE).hit is None

    def test_a_semantic_look_up_reads_only_the_newest_entries(
        self, open_backend: OpenBackend, embeddings: SteeredEmbeddings, clock: Clock
    ) -> None:
        cache = self.over(open_backend(), embeddings, clock, scan=3)
        self.kept(cache)  # the oldest
        for i in range(3):
            clock.now += 1
            self.kept(cache, f"Unrelated question {'abc'[i]}?")
        embeddings.steer("How often are backups run?", QUESTION, 0.99)
        assert cache.lookup("How often are backups run?", SCOPE).hit is None  # not scanned
        assert cache.lookup(QUESTION, SCOPE).hit is not None  # exact still finds it

    def test_an_unreadable_entry_is_a_miss(
        self, open_backend: OpenBackend, cache: ResponseCache, clock: Clock
    ) -> None:
        lookup = self.kept(cache)
        backend = open_backend()
        stored = cache.backend.recent(SCOPE.id, 1, clock())[0]
        from rag.cache.base import Entry

        broken = Entry(stored.vector, stored.marks, '{"format": 99}', clock() + 60)
        backend.put(SCOPE.id, question_key(lookup.question), broken, clock())
        assert cache.lookup(QUESTION, SCOPE).hit is None
