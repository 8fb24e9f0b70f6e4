from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)

from rag.chain import ABSTAIN_TEXT, ChainConfig, ChatEngine, build_chain, clean_standalone
from rag.context import Turn
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from tests.fakes import RecordingRetriever, doc


@pytest.fixture
def retriever() -> RecordingRetriever:
    return RecordingRetriever(
        by_keyword={
            "max_connections": [
                doc("max_connections sets the maximum number of clients.", page=4, n=1),
                doc("The default value of max_connections is 100.", page=5, n=2),
            ],
            "backups": [doc("Backups run nightly at two.", source="/docs/ops.md", page=None, n=3)],
        },
        queries=[],
    )


def engine(llm, retriever, tmp_path: Path | None = None, **config) -> ChatEngine:
    prompts = load_prompts()
    chain = build_chain(llm, retriever, prompts, ChainConfig(**config))
    memory = ConversationStore(tmp_path / "c.db") if tmp_path else None
    return ChatEngine(chain, prompts, model_name="fake-model", memory=memory)


def test_answer_streams_and_citations_map_to_chunks(retriever):
    llm = GenericFakeChatModel(
        messages=iter(["The default is 100 [2], it limits clients [1] and more [9]."])
    )
    stream = engine(llm, retriever).ask("What is the default of max_connections?", within=None)
    pieces = list(stream)
    assert len(pieces) > 3
    answer = stream.result
    assert answer is not None
    assert answer.text == "The default is 100 [1], it limits clients [2] and more ."
    assert [(c.n, c.source.chunk_id, c.source.page) for c in answer.citations] == [
        (1, "c2", 5),
        (2, "c1", 4),
    ]
    assert answer.prompt_version == "answer@v3"
    assert answer.model == "fake-model"
    assert answer.timings["first_token_ms"] <= answer.timings["total_ms"]
    assert not answer.abstained
    assert retriever.queries == ["What is the default of max_connections?"]  # no condense


def test_follow_up_is_condensed_and_the_condensed_question_drives_retrieval(retriever):
    llm = FakeListChatModel(
        responses=["What is the default value of max_connections?", "It is 100 [1]."]
    )
    history = [
        Turn("user", "What does max_connections do?"),
        Turn("assistant", "It sets the maximum number of clients [1]."),
    ]
    stream = engine(llm, retriever).ask("and what about its default?", history, within=None)
    text = "".join(stream)
    assert retriever.queries == ["What is the default value of max_connections?"]
    assert text == "It is 100 [1]."
    assert stream.result is not None
    assert stream.result.standalone == "What is the default value of max_connections?"
    assert stream.result.citations[0].source.chunk_id == "c1"


def test_unusable_condense_output_falls_back_to_the_last_question():
    history = [Turn("user", "How do backups work?"), Turn("assistant", "Nightly.")]
    assert clean_standalone("", "and when?", history) == "How do backups work? and when?"
    assert clean_standalone('Standalone question: "When do backups run?"', "q", history) == (
        "When do backups run?"
    )


def test_nothing_relevant_abstains_without_calling_the_model(retriever):
    llm = FakeListChatModel(responses=["SHOULD NOT BE USED"])
    stream = engine(llm, retriever).ask("What is the capital of France?", within=None)
    pieces = list(stream)
    assert len(pieces) > 1  # it still streams
    assert "".join(pieces).strip() == ABSTAIN_TEXT
    assert stream.result is not None
    assert stream.result.abstained and stream.result.citations == []
    assert llm.i == 0


def test_tiny_window_keeps_sources_whole_sentences(retriever):
    llm = GenericFakeChatModel(messages=iter(["ok [1]"]))
    stream = engine(llm, retriever, window=420, answer_tokens=200).ask(
        "max_connections?", within=None
    )
    list(stream)
    assert stream.result is not None
    for source in stream.result.sources:
        assert source.text.endswith(".")


def test_conversations_remember_turns_and_stay_separate(retriever, tmp_path):
    llm = FakeListChatModel(
        responses=["Backups run nightly [1].", "When do backups run?", "At two [1]."]
    )
    eng = engine(llm, retriever, tmp_path)
    assert eng.memory is not None
    first, other = eng.memory.create(owner="local"), eng.memory.create(owner="local")
    list(eng.ask_in(first.id, "Tell me about backups", within=None))
    stream = eng.ask_in(first.id, "when?", within=None)
    assert "".join(stream) == "At two [1]."
    assert retriever.queries[-1] == "When do backups run?"
    messages = eng.memory.messages(first.id)
    assert [m.role for m in messages] == ["user", "assistant"] * 2
    assert messages[-1].meta["citations"][0]["chunk_id"] == "c3"
    assert messages[-1].meta["prompt_version"] == "answer@v3"
    assert stream.result is not None and stream.result.message_id == messages[-1].id
    assert eng.memory.messages(other.id) == []


def test_empty_question_is_refused(retriever):
    from rag.errors import RagError

    with pytest.raises(RagError, match="empty"):
        engine(FakeListChatModel(responses=["x"]), retriever).ask("   ", within=None)


@pytest.mark.parametrize(
    ("follow_up", "output", "expected"),
    [
        # An echo of the previous answer is not a question: fall back.
        (
            "How often?",
            "The keeper records wind speeds [1].",
            "What does the keeper log? How often?",
        ),
        # Lost the follow-up's subject ("lens"): fall back.
        ("and the lens?", "What does the keeper log?", "What does the keeper log? and the lens?"),
        # A faithful rewrite is used as it is, citation markers removed.
        ("and the lens?", "What is the lens polished with [1]?", "What is the lens polished with?"),
    ],
)
def test_condensed_question_must_keep_the_follow_up_subject(follow_up, output, expected):
    history = [
        Turn("user", "What does the keeper log?"),
        Turn("assistant", "The keeper records wind speeds [1]."),
    ]
    assert clean_standalone(output, follow_up, history) == expected
