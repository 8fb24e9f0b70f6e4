"""The review loop's use cases: queue answers, review them, serve and export the reviewed ones.

Who may do what: admins and editors (users who may change at least one collection) see the
queue; an editor sees an item only when every collection its question searched is one they
may read (the store filters by it), and an admin restricted by an API key sees only its
collections. Reviewing is a change: viewers and read-only keys may not. Anyone else is
refused with ``PermissionDeniedError``.

Served: a question asked on its own (no earlier turns, whose meaning could change it) whose
wording matches a reviewed question (``question_key``) asked over the same collections gets
the reviewed answer: the correction of an answer found wrong, or the answer itself when it
was found right, as long as it cites something and every document it cites is unchanged.
A cited document that changed or went puts the item back in the queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from rag.errors import InvalidInputError, PermissionDeniedError, RagError, ReviewError
from rag.memory import MessageNotFoundError
from rag.review import capture
from rag.review.export import eval_line
from rag.review.serve import by_chunk_id, current_passages, reviewed_answer
from rag.review.store import (
    OPEN,
    RATED_DOWN,
    RIGHT,
    SOURCES_CHANGED,
    WRONG,
    ReviewItem,
    ReviewSource,
    ReviewStore,
)

if TYPE_CHECKING:
    from rag.access.principal import Principal, Scope
    from rag.chain import Answer
    from rag.service.core import RagService, SearchHit

logger = logging.getLogger(__name__)

MAX_SOURCES = 10  # sources one correction may cite
MAX_CORRECTION_CHARS = 20_000


def _narrow(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The collections in both (None: all)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


class Reviewed(NamedTuple):
    """A question's reviewed answer (None: none to serve), and whether its answer is disputed."""

    answer: Answer | None
    disputed: bool


