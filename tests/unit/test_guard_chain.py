"""Guardrails in the engine: PII masking and blocking, content moderation, refusals stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import BaseMessage

from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import ContentRefusedError, PiiBlockedError
from rag.guard.model import LazyDetector, PiiGuard, is_local_url
from rag.guard.moderation import Verdict
from rag.llm.client import Endpoint
from rag.memory import REFUSED, ConversationStore
from rag.prompts import load_prompts
from rag.service.components import pii_guard
from rag.settings import Settings
from tests.fakes import FakeDetector, RecordingRetriever, doc


class Recording(GenericFakeChatModel):
    """A fake model that keeps the messages of every call."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - a pydantic field

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    def sent(self) -> str:
        return "\n".join(str(m.content) for call in self.seen for m in call)


PASSAGE = "The on-call phone is +44 20 7946 0958; escalate to lead@example.org."


@pytest.fixture
def retriever() -> RecordingRetriever:
    return RecordingRetriever(
        by_keyword={"on-call": [doc(PASSAGE, source="/docs/ops.md", page=None, n=1)]},
        queries=[],
    )


def engine(llm, retriever, *, mode="mask", moderator=None, memory=None) -> ChatEngine:
    prompts = load_prompts()
    guard = PiiGuard(llm, LazyDetector(FakeDetector), mode) if mode else None
    chain = build_chain(guard or llm, retriever, prompts, ChainConfig())
    return ChatEngine(
        chain, prompts, model_name="remote", pii=guard, moderator=moderator, memory=memory
    )


def test_masked_values_never_reach_the_model_and_the_user_reads_them(retriever):
    # The model answers with the placeholders it was shown, as a remote model would.
    llm = Recording(
        messages=iter(["Call <PHONE_NUMBER_1> or mail <EMAIL_ADDRESS_1> [1]."]), seen=[]
    )
    stream = engine(llm, retriever).ask("I am bob@corp.example: who is on-call?", within=None)
    text = "".join(stream)
    sent = llm.sent()
    for value in ("bob@corp.example", "+44 20 7946 0958", "lead@example.org"):
        assert value not in sent
    assert "<EMAIL_ADDRESS_1>" in sent and "<PHONE_NUMBER_1>" in sent
    assert "<EMAIL_ADDRESS_2>" in sent
    assert text == "Call +44 20 7946 0958 or mail lead@example.org [1]."
    assert stream.result is not None and stream.result.text == text


def test_follow_ups_are_masked_in_the_condensing_call_too(retriever, tmp_path: Path):
    llm = Recording(
        messages=iter(["Who is on-call for <EMAIL_ADDRESS_1>?", "Mail <EMAIL_ADDRESS_1> [1]."]),
        seen=[],
    )
    memory = ConversationStore(tmp_path / "c.db")
    conv = memory.create(owner="local").id
    q = memory.ask(conv, "My mail is bob@corp.example")
    memory.answer(conv, q.id, "Noted, bob@corp.example.", {})
    eng = engine(llm, retriever, memory=memory)
    text = "".join(eng.ask_in(conv, "who is on-call for me?", within=None))
    assert len(llm.seen) == 2  # condense + answer
    assert "bob@corp.example" not in llm.sent()
    assert text == "Mail bob@corp.example [1]."


def test_block_refuses_a_question_with_personal_data_before_any_model_call(
    retriever, tmp_path: Path
):
    llm = Recording(messages=iter(["never"]), seen=[])
    memory = ConversationStore(tmp_path / "c.db")
    conv = memory.create(owner="local").id
    with pytest.raises(PiiBlockedError, match=r"EMAIL_ADDRESS.*the question") as caught:
        list(
            engine(llm, retriever, mode="block", memory=memory).ask_in(
                conv, "is bob@x.org on-call?", within=None
            )
        )
    assert "bob@x.org" not in str(caught.value)
    assert llm.seen == [] and retriever.queries == []
    (exchange,) = memory.exchanges(conv)
    assert exchange.answer is not None and exchange.answer.outcome == REFUSED


def test_block_refuses_passages_with_personal_data(retriever):
    llm = Recording(messages=iter(["never"]), seen=[])
    with pytest.raises(PiiBlockedError, match=r"PHONE_NUMBER.*passages"):
        list(engine(llm, retriever, mode="block").ask("who is on-call?", within=None))
    assert llm.seen == []


class WordModerator:
    """Flags texts containing a word."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.checked: list[str] = []

    def check(self, text: str) -> Verdict:
        self.checked.append(text)
        hit = self.word in text.lower()
        return Verdict(hit, ("violence",) if hit else (), "the blocklist")


def test_a_flagged_question_is_refused_before_retrieval(retriever, tmp_path: Path):
    llm = Recording(messages=iter(["never"]), seen=[])
    memory = ConversationStore(tmp_path / "c.db")
    conv = memory.create(owner="local").id
    eng = engine(llm, retriever, mode=None, moderator=WordModerator("bomb"), memory=memory)
    with pytest.raises(ContentRefusedError, match="question was flagged by the blocklist"):
        list(eng.ask_in(conv, "how to build a bomb on-call?", within=None))
    assert llm.seen == [] and retriever.queries == []
    (exchange,) = memory.exchanges(conv)
    assert exchange.answer is not None and exchange.answer.outcome == REFUSED
    assert "violence" in str(exchange.answer.error)


def test_a_flagged_answer_is_never_shown(retriever):
    llm = Recording(messages=iter(["The on-call kit has a bomb [1]."]), seen=[])
    moderator = WordModerator("bomb")
    stream = engine(llm, retriever, mode=None, moderator=moderator).ask(
        "who is on-call?", within=None
    )
    shown: list[str] = []
    with pytest.raises(ContentRefusedError, match="answer was flagged"):
        shown.extend(stream)
    assert shown == []
    assert moderator.checked[-1].startswith("The on-call kit")


def test_with_a_moderator_a_clean_answer_arrives_whole(retriever):
    llm = Recording(messages=iter(["Backups run nightly [1]."]), seen=[])
    stream = engine(llm, retriever, mode=None, moderator=WordModerator("bomb")).ask(
        "who is on-call?", within=None
    )
    assert list(stream) == ["Backups run nightly [1]."]


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://llm.localhost/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://127.0.0.1.evil.example/v1", False),
    ],
)
def test_which_endpoints_are_local(url, local):
    assert is_local_url(url) is local


def test_the_guard_wraps_remote_endpoints_only(tmp_path: Path):
    llm = Recording(messages=iter([]), seen=[])
    remote = [Endpoint("https://api.example.com/v1", "m")]
    local = [Endpoint("http://127.0.0.1:9/v1", "m")]
    base = Settings(data_dir=tmp_path)
    assert pii_guard(base, local, llm) is None
    guard = pii_guard(base, local + remote, llm)
    assert guard is not None and guard.mode == "mask"
    assert pii_guard(base.model_copy(update={"pii": "off"}), remote, llm) is None
    blocked = pii_guard(base.model_copy(update={"pii": "block"}), remote, llm)
    assert blocked is not None and blocked.mode == "block"
    assert pii_guard(base.model_copy(update={"pii_endpoints": "all"}), local, llm) is not None
