"""The usage log's use cases: record answers and feedback, report to admins.

``RagService`` calls these where an answer ends (``_accounted``) and where it is rated
(``set_feedback``); a log that cannot be written is logged and never fails an answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rag.errors import InvalidInputError, PermissionDeniedError, UsageLogError
from rag.observe.usage import UsageEntry, UsageReport, empty_report

if TYPE_CHECKING:
    from rag.access.principal import Principal, Scope
    from rag.chain import Answer
    from rag.service.core import RagService

logger = logging.getLogger(__name__)

MAX_DAYS = 3650
MAX_TOP = 1000


def record_usage(service: RagService, caller: Principal, scope: Scope, answer: Answer) -> None:
    """One row in the usage log for an answer ``caller`` was given from ``scope``."""
    try:
        usage = service.usage
        if usage is not None:
            usage.record(UsageEntry.of(answer, caller.user_id, scope.collections))
    except UsageLogError as exc:
        logger.warning("an answer is missing from the usage log: %s", exc, exc_info=True)


def rate_usage(service: RagService, message_id: int, score: int | None, caller: Principal) -> None:
    """The feedback (1, 0, None cleared) on one of ``caller``'s answers, in the usage log."""
    try:
        usage = service.usage
        if usage is not None:
            usage.rate(message_id, caller.user_id, score)
    except UsageLogError as exc:
        logger.warning("feedback is missing from the usage log: %s", exc, exc_info=True)


def usage_report(
    service: RagService, caller: Principal, days: int, *, by_model: bool, top: int
) -> UsageReport:
    """The last ``days`` UTC days (today included) of the usage log, for an admin.

    Per day (and per day and model with ``by_model``) and in total: questions, p50/p95
    answer latency and time to first token, tokens, cost, cache hits and feedback; the
    ``top`` most frequent questions the documents did not answer (none through an API
    key limited to some collections: the questions are of every collection).

    Raises:
        PermissionDeniedError: the caller is not an admin.
        InvalidInputError: ``days`` is not 1..3650 or ``top`` not 1..1000.
        UsageLogError: the log cannot be read.
    """
    if not caller.is_admin:
        raise PermissionDeniedError("read the usage report", "only admins may")
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInputError("days", f"must be between 1 and {MAX_DAYS}")
    if not 1 <= top <= MAX_TOP:
        raise InvalidInputError("top", f"must be between 1 and {MAX_TOP}")
    usage = service.usage
    if usage is None:
        return empty_report(days, questions_kept=False)
    if service.scope(caller).collections is not None:
        # An admin's API key limited to some collections: the log's questions are of every
        # collection, so none of them is shown through it (the counts are).
        top = 0
    return usage.report(days, by_model=by_model, top=top)
