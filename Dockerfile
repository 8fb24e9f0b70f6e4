# ragchat: the web app on port 8501 with the bundled embedding model and local LLM.
# Build: docker build -t ragchat .
# Run:   docker run -p 8501:8501 -v ragchat-data:/data ragchat
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAG_DATA_DIR=/data

# Compilers for llama-cpp-python (built from source) and curl for the healthcheck.
# Debian's point releases replace package versions, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY ui ./ui
# torch first, pinned, so that nothing else pulls a different build.
# PIP_EXTRA_INDEX_URL may name a CPU-only torch index at build time to keep the image small.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install torch==2.13.0 \
    && pip install .

COPY app.py ./
COPY .streamlit ./.streamlit
COPY docs ./docs

RUN useradd --create-home --uid 10001 ragchat \
    && mkdir -p /data \
    && chown 10001:10001 /data
USER 10001
VOLUME ["/data"]
EXPOSE 8501
# Client addresses are the peer's, never taken from X-Forwarded-For (RAG_AUTH=header
# believes the proxy by its address, RAG_TRUSTED_PROXIES).
ENV FORWARDED_ALLOW_IPS=""

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["curl", "--fail", "--silent", "http://127.0.0.1:8501/api/health"]

# The user guide in docs/ is indexed on start (unchanged files are skipped), then the app runs.
CMD ["sh", "-c", "ragchat ingest /app/docs && exec streamlit run app.py --server.address=0.0.0.0 --server.port=8501"]
