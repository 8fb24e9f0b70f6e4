from __future__ import annotations

import math
from pathlib import Path

import pytest

from rag.cli.evaluate import parse_modes
from rag.errors import RagError
from rag.evaluation import (
    AnsweredItem,
    DatasetError,
    EvalItem,
    Retrieved,
    aggregate,
    answer_metrics,
    citation_valid,
    compare_modes,
    evaluate_retrieval,
    format_table,
    load_dataset,
    paired_difference,
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


def _scores(values: list[float]):
    """Item scores whose recall@5 are ``values`` (one target each), lines 1..n."""
    hit, miss = [B], [C]
    return [
        score_item(EvalItem("q", ("b.md",), line=n), hit if v else miss, [1, 5, 10])
        for n, v in enumerate(values, 1)
    ]


def test_item_score_values_by_metric_name():
    s = score_item(EvalItem("q", ("b.md",)), [C, B], [1, 5, 10])
    assert s.value("recall@5") == 1.0 and s.value("recall@1") == 0.0
    assert s.value("hit@1") == 0.0 and s.value("hit@5") == 1.0
    assert s.value("mrr") == 0.5
    assert s.value("ndcg@10") == pytest.approx(1 / math.log2(3))
    with pytest.raises(ValueError, match="unknown metric"):
        s.value("precision@3")


def test_paired_difference_mean_and_interval():
    a, b = _scores([1, 1, 1, 0]), _scores([0, 1, 1, 0])
    d = paired_difference(a, b, "recall@5")
    assert d.delta == pytest.approx(0.25) and d.questions == 4
    # one question in four differs: resampled means lie in {0, .25, .5, .75, 1}
    assert 0.0 <= d.low <= 0.25 <= d.high <= 1.0
    same = paired_difference(a, a, "recall@5")
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)
    # only questions scored in both count
    assert paired_difference(a, b[:2], "recall@5").questions == 2
    assert paired_difference(a, [], "recall@5").questions == 0


def test_paired_difference_interval_excludes_zero_for_a_consistent_gain():
    a, b = _scores([1] * 40), _scores([0] * 10 + [1] * 30)
    d = paired_difference(a, b, "recall@5")
    assert d.delta == pytest.approx(0.25) and d.low > 0


def test_the_last_mode_is_compared_with_the_others():
    items = [EvalItem("q", ("b.md",), line=n) for n in (1, 2)]
    found = {"vector": [C], "hybrid": [B]}
    reports = [
        evaluate_retrieval(items, lambda q, m=m: found[m], mode=m) for m in ("vector", "hybrid")
    ]
    compare_modes(reports)
    assert reports[0].differences == {}
    assert reports[1].differences["vector"]["recall@5"].delta == 1.0
    assert reports[1].to_json()["differences"]["vector"]["mrr"]["delta"] == 1.0
    assert "hybrid - vector: recall@5 +1.000 [+1.000, +1.000]" in format_table(reports)
