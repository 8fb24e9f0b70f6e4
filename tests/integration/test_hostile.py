"""The hostile corpus through the real CLI: every file refused cleanly or indexed, no crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rag.service.components import build_store
from rag.settings import Settings
from tests.docgen import make_markdown
from tests.hostile import build_corpus


def _sources(index: Path) -> set[str]:
    store = build_store(Settings(index_dir=index))
    return {Path(s).name for d in store.documents() for s in d.sources}


def test_hostile_corpus_ends_in_clean_outcomes_and_keeps_the_index(tmp_path: Path):
    index = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    base = [sys.executable, "-m", "rag.cli", "ingest", "--index", str(index), "--json"]
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    make_markdown(earlier / "kept.md", [("Kept", "A document indexed before the hostile run.")])
    subprocess.run([*base, str(earlier)], check=True, env=env, capture_output=True, timeout=300)

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cases = build_corpus(corpus, small=True)
    # The time bound: a hang or an unbounded parse would run into it.
    result = subprocess.run(
        [*base, str(corpus)], env=env, capture_output=True, text=True, timeout=600
    )

    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, 1), result.stderr[-3000:]
    summary = json.loads(result.stdout)
    failed = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    for case in cases:
        name = case.path.name
        if case.expect == "rejected" and name in failed:
            assert case.reason in failed[name].lower(), (name, failed[name])
        elif case.expect == "rejected":
            # The folder walk may skip what is not a regular file (the FIFO).
            assert case.reason == "regular file", f"{name} was not refused"
        elif case.expect == "parsed":
            assert name not in failed, (name, failed[name])
        for reason in failed.values():
            assert "Traceback" not in reason and "\n" not in reason
    parsed = [c.path.name for c in cases if c.expect == "parsed"]
    indexed = _sources(index)
    assert set(parsed) <= indexed, set(parsed) - indexed
    assert "kept.md" in indexed  # what the index held before the run is still there
    assert "passwd.txt" not in indexed  # a symlink out of the folder is not followed


def test_every_hostile_file_has_an_outcome_in_the_sandbox(tmp_path: Path):
    from ingest.sandbox import ParseLimits, ParserSandbox
    from rag.errors import IngestError

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cases = build_corpus(corpus)
    with ParserSandbox(ParseLimits()) as sandbox:
        for case in cases:
            try:
                stream = sandbox.open(case.path)
                text = "".join(b.text[:200] for b in stream.blocks)
            except IngestError as exc:
                assert case.expect != "parsed", (case.path.name, exc.reason)
                assert case.reason in exc.reason.lower(), (case.path.name, exc.reason)
                assert "root:" not in exc.reason
            else:
                assert case.expect != "rejected", f"{case.path.name} was not refused"
                assert case.contains in text, case.path.name
