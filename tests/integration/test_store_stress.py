"""Reader threads sharing one store while another process publishes back to back.

Runs ``bench/store_stress.py`` for a short while in a child process, so a crash (the
segfault this guards against) shows as its exit code instead of killing pytest. Every
query is checked there: each hit's text matches its chunk id, its score matches the
embedding of its text, and all hits of one query come from one generation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readers_never_crash_nor_mix_generations_while_a_process_publishes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "store_stress.py"),
         "--readers", "4", "--seconds", "12", "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode in (0, 1), (
        f"the readers' process died: {result.returncode}\n" + (result.stderr[-3000:])
    )
    report = json.loads(result.stdout)
    assert report["writer_exit"] == 0, report["writer_stderr"]
    assert report["errors"] == 0, report["first_errors"]
    assert report["publishes"] >= 20  # the readers really saw the index change under them
    assert set(report["by_kind"]) == {"hybrid", "view", "calls"}
    assert all(row["queries"] >= 20 for row in report["by_kind"].values())
    assert result.returncode == 0
