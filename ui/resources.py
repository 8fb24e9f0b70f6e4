"""Shared heavy objects, built once per server process and shared by all sessions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from rag.access.principal import LOCAL, Principal
from rag.memory import ConversationStore
from rag.service.components import shared_jobs, shared_service
from rag.service.core import RagService
from rag.settings import Settings
from rag.store.base import Store

logger = logging.getLogger(__name__)


@dataclass
class Resources:
    """What the pages need; tests build one from fakes.

    The pages act through ``service`` (and ``jobs``) as ``caller``: what a caller may read
    is decided there, never in the pages.
    """

    service: RagService
    # The server's job service (rag.service.jobs.JobService): uploads, re-indexing and
    # batch runs are jobs on it. None where there is none.
    jobs: Callable[[], Any] | None = None
    # Who uses the pages: the local user with RAG_AUTH=none, else the signed-in user.
    caller: Principal = LOCAL

    @property
    def settings(self) -> Settings:
        """The service's settings."""
        return self.service.settings

    @property
    def uploads_dir(self) -> Path:
        """Where uploads are kept."""
        return self.settings.uploads_dir

    @property
    def store(self) -> Store:
        """The whole index, for tests that look behind the pages (the pages never do)."""
        return self.service.store

    @property
    def memory(self) -> ConversationStore:
        """Every conversation, for tests that look behind the pages (the pages never do)."""
        return self.service.memory

    def as_caller(self, caller: Principal) -> Resources:
        """The same resources, used by ``caller``."""
        return Resources(self.service, self.jobs, caller)


@dataclass(frozen=True)
class CallerChunks:
    """Chunks by id as one caller may read them (the source view's ``ChunkSource``)."""

    service: RagService
    caller: Principal

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored chunks by chunk id, of collections the caller may read only."""
        return self.service.chunks(ids, caller=self.caller)


def resources(caller: Principal) -> Resources:
    """The real resources: the server's one service (shared with the HTTP API) and jobs.

    The server's lifespan (``app.py``) has started warming the models already.
    """
    return Resources(shared_service(), shared_jobs, caller)
