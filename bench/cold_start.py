"""Cold start of the ``ragchat`` commands: seconds from process start to first output.

Builds a one-file index in a temporary folder, then runs each command in a fresh Python
process and prints, per command, the seconds until its first line of output and (for
the commands that embed) until the embedding model is first needed, i.e. when work
starts. ``ask`` runs twice: against an instant stub endpoint, and with the bundled model,
whose server it starts and warms before the question. Run with
``python -m bench.cold_start [--runs N]``; figures vary with the disk cache and the
machine's load, so the median of a few runs is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stub_llm import StubLLM

ROOT = Path(__file__).resolve().parents[1]

# Runs the CLI, writing "MODEL <seconds>" to stderr when the embedding model is first needed.
PROBE = """
import sys, time
t0 = float(sys.argv[1])
import rag.service.components as c
original = c.LazyEmbeddings.query_model.fget
def model(self):
    if self._query_model is None:
        sys.stderr.write(f"MODEL {time.time() - t0:.3f}\\n"); sys.stderr.flush()
    return original(self)
c.LazyEmbeddings.query_model = property(model)
from rag.cli import main
try:
    sys.exit(main(sys.argv[2:]))
except SystemExit:
    raise
"""


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float | None, float]:
    """(seconds to first stdout line, seconds to model needed or None, total seconds)."""
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(t0), *args], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    first = time.time() - t0
    _, err = proc.communicate()
    total = time.time() - t0
    model = next((float(x.split()[1]) for x in err.splitlines() if x.startswith("MODEL ")), None)
    return first, model, total


def main() -> None:
    """Print the cold-start table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp, StubLLM() as stub:
        doc = Path(tmp) / "pump.md"
        doc.write_text("# Pump\n\nThe pump needs oil every spring.\n\n# Valve\n\nClose it.")
        index = str(Path(tmp) / "index")
        subprocess.run(
            [sys.executable, "-m", "rag.cli", "ingest", str(doc), "--index", index],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        ask = ["ask", "When does the pump need oil?", "--index", index]
        commands = {
            "--help": (["--help"], {}),
            "docs list": (["docs", "list", "--index", index], {}),
            "index status": (["index", "status", "--index", index], {}),
            "search": (["search", "pump oil", "-k", "1", "--index", index], {}),
            "ask (endpoint)": (ask, {"RAG_LLM_BASE_URL": stub.base_url, "RAG_LLM_MODEL": "stub"}),
            "ask (bundled)": (ask, {}),
        }
        print(f"{'command':<16}{'to model (s)':>14}{'first line (s)':>16}{'total (s)':>11}")
        for name, (args, env) in commands.items():
            results = [run_once(args, env) for _ in range(runs)]
            first = statistics.median(r[0] for r in results)
            models = [r[1] for r in results if r[1] is not None]
            model = f"{statistics.median(models):.2f}" if models else "-"
            total = statistics.median(r[2] for r in results)
            print(f"{name:<16}{model:>14}{first:>16.2f}{total:>11.2f}")


if __name__ == "__main__":
    main()
