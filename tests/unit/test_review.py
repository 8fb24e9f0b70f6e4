"""The review loop: answers queued, reviewed, served ahead of the model, exported as eval data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from ingest.chunking import TokenChunker
from ingest.pipeline import IngestPipeline, Progress
from rag.access.principal import Principal
from rag.chain import ChainConfig, ChatEngine, build_chain
from rag.errors import (
    ContentRefusedError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ReviewError,
)
from rag.evaluation import load_dataset
from rag.guard.moderation import Verdict
from rag.memory import ConversationStore
from rag.prompts import load_prompts
from rag.review.store import (
    ABSTAINED,
    RATED_DOWN,
    RIGHT,
    SOURCES_CHANGED,
    WEAK_CITATIONS,
    WRONG,
    Draft,
    ReviewStore,
    question_key,
)
from rag.service.components import build_access, build_retriever
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.faiss import FaissStore, NewChunk
from tests.api_fakes import Controls, FakeModels
from tests.fakes import CountingEmbeddings, RecordingRetriever, WordTokenizer

MANUAL = [
    "max_connections sets the maximum number of clients.",
    "The default value of max_connections is 100.",
]
BACKUPS = ["Backups run nightly at two and keep seven copies."]
DOC_A, DOC_B = "a" * 64, "b" * 64
DEFAULT_CHUNK = f"{DOC_A[:16]}-00001"  # "The default value of max_connections is 100."
GOOD = "The default value of max_connections is 100 [2]."  # every word in the passage
WEAK = "It depends on the operating system and the phase of the moon [1]."
UNCITED = "The default value of max_connections is 100."  # ragchat attaches [1] itself
QUESTION = "What is the default of max_connections?"
CORRECTION = "The default is 100 connections [1]."


class Scripted(BaseChatModel):
    """Answers with ``reply``; counts the answers it wrote and keeps their prompts."""

    reply: str = GOOD
    prompts: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.prompts.append("\n".join(str(m.content) for m in messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.reply))])


class Switch:
    """A moderator that flags every text while ``on``."""

    def __init__(self) -> None:
        self.on = False

    def check(self, text: str) -> Verdict:
        return Verdict(True, ("test",), "the test") if self.on else Verdict(False)


class Rig:
    """A service over a real FAISS store and review queue, with a scripted model."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = Settings(data_dir=root)
        self.embeddings = CountingEmbeddings(size=32)
        self.store = FaissStore(
            self.settings.resolved_index_dir, self.embeddings, model_id="fake", dimension=32
        )
        self.add(DOC_A, "manual.pdf", MANUAL, pages=3)
        self.add(DOC_B, "backups.md", BACKUPS, pages=None)
        self.model = Scripted()
        self.moderator = Switch()
        self.retriever = RecordingRetriever(
            by_keyword={
                "max_connections": self.passages(DOC_A, 2),
                "backups": self.passages(DOC_B, 1),
            }
        )
        prompts = load_prompts()

        def engine(mode: str | None, k: int | None, _: Any, memory: Any) -> ChatEngine:
            chain = build_chain(self.model, self.retriever, prompts, ChainConfig())
            return ChatEngine(
                chain, prompts, model_name="fake-model", memory=memory, moderator=self.moderator
            )

        def pipeline(progress: Progress) -> IngestPipeline:
            chunker = TokenChunker(WordTokenizer(window=64), size=40, overlap=5)
            return IngestPipeline(self.store, self.embeddings, chunker, progress=progress)

        self.service = RagService(
            self.settings,
            self.store,
            lambda: ConversationStore(self.settings.resolved_conversations_path),
            FakeModels(Controls()),
            engine,
            pipeline,
            lambda **kw: build_retriever(self.settings, self.store, **kw),
            lambda: build_access(self.settings),
            reviews=lambda: ReviewStore(self.settings.reviews_path),
        )
        self.admin = self.service.access.operator()

    def add(
        self,
        doc_id: str,
        name: str,
        texts: list[str],
        pages: int | None,
        collection: str = "default",
    ) -> None:
        vectors = np.asarray(self.embeddings.embed_documents(texts), dtype="float32")
        with self.store.writer() as w:
            w.add_document(
                doc_id, kind="pdf" if pages else "markdown", pages=pages,
                source=str(self.root / name), collection=collection,
                chunks=[NewChunk(t, page=pages) for t in texts], vectors=vectors,
            )  # fmt: skip

    def passages(self, doc_id: str, count: int) -> list[Document]:
        ids = [f"{doc_id[:16]}-{i:05d}" for i in range(count)]
        docs = self.store.get_by_ids(ids)
        for d in docs:
            d.metadata["relevance"] = 0.9
        return docs

    def ask(self, question: str = QUESTION, caller: Principal | None = None, **kw: Any) -> Any:
        stream = self.service.ask(question, caller=caller or self.admin, buffered=True, **kw)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def user(self, name: str, role: str = "member") -> Principal:
        self.service.access.accounts.add_user(name, role, f"password-of-{name}")
        return self.service.access.as_user(name)

    def asked(self) -> int:
        """Answers the model wrote so far."""
        return len([p for p in self.model.prompts if "Rewrite the user's last" not in p])


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    made = Rig(tmp_path)
    yield made
    made.service.close()


