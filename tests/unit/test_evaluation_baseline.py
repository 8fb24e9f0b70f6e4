"""``ragchat eval --baseline FILE --fail-under``: a run compared with an earlier one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.cli import build_parser, main
from rag.cli.evaluate import WORSE_THAN_BASELINE, cmd_eval
from rag.errors import BaselineError, RagError
from rag.evaluation import (
    AnsweredItem,
    DatasetError,
    EvalItem,
    ModeReport,
    Retrieved,
    evaluate_retrieval,
    load_dataset,
    write_report,
)
from rag.evaluation_baseline import (
    Measure,
    change,
    check_baseline,
    compare,
    compare_reports,
    format_comparison,
    gate_failures,
    load_baseline,
)
from rag.service.components import build_service
from rag.settings import Settings
from rag.store.faiss import FaissStore, NewChunk
from tests.api_fakes import Controls, FakeModels
from tests.fakes import CountingEmbeddings

HIT = Retrieved("/docs/manual.pdf", 1, "the answer")
MISS = Retrieved("/docs/other.md", None, "something else")


def items(n: int, *, first: int = 0) -> list[EvalItem]:
    return [EvalItem(f"question {i}", ("manual.pdf",), line=i + 1) for i in range(first, first + n)]


def run(questions: list[EvalItem], missed: set[int], mode: str = "hybrid") -> ModeReport:
    """A report where the questions numbered in ``missed`` find nothing relevant."""

    def search(question: str) -> list[Retrieved]:
        return [MISS] if int(question.split()[1]) in missed else [HIT]

    return evaluate_retrieval(questions, search, mode=mode)


def against(current: ModeReport, baseline: ModeReport, path: str = "base.json"):
    return compare(current.to_json(), baseline.to_json(), path)


def verdicts(comparison) -> dict[str, str]:
    return {m.metric: m.verdict for m in comparison.metrics}


# -- the comparison ---------------------------------------------------------------------


def test_a_clear_drop_is_worse_and_fails_the_gate():
    qs = items(30)
    base, now = run(qs, set()), run(qs, set(range(12)))  # 12 of 30 lost
    result = against(now, base)
    recall = next(m for m in result.metrics if m.metric == "recall@5")
    assert (recall.baseline, recall.current) == (1.0, pytest.approx(18 / 30))
    assert recall.delta == pytest.approx(-0.4) and recall.high < 0 and recall.verdict == "worse"
    assert recall.questions == 30
    assert {"recall@1", "recall@5", "hit@10", "mrr", "ndcg@10"} <= set(result.worse)
    now.baseline = result
    assert gate_failures([now]) == [f"hybrid: {', '.join(result.worse)}"]
    # seeded: the same two runs give the same interval every time
    again = against(now, base)
    assert [(m.low, m.high) for m in again.metrics] == [(m.low, m.high) for m in result.metrics]


def test_noise_within_the_interval_is_the_same_and_passes():
    qs = items(30)
    base = run(qs, {3, 17})
    one_lost = run(qs, {3, 17, 25})  # one more miss out of 30: the interval reaches 0
    result = against(one_lost, base)
    assert verdicts(result)["recall@5"] == "same"
    recall = next(m for m in result.metrics if m.metric == "recall@5")
    assert recall.delta == pytest.approx(-1 / 30) and recall.low < 0 and recall.high == 0
    swapped = against(run(qs, {3, 25}), base)  # one lost, one gained
    assert set(verdicts(swapped).values()) == {"same"}
    one_lost.baseline = result
    assert result.worse == [] and gate_failures([one_lost]) == []


def test_an_improvement_is_better_and_passes():
    qs = items(30)
    base, now = run(qs, set(range(10))), run(qs, set())
    result = against(now, base)
    assert verdicts(result)["recall@5"] == "better" and result.worse == []
    assert next(m for m in result.metrics if m.metric == "mrr").low > 0


def test_an_unchanged_run_differs_by_exactly_zero_through_a_saved_file(tmp_path: Path):
    qs = items(20)
    first = run(qs, {1, 4, 9})
    path = tmp_path / "base.json"
    path.write_text(json.dumps(first.to_json()))
    baseline = load_baseline(path)
    second = run(qs, {1, 4, 9})
    compare_reports([second], baseline)
    assert second.baseline is not None and second.baseline.questions == 20
    for m in second.baseline.metrics:
        assert (m.delta, m.low, m.high, m.verdict) == (0.0, 0.0, 0.0, "same"), m.metric


def test_questions_only_in_one_run_are_listed_and_left_out():
    base = run(items(10), set())  # questions 0..9
    now = run(items(10, first=2), set())  # questions 2..11
    result = against(now, base)
    assert result.questions == 8
    assert [q["question"] for q in result.only_in_baseline] == ["question 0", "question 1"]
    assert [q["question"] for q in result.only_in_current] == ["question 10", "question 11"]
    assert all(m.questions == 8 for m in result.metrics)
    text = format_comparison(result)
    assert "8 questions in both runs" in text
    assert "only in the baseline (left out): 2" in text and "line 1: question 0" in text
    assert "only in this run (left out): 2" in text


def test_ids_pair_reworded_questions_and_repeated_questions_pair_in_order():
    base_items = [EvalItem("How to reset?", ("manual.pdf",), line=1, id="q1"),
                  EvalItem("same", ("manual.pdf",), line=2),
                  EvalItem("same", ("manual.pdf",), line=3)]  # fmt: skip
    now_items = [EvalItem("How do I reset it?", ("manual.pdf",), line=1, id="q1"),
                 EvalItem("same", ("manual.pdf",), line=2),
                 EvalItem("same", ("manual.pdf",), line=3)]  # fmt: skip
    base = evaluate_retrieval(base_items, lambda q: [HIT], mode="hybrid")
    now = evaluate_retrieval(now_items, lambda q: [HIT], mode="hybrid")
    result = against(now, base)
    assert result.questions == 3 and not result.only_in_baseline and not result.only_in_current
    assert now.to_json()["questions"][0]["id"] == "q1"


def test_changed_settings_and_a_different_mode_are_named():
    qs = items(5)
    base, now = run(qs, set(), mode="keyword"), run(qs, set(), mode="vector")
    base.config, now.config = {"k": 10, "fusion": "zscore"}, {"k": 5}
    result = against(now, base)
    assert result.settings_changed == {
        "mode": ["keyword", "vector"],
        "k": [10, 5],
        "fusion": ["zscore", None],
    }
    assert ("settings changed: mode keyword -> vector; k 10 -> 5; fusion zscore -> (unset)"
            in format_comparison(result))  # fmt: skip


def answered(report: ModeReport, qs: list[EvalItem], *, abstain: bool, ms: float) -> None:
    report.add_answers(
        [(i, AnsweredItem([] if abstain else [HIT], abstain, ms + i.line, 5.0)) for i in qs]
    )


def test_answer_metrics_are_compared_and_latency_never_gates():
    qs = items(30)
    base, now = run(qs, set()), run(qs, set())
    answered(base, qs, abstain=False, ms=100.0)
    answered(now, qs, abstain=True, ms=900.0)  # abstains everywhere, and slower
    result = against(now, base)
    v = verdicts(result)
    assert v["abstention_rate"] == "worse" and v["answers_with_citations"] == "worse"
    assert v["latency_p95_ms"] == "worse" and v["recall@5"] == "same"
    # every answer now lacks citations: validity cannot be compared, and says so
    assert "citation_validity" in result.not_compared
    assert set(result.worse) == {"abstention_rate", "answers_with_citations"}
    assert "latency_p50_ms" not in result.worse
    latency = next(m for m in result.metrics if m.metric == "latency_p50_ms")
    assert latency.delta == pytest.approx(800.0) and not latency.gates
    assert "(not gated)" in format_comparison(result)


def test_answers_in_one_run_only_leave_answer_metrics_uncompared():
    qs = items(6)
    base, now = run(qs, set()), run(qs, set())
    answered(now, qs, abstain=False, ms=10.0)
    result = against(now, base)
    assert "abstention_rate" in result.not_compared
    assert all(not m.metric.startswith(("abstention", "latency")) for m in result.metrics)


def test_citation_validity_pools_citations_as_the_table_does():
    # one answer with 3 citations, 1 valid; another with 1 valid: pooled 2/4, not mean 2/3
    m = Measure("citation_validity", lambda r: (r["v"], r["w"]))
    pairs = [((1 / 3, 3.0), (1.0, 3.0)), ((1.0, 1.0), (1.0, 1.0))]
    result = change(m, pairs)
    assert result.baseline == pytest.approx(0.5) and result.current == 1.0


def test_percentile_metrics_match_numpy():
    m = Measure("latency_p95_ms", lambda r: None, lower_is_better=True, quantile=95)
    pairs = [((float(v), 1.0), (float(v) + 10, 1.0)) for v in range(20)]
    result = change(m, pairs)
    assert result.baseline == pytest.approx(np.percentile(range(20), 95))
    assert result.delta == pytest.approx(10.0) and result.verdict == "worse"


# -- baseline files ---------------------------------------------------------------------


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_multi_mode_baseline_pairs_modes_by_name(tmp_path: Path):
    qs = items(10)
    saved = {m: run(qs, set(), mode=m).to_json() for m in ("vector", "hybrid")}
    baseline = load_baseline(write(tmp_path / "b.json", saved))
    reports = [run(qs, set(range(5)), mode="vector"), run(qs, set(), mode="hybrid")]
    compare_reports(reports, baseline)
    assert reports[0].baseline and reports[0].baseline.baseline_mode == "vector"
    assert reports[0].baseline.worse and not reports[1].baseline.worse  # type: ignore[union-attr]
    assert gate_failures(reports)[0].startswith("vector: ")


@pytest.mark.parametrize(
    ("content", "fault"),
    [
        (None, "cannot read"),
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"recall@5": 0.5}, 'no "mode"'),
        # what ragchat eval --json printed before per-question scores existed
        ({"mode": "hybrid", "items": 3, "recall@5": 0.9, "failed": []}, "no per-question"),
        ({"mode": "hybrid", "questions": [{"line": 1}]}, "list of scored questions"),
    ],
)
def test_bad_baseline_files_are_named_with_their_fault(tmp_path: Path, content, fault):
    path = tmp_path / "prev.json"
    if content is not None:
        write(path, content)
    with pytest.raises(BaselineError, match=fault) as err:
        load_baseline(path)
    assert str(path) in str(err.value) and err.value.category == "input"
    assert isinstance(err.value, RagError)


def test_a_baseline_from_another_dataset_or_mode_is_refused_before_any_work(tmp_path: Path):
    path = write(tmp_path / "prev.json", run(items(5), set(), mode="vector").to_json())
    baseline = load_baseline(path)
    check_baseline(baseline, items(5), ["hybrid"], Path("d.jsonl"))  # one mode each: paired
    with pytest.raises(BaselineError, match=r"no question in common with d\.jsonl"):
        check_baseline(baseline, items(5, first=50), ["hybrid"], Path("d.jsonl"))
    with pytest.raises(BaselineError, match="no mode in common"):
        check_baseline(baseline, items(5), ["keyword", "hybrid"], Path("d.jsonl"))


def test_the_report_shows_the_comparison(tmp_path: Path):
    qs = items(10)
    now = run(qs, set(range(6)))
    now.baseline = against(now, run(qs, set()))
    text = write_report([now], Path("d.jsonl"), tmp_path).read_text()
    assert "## hybrid against the baseline" in text
    assert "| recall@5 | 1.000 | 0.400 | -0.600 |" in text and "| worse |" in text


def test_the_report_shows_changed_settings_as_the_table_does(tmp_path: Path):
    qs = items(3)
    base, now = run(qs, set()), run(qs, set())
    # A baseline file can hold any text, a control character too: shown escaped.
    base.config, now.config = {"model": "a\x1b[2Jb", "k": 10}, {"model": "m"}
    now.baseline = against(now, base)
    text = write_report([now], Path("d.jsonl"), tmp_path).read_text()
    assert "Settings changed: model a\\x1b[2Jb → m; k 10 → (unset)" in text


def test_dataset_ids_are_strings_or_numbers(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "a", "sources": ["x"], "id": "r-1"}\n'
                    '{"question": "b", "sources": ["x"], "id": 7}\n'
                    '{"question": "c", "sources": ["x"]}\n')  # fmt: skip
    assert [i.id for i in load_dataset(path)] == ["r-1", "7", None]
    path.write_text('{"question": "a", "sources": ["x"], "id": ""}\n')
    with pytest.raises(DatasetError, match='"id"'):
        load_dataset(path)


# -- the command ------------------------------------------------------------------------

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


@pytest.fixture
def indexed(tmp_path: Path):
    """A real index (fake embeddings) of 26 one-chunk documents, and 26 questions on it.

    Keyword search finds each document by its word; vector search over hash embeddings
    ranks at random: a clearly worse retriever.
    """
    settings = Settings(data_dir=tmp_path / "data")
    embeddings = CountingEmbeddings(size=32)
    store = FaissStore(settings.resolved_index_dir, embeddings, model_id="fake", dimension=32)
    with store.writer() as w:
        for n, word in enumerate(WORDS):
            text = f"The {word} pump is serviced by turning its {word} valve."
            w.add_document(
                f"{n:064x}", kind="text", pages=None, source=f"/docs/{word}.txt",
                chunks=[NewChunk(text)],
                vectors=np.asarray(embeddings.embed_documents([text]), dtype="float32"),
            )  # fmt: skip
    dataset = tmp_path / "questions.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"question": f"How is the {w} pump serviced?", "sources": [f"{w}.txt"]})
            + "\n"
            for w in WORDS
        )
    )
    service = build_service(settings, store=store, models=FakeModels(Controls()))
    yield settings, service, dataset
    service.close()


def eval_command(argv: list[str], settings: Settings, service) -> int:
    return cmd_eval(build_parser().parse_args(["eval", *argv]), settings, over=service)


def test_the_gate_fails_a_worse_retriever_and_passes_the_same_one(indexed, tmp_path, capsys):
    settings, service, dataset = indexed
    base = tmp_path / "baseline.json"
    assert eval_command([str(dataset), "--mode", "keyword", "--save", str(base)],
                        settings, service) == 0  # fmt: skip
    saved = json.loads(base.read_text())
    assert saved["recall@5"] == 1.0 and len(saved["questions"]) == 26
    assert saved["questions"][0]["question"] == "How is the alpha pump serviced?"
    capsys.readouterr()

    code = eval_command([str(dataset), "--mode", "vector", "--baseline", str(base),
                         "--fail-under"], settings, service)  # fmt: skip
    out, err = capsys.readouterr()
    assert code == WORSE_THAN_BASELINE == 3
    assert f"worse than the baseline {base}: vector: " in err
    assert "recall@5" in err.splitlines()[-1] and "mrr" in err.splitlines()[-1]
    assert "vector against baseline" in out and "keyword" in out
    assert "settings changed: mode keyword -> vector" in out
    compared = out.split("vector against baseline", 1)[1]
    row = next(line for line in compared.splitlines() if line.startswith("recall@5 "))
    assert row.split()[1] == "1.000" and row.endswith("worse")

    code = eval_command([str(dataset), "--mode", "keyword", "--baseline", str(base),
                         "--fail-under", "--json"], settings, service)  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    compared = data["baseline"]
    assert compared["questions"] == 26 and compared["worse"] == []
    assert {m["verdict"] for m in compared["metrics"].values()} == {"same"}
    assert compared["metrics"]["recall@5"] == {
        "baseline": 1.0, "current": 1.0, "delta": 0.0, "ci95": [0.0, 0.0], "questions": 26,
        "verdict": "same", "gates": True,
    }  # fmt: skip

    # without --fail-under a worse run is shown, not failed
    assert eval_command([str(dataset), "--mode", "vector", "--baseline", str(base)],
                        settings, service) == 0  # fmt: skip
    capsys.readouterr()
    # several modes: each is compared with the baseline's mode of its name, if it has one
    assert eval_command([str(dataset), "--mode", "keyword,vector", "--baseline", str(base),
                         "--fail-under"], settings, service) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "keyword against baseline" in out and "vector: not in the baseline" in out


def test_fail_under_needs_a_baseline(indexed):
    settings, service, dataset = indexed
    with pytest.raises(RagError, match="--fail-under: needs --baseline"):
        eval_command([str(dataset), "--fail-under"], settings, service)


@pytest.mark.parametrize(
    ("content", "fault"),
    [(None, "cannot read"), ("{not json", "not JSON"),
     ({"mode": "hybrid", "items": 1, "failed": []}, "no per-question scores"),
     ({"mode": "hybrid", "questions": [{"line": 1, "question": "elsewhere"}]},
      "no question in common with q.jsonl")],
)  # fmt: skip
def test_a_bad_baseline_is_one_line_and_exit_code_2(tmp_path, capsys, content, fault):
    dataset = write(tmp_path / "q.jsonl", '{"question": "q", "sources": ["a.pdf"]}\n')
    path = tmp_path / "prev.json"
    if content is not None:
        write(path, content)
    # Refused before the index is opened or a model loads: the index does not even exist.
    code = main(["eval", str(dataset), "--baseline", str(path), "--fail-under",
                 "--index", str(tmp_path / "no-index")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: baseline {path}: ") and fault in err
    assert err.count("\n") == 1
