"""The scan ingestion runs on every chunk: injected instructions and personal data."""

from __future__ import annotations

from rag.guard import injection
from rag.guard.model import LazyDetector
from rag.store.scan import ChunkScan

# Bump when the PII recognisers change what they find (the injection rules carry their own).
PII_VERSION = "1"


class ChunkScanner:
    """Flags instruction-like text and counts personal data by kind in a chunk.

    Its ``version`` changes with the rules, so an index scanned by older rules is scanned
    again by its next writer (``rag.store.scan.prepare``).
    """

    def __init__(self, detector: LazyDetector) -> None:
        self.detector = detector
        self.version = f"injection-{injection.VERSION}/pii-{PII_VERSION}"

    def __call__(self, text: str) -> ChunkScan:
        """What ``text`` holds."""
        found = self.detector.get().count(text)
        return ChunkScan(flags=injection.scan(text), pii=tuple(sorted(found.items())))
