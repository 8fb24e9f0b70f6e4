"""``ragchat eval`` end to end with the real embedding model (and, with --answers, the
bundled local model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.cli import main
from tests.docgen import make_markdown, make_pdf

PAGES = [
    "The boiler must be descaled with citric acid every six months.",
    "Error code E42 means the pressure sensor cable is loose; reseat connector J7.",
    "The warranty covers parts for two years and labour for one year.",
]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("evaldocs")
    make_pdf(folder / "boiler.pdf", PAGES, headings=["Care", "Errors", "Warranty"])
    make_markdown(
        folder / "garden.md",
        [("Roses", "Prune roses in late winter just above an outward-facing bud.")],
    )
    index = folder / "index"
    assert main(["ingest", str(folder), "--index", str(index)]) == 0
    dataset = folder / "eval.jsonl"
    rows = [
        {"question": "How often should I descale the boiler?", "sources": ["boiler.pdf"],
         "pages": [1]},
        {"question": "what does E42 mean", "sources": ["boiler.pdf"], "pages": [2],
         "passage": "connector J7"},
        {"question": "How long is labour covered?", "sources": ["boiler.pdf"], "pages": [3]},
        {"question": "When do I prune roses?", "sources": ["garden.md"]},
    ]  # fmt: skip
    dataset.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return index, dataset


def test_eval_compares_modes_as_json_and_report(indexed, tmp_path, capsys):
    index, dataset = indexed
    report = tmp_path / "report"
    code = main(
        ["eval", str(dataset), "--mode", "all", "--json", "--report", str(report),
         "--index", str(index)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"vector", "keyword", "hybrid"}
    for mode, metrics in data.items():
        assert metrics["mode"] == mode and metrics["items"] == 4 and metrics["failed"] == []
        for key in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10", "hit@5",
                    "page_accuracy@1"):  # fmt: skip
            assert 0.0 <= metrics[key] <= 1.0
    assert data["hybrid"]["hit@5"] == 1.0
    assert data["vector"]["page_accuracy@1"] >= 0.75
    assert data["hybrid"]["config"]["fusion"] == "zscore"
    # hybrid (run last) is compared with each other mode, question by question
    for other in ("vector", "keyword"):
        diff = data["hybrid"]["differences"][other]["recall@5"]
        low, high = diff["ci95"]
        assert diff["questions"] == 4 and low <= diff["delta"] <= high
    text = (report / "report.md").read_text()
    assert "| recall@5 |" in text and "modes.png" in text
    assert "| hybrid - vector | ndcg@10 |" in text
    assert (report / "modes.png").read_bytes().startswith(b"\x89PNG")


def test_eval_fusion_flag_selects_rrf(indexed, capsys):
    index, dataset = indexed
    code = main(["eval", str(dataset), "--mode", "hybrid", "--fusion", "rrf", "--json",
                 "--index", str(index)])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["config"]["fusion"] == "rrf" and data["config"]["rrf_k"] == 60
    assert data["hit@5"] == 1.0


def test_eval_table_with_answers_from_the_local_model(indexed, capsys):
    index, dataset = indexed
    code = main(["eval", str(dataset), "--answers", "-k", "3", "--index", str(index)])
    out = capsys.readouterr().out
    assert code == 0
    for key in ("recall@3", "citation_validity", "abstention_rate", "latency_p95_ms",
                "ttft_p50_ms"):  # fmt: skip
        assert key in out


def test_a_bad_dataset_is_one_line(tmp_path, indexed, capsys):
    index, _ = indexed
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert main(["eval", str(bad), "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl, line 1" in err and err.count("\n") == 1


def test_eval_against_its_own_saved_baseline_passes_the_gate(indexed, tmp_path, capsys):
    index, dataset = indexed
    saved = tmp_path / "baseline.json"
    assert main(["eval", str(dataset), "--mode", "hybrid", "--save", str(saved),
                 "--index", str(index)]) == 0  # fmt: skip
    rows = json.loads(saved.read_text())["questions"]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and rows[1]["question"] == "what does E42 mean"
    capsys.readouterr()
    code = main(["eval", str(dataset), "--mode", "hybrid", "--baseline", str(saved),
                 "--fail-under", "--json", "--index", str(index)])  # fmt: skip
    compared = json.loads(capsys.readouterr().out)["baseline"]
    assert code == 0 and compared["questions"] == 4 and compared["worse"] == []
    assert {m["verdict"] for m in compared["metrics"].values()} == {"same"}
