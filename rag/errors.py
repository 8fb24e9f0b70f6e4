"""The typed errors ragchat raises; the UI and the CLI show their messages to the user."""

from __future__ import annotations

from pathlib import Path


class RagError(Exception):
    """Base of every error ragchat reports to a user."""


class ConfigError(RagError):
    """A setting has a value ragchat cannot use."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"setting {setting}: {reason}")


class IngestError(RagError):
    """A file could not be read into the index."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFileError(IngestError):
    """A file's content is of a type ragchat does not read."""


class StoreError(RagError):
    """Base for problems with the index directory itself."""


class IndexNotFoundError(StoreError):
    """No index has been published in the directory yet."""

    def __init__(self, index_dir: Path | str) -> None:
        self.index_dir = str(index_dir)
        super().__init__(
            f"no index in {self.index_dir}: ingest documents first (ragchat ingest PATH)"
        )


class IndexCorruptError(StoreError):
    """The published index cannot be read."""

    def __init__(self, index_dir: Path | str, reason: str) -> None:
        self.index_dir = str(index_dir)
        self.reason = reason
        super().__init__(f"index {self.index_dir} cannot be read: {reason}")


class IndexUnwritableError(StoreError):
    """The index folder cannot be created or written."""

    def __init__(self, index_dir: Path | str, reason: str) -> None:
        self.index_dir = str(index_dir)
        self.reason = reason
        super().__init__(f"cannot write to index {self.index_dir}: {reason}")


class IndexMismatchError(StoreError):
    """The index was built with another embedding model than the one configured."""

    def __init__(
        self, expected_model: str, found_model: str, expected_dim: int, found_dim: int
    ) -> None:
        self.expected_model = expected_model
        self.found_model = found_model
        self.expected_dim = expected_dim
        self.found_dim = found_dim
        super().__init__(
            f"the index was built with embedding model {found_model!r} ({found_dim} dims) "
            f"but ragchat is configured with {expected_model!r} ({expected_dim} dims); "
            "re-ingest into a new --index directory or set RAG_EMBEDDING_MODEL back"
        )


class IndexLockedError(StoreError):
    """Another process is writing to the index."""

    def __init__(self, index_dir: Path | str, waited_s: float) -> None:
        self.index_dir = str(index_dir)
        self.waited_s = waited_s
        super().__init__(
            f"index {self.index_dir} is being written by another ingestion "
            f"(waited {waited_s:.0f}s); try again when it has finished"
        )


class DocumentNotFoundError(RagError):
    """No indexed document matches an id or path."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no indexed document matches {key!r}")


class ProviderError(RagError):
    """A model endpoint failed."""

    def __init__(self, provider: str, status: int | str | None, reason: str) -> None:
        self.provider = provider
        self.status = status
        self.reason = reason
        status_txt = f" ({status})" if status is not None else ""
        super().__init__(f"model endpoint {provider} failed{status_txt}: {reason}")
