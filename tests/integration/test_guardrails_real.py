"""Guardrails over real components: the bundled embedding model, Presidio's recognisers and a
recording OpenAI-compatible stub on loopback treated as a remote endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.access.principal import LOCAL
from rag.errors import PiiBlockedError
from rag.service.components import open_service
from rag.service.core import RagService
from rag.settings import load_settings
from tests.faultserver import Fault, FaultServer

pytestmark = pytest.mark.integration

VALUES = {
    "EMAIL_ADDRESS": ["maria.keller@example.com", "payroll@acme-corp.example"],
    "PHONE_NUMBER": ["+44 20 7946 0958", "+1 415 555 0132"],
    "IBAN_CODE": ["DE89 3704 0044 0532 0130 00"],
    "CREDIT_CARD": ["4111 1111 1111 1111"],
    "IP_ADDRESS": ["203.0.113.77"],
    "US_SSN": ["536-22-8417"],
}
DOCUMENT = (
    "Payroll runbook. Salaries are paid on the 25th of each month. "
    "Questions go to maria.keller@example.com or payroll@acme-corp.example, "
    "phone +44 20 7946 0958 or +1 415 555 0132. "
    "Salaries are wired to the company account DE89 3704 0044 0532 0130 00. "
    "Travel is paid with the corporate card 4111 1111 1111 1111. "
    "The payroll server has the address 203.0.113.77. "
    "The test employee has the social security number 536-22-8417."
)


@pytest.fixture
def stub() -> Iterator[FaultServer]:
    with FaultServer(default=Fault("echo")) as server:
        yield server


def service_over(tmp_path: Path, stub: FaultServer, pii: str) -> Iterator[RagService]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "payroll.txt").write_text(DOCUMENT)
    settings = load_settings(
        data_dir=tmp_path / "data",
        llm_base_url=stub.base_url,
        llm_max_retries=0,
        pii=pii,
        pii_endpoints="all",  # the stub listens on loopback; treat it as remote
        min_relevance=0.0,
    )
    with open_service(settings) as service:
        service.ingest([docs], caller=LOCAL)
        yield service


def test_no_masked_value_ever_reaches_the_endpoint_and_the_user_reads_them(tmp_path, stub):
    for service in service_over(tmp_path, stub, "mask"):
        (doc,) = service.documents(caller=LOCAL)
        assert doc.pii is not None and set(VALUES) <= set(doc.pii)
        stream = service.ask("When are salaries paid to maria.keller@example.com?", caller=LOCAL)
        text = "".join(stream)
        # A follow-up in a conversation: the condensing call is guarded too.
        conv = service.create_conversation(caller=LOCAL)
        "".join(service.ask("Who do I call about payroll?", conversation_id=conv.id, caller=LOCAL))
        "".join(
            service.ask("And their email, +1 415 555 0132?", conversation_id=conv.id, caller=LOCAL)
        )
    assert stub.requests >= 3
    sent = json.dumps(stub.bodies)
    for kind, values in VALUES.items():
        for value in values:
            assert value not in sent, f"{kind} reached the endpoint"
    assert "<EMAIL_ADDRESS_" in sent and "<IBAN_CODE_" in sent
    # The stub echoed the placeholders it saw; the user reads the real values.
    assert "maria.keller@example.com" in text and "DE89 3704 0044 0532 0130 00" in text
    assert "<EMAIL_ADDRESS_" not in text


def test_block_sends_nothing_with_personal_data(tmp_path, stub):
    for service in service_over(tmp_path, stub, "block"):
        with pytest.raises(PiiBlockedError, match="EMAIL_ADDRESS") as caught:
            "".join(service.ask("Is maria.keller@example.com paid on the 25th?", caller=LOCAL))
        assert "maria.keller" not in str(caught.value)
        with pytest.raises(PiiBlockedError, match="passages"):
            "".join(service.ask("When are salaries paid?", caller=LOCAL))
    assert stub.requests == 0
