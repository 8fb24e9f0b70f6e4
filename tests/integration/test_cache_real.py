"""The response cache as the app builds it: the bundled embedding model, a real index and
``build_service``'s wiring, answering through a stub endpoint on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.access.principal import LOCAL
from rag.service.components import build_service
from rag.service.core import RagService
from rag.settings import load_settings
from tests.faultserver import FaultServer

GUIDE = """# Operations

Backups run nightly at two in the morning and keep seven copies.

# Revenue

The revenue in 2022 was four million; the revenue in 2023 was five million.
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RagService, FaultServer]]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(GUIDE)
    with FaultServer() as stub:
        settings = load_settings(
            data_dir=tmp_path / "data", llm_base_url=stub.base_url, min_relevance=0.0
        )
        service = build_service(settings)
        try:
            service.ingest([docs], caller=LOCAL)
            yield service, stub
        finally:
            service.close()


def served_from(service: RagService, question: str) -> str | None:
    stream = service.ask(question, caller=LOCAL)
    assert "".join(stream)
    assert stream.result is not None
    return stream.result.served_from


def test_repeats_and_paraphrases_are_served_and_other_questions_are_not(served) -> None:
    service, stub = served
    assert served_from(service, "When do backups run?") is None
    assert stub.requests == 1
    assert served_from(service, "when do backups run") == "cache"  # exact
    assert served_from(service, "When are backups run?") == "cache"  # semantic, real model
    assert stub.requests == 1
    assert served_from(service, "Where are backups stored?") is None
    assert served_from(service, "What was the revenue in 2022?") is None
    assert served_from(service, "What was the revenue in 2023?") is None  # other numbers
    assert stub.requests == 4
    assert (service.settings.data_dir / "cache.sqlite").is_file()
    scraped = service.metrics.scrape().decode()
    assert 'ragchat_cache_hits_total{kind="exact"} 1.0' in scraped
    assert 'ragchat_cache_hits_total{kind="semantic"} 1.0' in scraped


def test_an_ingestion_retires_the_cached_answers(served, tmp_path: Path) -> None:
    service, stub = served
    served_from(service, "When do backups run?")
    more = tmp_path / "more"
    more.mkdir()
    (more / "extra.md").write_text("# Extra\n\nA copy also goes offsite every Sunday.\n")
    service.ingest([more], caller=LOCAL)
    assert served_from(service, "When do backups run?") is None
    assert stub.requests == 2
