from __future__ import annotations

from langchain_core.documents import Document

from rag.context import Turn, cut_at_sentence, fit_context


def words(text: str) -> int:
    return len(text.split())


def docs(*texts: str) -> list[Document]:
    return [Document(page_content=t, metadata={"chunk_id": str(i)}) for i, t in enumerate(texts)]


def test_everything_fits_in_a_large_window():
    fitted = fit_context(
        docs("one two.", "three four."),
        [Turn("user", "hi"), Turn("assistant", "hello")],
        "question?",
        window=1000, answer_tokens=100, overhead=10, count=words,
    )  # fmt: skip
    assert [d.page_content for d in fitted.documents] == ["one two.", "three four."]
    assert len(fitted.history) == 2


def test_history_is_trimmed_oldest_first():
    history = [Turn("user", f"turn {i} " + "pad " * 10) for i in range(10)]
    fitted = fit_context(
        docs("short source."), history, "q", window=100, answer_tokens=20, overhead=5, count=words
    )
    assert fitted.history == history[-len(fitted.history) :]
    assert 0 < len(fitted.history) < 10


def test_sources_are_cut_between_sentences_only():
    long = " ".join(f"Sentence number {i} ends here." for i in range(50))
    fitted = fit_context(
        docs("Top source.", long), [], "q", window=120, answer_tokens=20, overhead=5, count=words
    )
    second = fitted.documents[1]
    assert second.metadata["trimmed"] is True
    assert second.page_content.endswith("ends here.")
    assert long.startswith(second.page_content)
    assert fitted.tokens <= 120


def test_a_source_with_no_fitting_sentence_is_left_out():
    one_sentence = "word " * 200 + "end."
    fitted = fit_context(
        docs("Top.", one_sentence, "Third short."),
        [], "q", window=80, answer_tokens=20, overhead=5, count=words,
    )  # fmt: skip
    assert [d.page_content for d in fitted.documents] == ["Top."]


def test_nothing_fits_when_the_question_fills_the_window():
    fitted = fit_context(
        docs("a."), [], "q " * 100, window=50, answer_tokens=10, overhead=5, count=words
    )
    assert fitted.documents == [] and fitted.history == []


def test_cut_at_sentence_returns_whole_text_when_it_fits():
    assert cut_at_sentence("A. B.", 10, words) == "A. B."
    assert cut_at_sentence("A b c. D e f.", 3, words) == "A b c."
    assert cut_at_sentence("No end here at all", 2, words) == ""