# The store -------------------------------------------------------------------------------


def draft(**kw: Any) -> Draft:
    base: dict[str, Any] = {
        "reasons": (WEAK_CITATIONS,), "question": QUESTION, "standalone": QUESTION,
        "answer": WEAK, "citations": [], "collections": frozenset({"a"}), "model": "m",
        "prompt_version": "answer@v3", "asked_by": "u1", "asked_by_name": "ann",
        "asked_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    return Draft(**(base | kw))


def test_one_item_per_answer_and_reads_filtered_by_collections(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "reviews.sqlite")
    first = store.add(draft(message_id=7))
    again = store.add(draft(message_id=7, reasons=(RATED_DOWN,)))
    assert again.id == first.id and again.reasons == (WEAK_CITATIONS, RATED_DOWN)
    both = store.add(draft(collections=frozenset({"a", "b"})))
    everything = store.add(draft(collections=None))
    assert [i.id for i in store.items(within=None)] == [first.id, both.id, everything.id]
    assert [i.id for i in store.items(within=frozenset({"a"}))] == [first.id]
    assert [i.id for i in store.items(within=frozenset({"a", "b", "c"}))] == [first.id, both.id]
    assert store.items(within=frozenset({"b"})) == []
    assert store.items(within=frozenset()) == []
    with pytest.raises(NotFoundError):
        store.get(both.id, within=frozenset({"a"}))
    with pytest.raises(ValueError, match="reasons"):
        store.add(draft(reasons=("bored",)))
    store.close()


def test_questions_match_whatever_their_case_spacing_and_end_punctuation() -> None:
    assert question_key("  What is  max_connections?? ") == question_key("what is max_connections")
    assert question_key("¿Qué es esto?") == question_key("qué es esto")
    assert question_key("What is max_connections?") != question_key("What is work_mem?")


# Capture ---------------------------------------------------------------------------------


def test_weak_uncited_and_abstained_answers_are_queued_good_ones_not(rig: Rig) -> None:
    rig.model.reply = GOOD
    good = rig.ask()
    assert good.citations and good.citations[0].support == 1.0
    rig.model.reply = WEAK
    rig.ask("How many clients does max_connections allow?")
    rig.model.reply = UNCITED
    inferred = rig.ask("What is the max_connections default value?")
    assert inferred.citations and inferred.citations[0].inferred
    rig.ask("Where is the moon?")  # nothing retrieved: abstains
    queue = rig.service.review.queue(rig.admin)
    assert [(i.question, i.reasons) for i in queue] == [
        ("How many clients does max_connections allow?", (WEAK_CITATIONS,)),
        ("What is the max_connections default value?", (WEAK_CITATIONS,)),
        ("Where is the moon?", (ABSTAINED,)),
    ]
    weak = queue[0]
    assert weak.answer == WEAK and weak.model == "fake-model"
    assert weak.citations[0]["chunk_id"] == f"{DOC_A[:16]}-00000"
    assert weak.asked_by_name == rig.admin.name and weak.collections is None


def test_the_threshold_is_a_setting_and_zero_turns_the_reason_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.settings = rig.service._settings = Settings(data_dir=tmp_path, review_min_support=0)
    rig.model.reply = WEAK
    rig.ask()
    assert rig.service.review.queue(rig.admin) == []
    rig.service.close()


def test_a_thumbs_down_queues_the_answer_once_with_every_reason(rig: Rig) -> None:
    conv = rig.service.create_conversation(caller=rig.admin)
    rig.model.reply = WEAK
    weak = rig.ask(conversation_id=conv.id)
    rig.model.reply = GOOD
    good = rig.ask("And what does max_connections set?", conversation_id=conv.id)
    rig.service.set_feedback(weak.message_id, 0, caller=rig.admin)
    rig.service.set_feedback(good.message_id, 1, caller=rig.admin)  # thumbs up: not queued
    (item,) = rig.service.review.queue(rig.admin)
    assert item.reasons == (WEAK_CITATIONS, RATED_DOWN)
    assert item.message_id == weak.message_id and item.conversation_id == conv.id
    rig.service.set_feedback(good.message_id, 0, caller=rig.admin)
    queue = rig.service.review.queue(rig.admin)
    assert [i.reasons for i in queue] == [(WEAK_CITATIONS, RATED_DOWN), (RATED_DOWN,)]
    assert (
        queue[1].answer == good.text and queue[1].question == "And what does max_connections set?"
    )


# Who may review ----------------------------------------------------------------------------


def test_an_editor_of_a_never_sees_items_of_b_and_others_are_refused(rig: Rig) -> None:
    ann, bob = rig.user("ann"), rig.user("bob")
    viewer, idle = rig.user("vic", "viewer"), rig.user("ida")
    shelf_a = rig.service.access.create_collection(ann, "shelf-a")
    shelf_b = rig.service.access.create_collection(bob, "shelf-b")
    rig.add("c" * 64, "a.md", ["max_connections notes of ann."], None, shelf_a.id)
    rig.add("d" * 64, "b.md", ["max_connections notes of bob."], None, shelf_b.id)
    rig.model.reply = WEAK
    rig.ask("ann asks about max_connections", caller=ann)
    rig.ask("bob asks about max_connections", caller=bob)
    rig.service.access.share(bob, shelf_b.id, "user", ann.user_id, "viewer")
    rig.ask("ann asks again about max_connections", caller=ann)  # searched shelf-a and shelf-b

    def seen(caller: Principal) -> list[str]:
        return [i.question for i in rig.service.review.queue(caller)]

    assert seen(rig.admin) == [
        "ann asks about max_connections",
        "bob asks about max_connections",
        "ann asks again about max_connections",
    ]
    assert seen(bob) == ["bob asks about max_connections"]  # not ann's, even the shared one
    assert seen(ann) == [  # she may read shelf-b now: its item and her own
        "ann asks about max_connections",
        "bob asks about max_connections",
        "ann asks again about max_connections",
    ]
    # Reading is not changing: she sees bob's item but may not review it for its readers.
    bob_item = next(i for i in rig.service.review.queue(ann) if i.question.startswith("bob"))
    with pytest.raises(PermissionDeniedError, match="read but not change"):
        rig.service.review.review(bob_item.id, RIGHT, ann)
    rig.service.access.unshare(bob, shelf_b.id, "user", ann.user_id)
    assert seen(ann) == ["ann asks about max_connections"]
    ann_item = rig.service.review.queue(ann)[0]
    with pytest.raises(NotFoundError):  # not "forbidden": it does not exist for bob
        rig.service.review.item(ann_item.id, bob)
    with pytest.raises(NotFoundError):
        rig.service.review.review(ann_item.id, RIGHT, bob)
    for outsider in (viewer, idle):
        assert not rig.service.review.can_review(outsider)
        with pytest.raises(PermissionDeniedError):
            rig.service.review.queue(outsider)
        with pytest.raises(PermissionDeniedError):
            rig.service.review.export(outsider)
        with pytest.raises(PermissionDeniedError):
            rig.service.review.review(ann_item.id, RIGHT, outsider)
    assert rig.service.review.can_review(ann) and rig.service.review.can_review(rig.admin)


def test_a_correction_cites_only_passages_the_question_could_read(rig: Rig) -> None:
    ann, bob = rig.user("ann"), rig.user("bob")
    shelf_a = rig.service.access.create_collection(ann, "shelf-a")
    shelf_b = rig.service.access.create_collection(bob, "shelf-b")
    rig.add("c" * 64, "a.md", ["max_connections notes of ann."], None, shelf_a.id)
    rig.add("d" * 64, "b.md", ["max_connections notes of bob."], None, shelf_b.id)
    rig.model.reply = WEAK
    rig.ask("ann asks about max_connections", caller=ann)
    (item,) = rig.service.review.queue(ann)
    with pytest.raises(InvalidInputError, match="no passage"):  # bob's passage
        rig.service.review.review(
            item.id, WRONG, rig.admin, correction="x [1]", sources=[f"{'d' * 16}-00000"]
        )
    with pytest.raises(InvalidInputError, match="at least one source"):
        rig.service.review.review(item.id, WRONG, ann, correction="Ann's notes say so.")
    with pytest.raises(InvalidInputError, match="right or wrong"):
        rig.service.review.review(item.id, "maybe", ann)
    done = rig.service.review.review(
        item.id, WRONG, ann, correction="Ann's notes [1].", sources=[f"{'c' * 16}-00000"]
    )
    assert done.served and done.sources[0].document_id == "c" * 64
    hits = rig.service.review.search(item.id, "max_connections notes", ann, k=5)
    assert {h.chunk_id[:16] for h in hits} == {"c" * 16}  # ann's shelf only, not bob's


# Serving ---------------------------------------------------------------------------------


def corrected(rig: Rig) -> Any:
    rig.model.reply = WEAK
    rig.ask()
    (item,) = rig.service.review.queue(rig.admin)
    return rig.service.review.review(
        item.id, WRONG, rig.admin, correction=CORRECTION, sources=[DEFAULT_CHUNK]
    )


def test_a_correction_answers_the_same_question_ahead_of_the_model(rig: Rig) -> None:
    item = corrected(rig)
    assert item.status == WRONG and item.served and item.reviewer_name == rig.admin.name
    before = rig.asked()
    answer = rig.ask("  what is the DEFAULT of max_connections ")
    assert rig.asked() == before  # the model was not asked
    assert answer.served_from == "review" and answer.text == CORRECTION
    data = answer.to_json()
    assert data["reviewed"] is True and data["cached"] is False
    (cite,) = data["citations"]
    assert cite["chunk_id"] == DEFAULT_CHUNK and cite["page"] == 3
    assert cite["title"] == "manual.pdf" and cite["text"] == MANUAL[1]
    assert rig.service.review.queue(rig.admin) == []  # a served answer is not queued again
    other = rig.ask("What is the default of work_mem with max_connections?")  # not the same
    assert other.served_from is None and rig.asked() == before + 1


def test_the_api_says_the_answer_is_reviewed(rig: Rig) -> None:
    from fastapi.testclient import TestClient

    from rag.api.app import create_api, serve_api
    from tests.api_fakes import FakeJobs

    corrected(rig)
    api = serve_api(create_api(lambda: rig.service, lambda: FakeJobs()))
    client = TestClient(api, client=("127.0.0.1", 40000))
    body = client.post("/api/v1/ask", json={"question": QUESTION}).json()
    assert body["reviewed"] is True and body["cached"] is False
    assert body["answer"] == CORRECTION and body["citations"][0]["chunk_id"] == DEFAULT_CHUNK
    rig.model.reply = GOOD
    other = client.post("/api/v1/ask", json={"question": "What does max_connections set?"})
    assert other.json()["reviewed"] is False


def test_only_questions_on_their_own_over_the_same_collections_are_served(rig: Rig) -> None:
    corrected(rig)
    ann = rig.user("ann")
    rig.service.access.create_collection(ann, "shelf-a")
    before = rig.asked()
    assert rig.ask(caller=ann).served_from is None  # other collections searched
    earlier = [("user", "Hello"), ("assistant", "Hi")]
    from rag.context import Turn

    history = [Turn(role, text) for role, text in earlier]
    assert rig.ask(history=history).served_from is None  # a follow-up may mean otherwise
    assert rig.asked() == before + 2


def test_served_in_a_conversation_it_is_stored_and_the_conversation_goes_on(rig: Rig) -> None:
    corrected(rig)
    conv = rig.service.create_conversation(caller=rig.admin)
    before = rig.asked()
    answer = rig.ask(conversation_id=conv.id)
    assert answer.served_from == "review" and answer.message_id is not None
    (exchange,) = rig.service.exchanges(conv.id, caller=rig.admin)
    assert exchange.question.content == QUESTION
    assert exchange.answer is not None and exchange.answer.content == CORRECTION
    assert exchange.answer.meta["reviewed"] is True
    assert exchange.answer.meta["citations"][0]["chunk_id"] == DEFAULT_CHUNK
    rig.model.reply = GOOD
    follow_up = rig.ask("And what does max_connections set?", conversation_id=conv.id)
    assert follow_up.served_from is None and rig.asked() == before + 1
    assert CORRECTION in rig.model.prompts[-1]  # the served answer is part of the history
    rig.service.set_feedback(answer.message_id, 0, caller=rig.admin)  # a reviewed answer rated down
    queued = rig.service.review.queue(rig.admin)
    assert [(i.reasons, i.answer, i.model) for i in queued] == [
        ((RATED_DOWN,), CORRECTION, "review")
    ]


def test_the_chat_page_path_stored_question_then_answer_is_served_too(rig: Rig) -> None:
    corrected(rig)
    conv_id, question_id = rig.service.store_question(QUESTION, caller=rig.admin)
    stream = rig.service.retry(conv_id, question_id, caller=rig.admin)
    assert "".join(stream) == CORRECTION
    assert stream.result is not None and stream.result.served_from == "review"
    (exchange,) = rig.service.exchanges(conv_id, caller=rig.admin)
    assert exchange.answer is not None and exchange.answer.meta["reviewed"] is True


def test_a_changed_document_stops_the_correction_and_reopens_it(rig: Rig) -> None:
    item = corrected(rig)
    with rig.store.writer() as w:  # the file re-ingested with other content: a new id
        w.delete_document(DOC_A)
    rig.add("e" * 64, "manual.pdf", [MANUAL[0], "The default value is 200 now."], pages=3)
    before = rig.asked()
    answer = rig.ask()
    assert answer.served_from is None and rig.asked() == before + 1
    again = rig.service.review.item(item.id, rig.admin)
    assert again.status == "open" and not again.served
    assert SOURCES_CHANGED in again.reasons and again.correction == CORRECTION  # kept to see
    assert rig.service.review.export(rig.admin) == []


def test_a_deleted_document_stops_the_correction(rig: Rig) -> None:
    corrected(rig)
    rig.service.delete_document(DOC_A, caller=rig.admin)
    rig.model.reply = GOOD
    assert rig.ask().served_from is None


def test_the_input_guardrails_still_refuse_a_question_with_a_correction(rig: Rig) -> None:
    corrected(rig)
    rig.moderator.on = True
    with pytest.raises(ContentRefusedError):
        rig.ask()
    conv = rig.service.create_conversation(caller=rig.admin)
    with pytest.raises(ContentRefusedError):
        rig.ask(conversation_id=conv.id)
    (exchange,) = rig.service.exchanges(conv.id, caller=rig.admin)
    assert exchange.answer is not None and exchange.answer.outcome == "refused"


def test_an_answer_found_right_is_served_with_its_own_citations(rig: Rig) -> None:
    rig.model.reply = UNCITED
    first = rig.ask()
    (item,) = rig.service.review.queue(rig.admin)
    with pytest.raises(InvalidInputError, match="no correction"):
        rig.service.review.review(item.id, RIGHT, rig.admin, correction="also this")
    right = rig.service.review.review(item.id, RIGHT, rig.admin)
    assert right.served and [s.chunk_id for s in right.sources] == [DEFAULT_CHUNK]
    answer = rig.ask()
    assert answer.served_from == "review" and answer.text == first.text
    assert [c.source.chunk_id for c in answer.citations] == [DEFAULT_CHUNK]


def test_an_abstention_marked_right_is_kept_but_neither_served_nor_exported(rig: Rig) -> None:
    rig.ask("Where is the moon?")
    (item,) = rig.service.review.queue(rig.admin)
    done = rig.service.review.review(item.id, RIGHT, rig.admin)
    assert done.status == RIGHT and not done.served
    assert rig.service.review.export(rig.admin) == []


def test_reviewing_is_off_with_the_setting(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    item = corrected(rig)
    rig.service._settings = Settings(data_dir=tmp_path, review_queue=False)
    assert rig.ask().served_from is None
    assert not rig.service.review.can_review(rig.admin)  # no Review page either
    rig.model.reply = WEAK
    rig.ask("Another max_connections question?")
    rig.service._settings = Settings(data_dir=tmp_path)
    assert [i.id for i in rig.service.review.queue(rig.admin, None)] == [item.id]
    rig.service.close()


# Export ----------------------------------------------------------------------------------


def test_export_writes_lines_ragchat_eval_reads(rig: Rig, tmp_path: Path) -> None:
    corrected(rig)
    rig.model.reply = WEAK
    rig.ask("When do backups run?")
    backups = rig.service.review.queue(rig.admin)[0]
    rig.service.review.review(
        backups.id, WRONG, rig.admin, correction="Nightly at two [1].",
        sources=[f"{DOC_B[:16]}-00000", DEFAULT_CHUNK],
    )  # fmt: skip
    lines = rig.service.review.export(rig.admin)
    assert lines[0] == {
        "question": QUESTION,
        "sources": ["manual.pdf"],
        "pages": [3],
        "passage": MANUAL[1],
        "reference_answer": "The default is 100 connections.",
        "review_id": lines[0]["review_id"],
    }
    assert lines[1]["sources"] == ["backups.md", "manual.pdf"]
    assert "pages" not in lines[1] and "passage" not in lines[1]  # a page-less source
    dataset = tmp_path / "reviewed.jsonl"
    dataset.write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = load_dataset(dataset)
    assert [i.question for i in items] == [QUESTION, "When do backups run?"]
    assert items[0].sources == ("manual.pdf",) and items[0].pages == (3,)
    assert items[0].reference_answer == "The default is 100 connections."


def test_the_cli_lists_marks_and_exports(rig: Rig, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from rag.cli import main

    rig.model.reply = WEAK
    rig.ask()
    rig.ask("When do backups run?")
    first, second = rig.service.review.queue(rig.admin)
    # (Marked here: the command's own index check refuses this test's fake embeddings.)
    rig.service.review.review(
        first.id, WRONG, rig.admin, correction=CORRECTION, sources=[DEFAULT_CHUNK]
    )
    rig.service.close()
    monkeypatch.setenv("RAG_DATA_DIR", str(rig.root))
    assert main(["review", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"#{second.id}  open  weak citations" in listed and "When do backups run?" in listed
    assert QUESTION not in listed  # reviewed
    assert main(["review", "list", "--status", "wrong", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["correction"] == CORRECTION
    out = rig.root / "out.jsonl"
    assert main(["review", "export", "--out", str(out)]) == 0
    (line,) = load_dataset(out)
    assert line.question == QUESTION and line.sources == ("manual.pdf",)
    assert main(["review", "export"]) == 0
    assert json.loads(capsys.readouterr().out)["reference_answer"] == line.reference_answer
    assert main(["review", "mark", str(second.id), "wrong", "--answer", "x"]) == 2  # no source
    assert "needs at least one source" in capsys.readouterr().err


def test_an_unreadable_queue_is_one_clear_error(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.settings.reviews_path.write_bytes(b"this is not a database" * 100)
    try:
        with pytest.raises(ReviewError, match="review queue cannot be read"):
            rig.service.review.queue(rig.admin)
        rig.model.reply = WEAK
        assert rig.ask().text  # answers go on; the failure to queue is logged
    finally:
        rig.service.close()
