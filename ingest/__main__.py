"""``python -m ingest PATH...`` runs ``ragchat ingest PATH...``."""

import sys

from ingest.cli import main

sys.exit(main())