class ReviewDesk:
    """The review queue as the service's adapters and hooks use it."""

    def __init__(
        self, service: RagService, reviews: ReviewStore | Callable[[], ReviewStore]
    ) -> None:
        self._service = service
        self._open = reviews if callable(reviews) else None
        self._store = None if callable(reviews) else reviews
        self._lock = threading.Lock()

    @property
    def store(self) -> ReviewStore:
        """The queue's database, opened at first use (never while the loop is off)."""
        with self._lock:
            if self._store is None:
                assert self._open is not None
                self._store = self._open()
            return self._store

    def close(self) -> None:
        """Close the queue's database if it was opened."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                if self._open is not None:  # opened again if used again
                    self._store = None

    @property
    def enabled(self) -> bool:
        """Whether answers are queued and reviewed answers served (``RAG_REVIEW_QUEUE``)."""
        return self._service.settings.review_queue

    # Hooks: capture and serve ---------------------------------------------------------

    def captured(
        self, answer: Answer, caller: Principal, scope: Scope, conversation_id: str
    ) -> None:
        """Queue a finished answer that abstained or cites weakly (never fails the answer)."""
        if not self.enabled:
            return
        reasons = capture.answer_reasons(answer, self._service.settings.review_min_support)
        if not reasons:
            return
        draft = capture.draft_of_answer(answer, reasons, caller, scope.collections, conversation_id)
        try:
            self.store.add(draft)
        except ReviewError as exc:  # the answer stands; the log says why
            logger.warning("could not queue an answer for review: %s", exc, exc_info=True)

    def rated_down(self, message_id: int, caller: Principal) -> None:
        """Queue the stored answer its reader just rated down (never fails the rating)."""
        if not self.enabled:
            return
        memory = self._service.memory
        try:
            conversation_id, exchange = memory.answer_of(message_id, owner=caller.user_id)
        except MessageNotFoundError:
            return  # rated just as it was replaced (regenerated): nothing to queue
        assert exchange.answer is not None
        known, collections = capture.searched(exchange.answer.meta)
        if not known:  # stored before answers kept it: what the reader may read now
            collections = self._service.scope(caller).collections
        draft = capture.draft_of_message(
            exchange.question, exchange.answer, caller, collections, conversation_id
        )
        try:
            self.store.add(draft)
        except ReviewError as exc:
            logger.warning("could not queue a rated-down answer: %s", exc, exc_info=True)

    def serve(self, question: str, scope: Scope) -> Reviewed:
        """The reviewed answer to a question asked on its own over ``scope``, if there is one.

        With it, whether the question's answer is disputed (``ReviewStore.standing``): the
        response cache must not serve it again. A reviewed answer whose cited documents
        changed is not served, and its item goes back to the queue. Failures to read are
        logged and leave the question to the model (and the cache).
        """
        if not self.enabled:
            return Reviewed(None, disputed=False)
        try:
            item, disputed = self.store.standing(question, scope.collections)
            if item is None:
                return Reviewed(None, disputed)
            ids = [s.chunk_id for s in item.sources]
            passages = current_passages(
                item, self._service.store.get_by_ids(ids, scope.collections)
            )
            if passages is None:
                logger.info("review %s: a cited document changed; back in the queue", item.id)
                self.store.reopen(item.id, SOURCES_CHANGED)
                # Open again, it is disputed if it was rated down.
                return Reviewed(None, disputed or RATED_DOWN in item.reasons)
        except RagError as exc:  # the model answers instead (a ReviewError among them)
            logger.warning("could not look up reviewed answers: %s", exc, exc_info=True)
            return Reviewed(None, disputed=False)
        return Reviewed(reviewed_answer(item, question, passages), disputed)

    # The reviewers' use cases -----------------------------------------------------------

    def _readable(self, caller: Principal) -> frozenset[str] | None:
        """The collections whose items ``caller`` may review (None: all).

        Raises:
            PermissionDeniedError: the caller is neither an admin nor an editor.
        """
        return self._reviewer(caller)[0]

    def _reviewer(self, caller: Principal) -> tuple[frozenset[str] | None, set[str] | None]:
        """``_readable``, and the collections ``caller`` may change (None: an admin, all).

        Raises:
            PermissionDeniedError: the caller is neither an admin nor an editor.
        """
        access = self._service.access
        editable = None if caller.is_admin else {c.id for c in access.editable(caller)}
        if editable is not None and not editable:
            raise PermissionDeniedError(
                "review answers", "only editors of a collection and admins may"
            )
        return access.scope(caller).collections, editable

    def can_review(self, caller: Principal) -> bool:
        """Whether ``caller`` may see the review queue (no one while the loop is off)."""
        if not self.enabled:
            return False
        try:
            self._readable(caller)
        except PermissionDeniedError:
            return False
        return True

    def queue(self, caller: Principal, status: str | None = OPEN) -> list[ReviewItem]:
        """The items ``caller`` may review (``status`` None: any), open ones oldest first."""
        within = self._readable(caller)
        return self.store.items(within=within, status=status)

    def counts(self, caller: Principal) -> dict[str, int]:
        """How many items ``caller`` may see, per status."""
        within = self._readable(caller)
        return self.store.counts(within=within)

    def item(self, item_id: int, caller: Principal) -> ReviewItem:
        """One item ``caller`` may review (``NotFoundError`` otherwise)."""
        within = self._readable(caller)
        return self.store.get(item_id, within=within)

    def review(
        self,
        item_id: int,
        verdict: str,
        caller: Principal,
        *,
        correction: str | None = None,
        sources: Sequence[str] = (),
    ) -> ReviewItem:
        """Mark an answer right or wrong; a wrong one may get the correct answer.

        ``sources``: chunk ids the correction cites (from the answer's citations or a
        search), passages of the collections the question searched that ``caller`` may
        read. An answer found right cites its own citations.

        Raises:
            InvalidInputError: an unknown verdict, a correction without sources (or sources
                without a correction), a source that is not such a passage, or a right
                answer whose cited passages have changed since.
            PermissionDeniedError: the caller may not review, or may not change anything.
            NotFoundError: no such item that the caller may see.
        """
        within, editable = self._reviewer(caller)
        self._service.access.check_writes(caller, "review an answer")
        item = self.store.get(item_id, within=within)
        # Not an admin: reviewing changes what readers of those collections get.
        if editable is not None and (item.collections is None or not item.collections <= editable):
            raise PermissionDeniedError(
                "review this answer", "it searched a collection you may read but not change"
            )
        text = (correction or "").strip()
        if verdict == RIGHT:
            if text:
                raise InvalidInputError("correction", "an answer found right needs no correction")
            cited = [str(c.get("chunk_id", "")) for c in item.citations]
            try:
                found = self._sources(item, cited, within)
            except InvalidInputError as exc:
                raise InvalidInputError(
                    "verdict",
                    "the passages this answer cites have changed since it was given; "
                    "mark it wrong and write the answer with the current sources",
                ) from exc
        elif verdict == WRONG:
            if len(text) > MAX_CORRECTION_CHARS:
                raise InvalidInputError("correction", f"at most {MAX_CORRECTION_CHARS} characters")
            if text and not sources:
                raise InvalidInputError("sources", "a correction needs at least one source")
            if sources and not text:
                raise InvalidInputError(
                    "correction", "write the correct answer its sources support"
                )
            found = self._sources(item, sources, within)
        else:
            raise InvalidInputError("verdict", "must be right or wrong")
        reviewed = self.store.review(
            item.id, verdict, reviewer=caller.user_id, reviewer_name=caller.name,
            correction=text or None, sources=found,
        )  # fmt: skip
        self._service.access.record(
            caller, "answer reviewed", str(item.id),
            {"verdict": verdict, "sources": [s.chunk_id for s in found]},
        )  # fmt: skip
        return reviewed

    def _sources(
        self, item: ReviewItem, chunk_ids: Sequence[str], within: frozenset[str] | None
    ) -> list[ReviewSource]:
        """The passages a review cites, as stored now, in the order given."""
        wanted = list(dict.fromkeys(c for c in chunk_ids if c))
        if len(wanted) > MAX_SOURCES:
            raise InvalidInputError("sources", f"at most {MAX_SOURCES} sources")
        docs = self._service.store.get_by_ids(wanted, _narrow(item.collections, within))
        by_id = by_chunk_id(docs)
        missing = [c for c in wanted if c not in by_id]
        if missing:
            raise InvalidInputError(
                "sources",
                f"no passage {missing[0]!r} in the collections this question searched",
            )
        return [
            ReviewSource(
                chunk_id=c,
                document_id=str(by_id[c].metadata["doc_id"]),
                source=str(by_id[c].metadata.get("source", "")),
                title=by_id[c].metadata.get("title"),
                page=by_id[c].metadata.get("page"),
                text=by_id[c].page_content,
            )
            for c in wanted
        ]

    def search(self, item_id: int, query: str, caller: Principal, *, k: int = 5) -> list[SearchHit]:
        """Passages for a correction: the top ``k`` for ``query`` in the item's collections.

        Only collections the question searched and the caller may read are searched.
        """
        item = self.item(item_id, caller)
        if not query.strip():
            return []
        names = None if item.collections is None else sorted(item.collections)
        return self._service.search(query, caller=caller, collections=names, k=k)

    def export(self, caller: Principal) -> list[dict[str, Any]]:
        """The reviewed answers ``caller`` may see, as ``ragchat eval`` dataset lines."""
        within = self._readable(caller)
        lines = [eval_line(item) for item in self.store.served_items(within=within)]
        return [line for line in lines if line is not None]
