"""``python -m ingest PATH...`` runs ``ragchat ingest PATH...`` (the commands live in rag/cli)."""

import sys

from rag.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
