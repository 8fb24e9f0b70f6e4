"""Commands that only read metadata, and searches, start without loading torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from rag.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
heavy = ("torch", "sentence_transformers", "transformers", "langchain_huggingface")
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def loaded_by(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_docs_list_index_status_and_search_do_not_import_torch(tmp_path):
    doc = tmp_path / "pump.md"
    doc.write_text("# Pump\n\nThe pump needs oil every spring.")
    index = tmp_path / "index"
    subprocess.run(
        [sys.executable, "-m", "rag.cli", "ingest", str(doc), "--index", str(index)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    assert loaded_by("--help") == {"code": 0, "loaded": []}
    assert loaded_by("search", "--help") == {"code": 0, "loaded": []}
    assert loaded_by("docs", "list", "--index", str(index)) == {"code": 0, "loaded": []}
    assert loaded_by("index", "status", "--index", str(index)) == {"code": 0, "loaded": []}
    # A search embeds its query in numpy (rag/embeddings.py): no torch either.
    assert loaded_by("search", "oil", "--index", str(index)) == {"code": 0, "loaded": []}
    # The probe sees torch when a command does load it: embedding documents.
    (tmp_path / "valve.md").write_text("# Valve\n\nClose the valve before winter.")
    ingest = loaded_by("ingest", str(tmp_path / "valve.md"), "--index", str(index))
    assert ingest["code"] == 0 and "torch" in ingest["loaded"]
