"""The embedding model, loaded by path so it works offline."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from langchain_core.embeddings import Embeddings

from rag.settings import Settings

logger = logging.getLogger(__name__)

# transformers' lazily loaded modules are not safe to import from two threads at once: the
# web app's warm-up thread loading this model while an upload built the chunker's tokenizer
# raised "cannot import name 'AutoTokenizer' from 'transformers'". Loading imports more
# modules lazily, so both loaders hold this lock for the whole load (a few seconds, once).
MODEL_STACK_LOADING = threading.Lock()


def load_embeddings(settings: Settings) -> Embeddings:
    """Load the configured sentence-transformers model from disk (never from a hub).

    Raises:
        ConfigError: the model folder cannot be found.
    """
    path = settings.embedding_model_path()
    logger.info("loading embedding model from %s", path)
    with MODEL_STACK_LOADING:
        from langchain_huggingface import HuggingFaceEmbeddings
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return HuggingFaceEmbeddings(
            model_name=str(path),
            model_kwargs={"device": settings.embedding_device, "local_files_only": True},
            encode_kwargs={
                "normalize_embeddings": True,
                "batch_size": settings.embedding_batch_size,
            },
        )


def embedding_dimension(model_path: Path) -> int | None:
    """The output size a sentence-transformers folder declares, without loading it."""
    import json

    for name in ("1_Pooling/config.json", "config.json"):
        cfg = model_path / name
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            dim = data.get("word_embedding_dimension") or data.get("hidden_size")
            if dim:
                return int(dim)
    return None
