from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.errors import RagError
from rag.eval_cli import parse_modes
from rag.evaluation import (
    AnsweredItem,
    DatasetError,
    EvalItem,
    Retrieved,
    aggregate,
    answer_metrics,
    citation_valid,
    load_dataset,
    percentile,
    score_item,
    source_matches,
)

A2 = Retrieved("/docs/a.pdf", 2, "alpha text on page two")
A3 = Retrieved("/docs/a.pdf", 3, "alpha text on page three")
B = Retrieved("/docs/b.md", None, "beta text")
C = Retrieved("/other/c.txt", None, "gamma")


def test_first_hit_at_rank_three():
    item = EvalItem("q", ("b.md",))
    s = score_item(item, [C, A2, B, A3], [1, 5, 10])
    assert s.first_rank == 3
    assert s.recall == {1: 0.0, 5: 1.0, 10: 1.0}
    assert s.ndcg == pytest.approx((1 / math.log2(4)) / 1.0)
    assert s.page_correct is None


def test_pages_make_source_page_targets_and_recall_counts_them():
    item = EvalItem("q", ("a.pdf",), pages=(2, 3))
    s = score_item(item, [A3, C, A2], [1, 5, 10])
    assert s.first_rank == 1
    assert s.recall[1] == 0.5 and s.recall[5] == 1.0
    ideal = 1 + 1 / math.log2(3)
    assert s.ndcg == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert s.page_correct is True


def test_duplicate_chunks_of_one_target_do_not_inflate_ndcg():
    item = EvalItem("q", ("a.pdf",), pages=(2,))
    twice = Retrieved("/docs/a.pdf", 2, "other chunk, same page")
    assert score_item(item, [A2, twice], [1]).ndcg == pytest.approx(1.0)


def test_passage_must_be_in_the_chunk():
    item = EvalItem("q", ("a.pdf",), passage="page  THREE")
    s = score_item(item, [A2, A3], [1, 5])
    assert s.first_rank == 2


def test_wrong_page_on_top_is_a_page_miss():
    item = EvalItem("q", ("a.pdf",), pages=(3,))
    assert score_item(item, [A2, A3], [1]).page_correct is False


def test_aggregate_means_and_mrr():
    items = [EvalItem("q", ("b.md",)), EvalItem("q", ("a.pdf",), pages=(2,)), EvalItem("q", ("z",))]
    scores = [score_item(i, [C, A2, B], [1, 5, 10]) for i in items]
    m = aggregate(scores, [1, 5, 10])
    assert m["hit@1"] == 0.0
    assert m["hit@5"] == pytest.approx(2 / 3)
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert m["page_accuracy@1"] == 0.0
    assert set(m) >= {"recall@1", "recall@5", "recall@10", "ndcg@10"}


def test_source_patterns_are_names_or_path_suffixes():
    assert source_matches(A2, "a.pdf") and source_matches(A2, "docs/a.pdf")
    assert not source_matches(A2, "ocs/a.pdf") and not source_matches(A2, "b.pdf")
    assert source_matches(Retrieved("/u/3f.pdf", 1, "x", title="Guide.pdf"), "Guide.pdf")


def test_percentile_interpolates():
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([5], 95) == 5
    assert percentile([], 50) == 0


def test_answer_metrics():
    items = [EvalItem("q1", ("a.pdf",), pages=(2,), passage=None), EvalItem("q2", ("b.md",))]
    answers = [
        AnsweredItem([A2, C], False, 100.0, 10.0),  # one valid, one not
        AnsweredItem([], True, 50.0, 5.0),
    ]
    m = answer_metrics(items, answers)
    assert m["citation_validity"] == 0.5
    assert m["answers_all_citations_valid"] == 0.0
    assert m["abstention_rate"] == 0.5
    assert m["latency_p50_ms"] == 75.0


def test_citation_with_the_reference_passage_is_valid_elsewhere_too():
    item = EvalItem("q", ("a.pdf",), pages=(9,), passage="beta")
    assert citation_valid(item, B)
    assert not citation_valid(item, C)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q"}', "sources"),
        ('{"question": "", "sources": ["a"]}', "question"),
        ('{"question": "q", "sources": ["a"], "pages": [0]}', "pages"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_dataset_lines_are_named(tmp_path: Path, line: str, message: str):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "ok", "sources": ["a.pdf"]}\n' + line + "\n")
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(path)
    assert err.value.line == 2 and "d.jsonl" in str(err.value)


def test_modes_parse_lists_and_all():
    assert parse_modes(["vector,keyword", "vector"], "hybrid") == ["vector", "keyword"]
    assert parse_modes(None, "hybrid") == ["hybrid"]
    assert parse_modes(["all"], "hybrid") == ["vector", "keyword", "hybrid"]
    with pytest.raises(RagError, match="choose from"):
        parse_modes(["fuzzy"], "hybrid")
