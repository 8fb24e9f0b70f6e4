"""Request and response models of the HTTP API (they also make the OpenAPI docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["vector", "keyword", "hybrid"]


class _Strict(BaseModel):
    """Unknown fields are refused, so a typo is a 422 rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


class AskRequest(_Strict):
    """A question, optionally inside a stored conversation."""

    question: str = Field(max_length=4000, description="The question.")
    conversation_id: str | None = Field(
        default=None, description="Ask inside this stored conversation (it keeps the turn)."
    )
    k: int | None = Field(default=None, ge=1, le=100, description="Chunks to retrieve.")
    mode: Mode | None = Field(default=None, description="Retrieval mode (default: settings).")
    collections: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Only these collections (names or ids); default: every one you may read.",
    )
    stream: bool = Field(
        default=False,
        description=(
            "Answer as Server-Sent Events: `token` events (data: a JSON string), then one "
            "`done` event carrying the whole answer, or an `error` event."
        ),
    )

    _question = field_validator("question")(_not_blank)


class Citation(BaseModel):
    """A verified citation: marker ``[n]`` in the answer and the passage it points at."""

    n: int
    source: str
    title: str
    page: int | None
    chunk_id: str
    text: str
    support: float
    inferred: bool
    flags: list[str] = Field(
        default_factory=list,
        description="Injection rules that fired on the passage at ingestion (empty: none).",
    )


class AskResponse(BaseModel):
    """An answer with its citations and how it was made."""

    answer: str
    citations: list[Citation]
    prompt_version: str
    model: str
    timings: dict[str, float]
    tokens: dict[str, Any]
    standalone_question: str
    abstained: bool
    cut: str | None = Field(description="Why the answer ended early; null when it did not.")
    cached: bool = Field(
        default=False, description="Served from the response cache, not written by the model now."
    )
    reviewed: bool = Field(
        default=False, description="A reviewer's corrected answer, served ahead of the model."
    )
    conversation_id: str | None = None
    message_id: int | None = None


class SearchRequest(_Strict):
    """A retrieval probe: the top chunks for a query, whatever their relevance."""

    query: str = Field(max_length=4000)
    k: int = Field(default=5, ge=1, le=100)
    mode: Mode | None = None
    collections: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Only these collections (names or ids); default: every one you may read.",
    )

    _query = field_validator("query")(_not_blank)


class SearchHitModel(BaseModel):
    """One retrieved chunk."""

    score: float
    relevance: float
    source: str
    title: str
    page: int | None
    chunk_id: str
    text: str
    flags: list[str] = Field(
        default_factory=list,
        description="Injection rules that fired on the chunk at ingestion (empty: none).",
    )


class SearchResponse(BaseModel):
    """The hits, best first."""

    hits: list[SearchHitModel]


class DocumentModel(BaseModel):
    """An indexed document."""

    id: str
    title: str
    kind: str
    sources: list[str]
    pages: int | None
    chunks: int
    ingested_at: str
    complete: bool
    pii: dict[str, int] | None = Field(
        default=None,
        description="Kinds of personal data found, with counts; null: not scanned.",
    )
    flagged_chunks: int = Field(
        default=0, description="Chunks flagged at ingestion for instruction-like text."
    )


class DocumentsResponse(BaseModel):
    """Every indexed document."""

    documents: list[DocumentModel]


class ConversationModel(BaseModel):
    """A conversation's header."""

    id: str
    title: str
    created_at: str
    updated_at: str
    questions: int


class ConversationsResponse(BaseModel):
    """Stored conversations, newest first."""

    conversations: list[ConversationModel]


class MessageModel(BaseModel):
    """A stored question or answer (answers carry citations and timings in ``meta``)."""

    id: int
    role: str
    content: str
    created_at: str
    meta: dict[str, Any]
    outcome: str
    error: str | None
    reply_to: int | None


class ConversationDetail(ConversationModel):
    """A conversation with its messages, oldest first."""

    messages: list[MessageModel]


class CreateConversationRequest(_Strict):
    """A new conversation."""

    title: str = Field(default="", max_length=200)


class ChatMessage(BaseModel):
    """One OpenAI chat message; ``content`` is a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text of the message (text parts joined; images and the like ignored)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )


class ChatCompletionRequest(BaseModel):
    """An OpenAI chat completion request; sampling options are accepted and ignored.

    ``k`` and ``mode`` are ragchat extras (retrieval), optional.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(default="ragchat")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    k: int | None = Field(default=None, ge=1, le=100)
    mode: Mode | None = None
    collections: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Only these collections (names or ids); default: every one you may read.",
    )


class BatchJobRequest(_Strict):
    """A batch of questions to answer as a job."""

    kind: Literal["batch"]
    questions: list[Any] = Field(
        min_length=1,
        description=(
            'Rows `{"question": ..., "sources"?: [...], "pages"?: [...], '
            '"reference_answer"?: ...}`; bad rows are listed in the job\'s errors and skipped.'
        ),
    )
    concurrency: int | None = Field(default=None, ge=1, le=64)
    collections: list[str] | None = Field(
        default=None,
        max_length=100,
        description="Only these collections (names or ids); default: every one you may read.",
    )
    compare: list[str] | None = Field(
        default=None, min_length=1, description="Answer each question with these models too."
    )
