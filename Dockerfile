# ragchat: the web app on port 8501 with the bundled embedding model and local LLM.
# Build: docker build -t ragchat .
# Run:   docker run -p 8501:8501 -v ragchat-data:/data ragchat
#
# Every package comes from requirements-runtime.lock: the versions of a known-good install,
# each file checked against its hash. llama-cpp-python has no wheel on PyPI and compiles from
# its source for several minutes: the first stage builds that wheel and depends on the lock
# alone, so rebuilding the image after a code change reuses it instead of compiling again.

FROM python:3.11-slim-bookworm AS llama-wheel

# Debian's point releases replace package versions, so they are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

COPY requirements-runtime.lock /tmp/
# Only llama-cpp-python's pin and hash (its sdist's), so this stage builds that one wheel.
RUN awk '/^llama-cpp-python==/ {p = 1; print; next} p && /^[^ #]/ {exit} p' \
        /tmp/requirements-runtime.lock > /tmp/llama.lock \
    && pip wheel --no-cache-dir --no-deps --require-hashes -r /tmp/llama.lock -w /wheels


FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAG_DATA_DIR=/data

# curl for the healthcheck; libgomp1 for llama.cpp's threads. No compilers: every other
# locked package has a wheel, and llama-cpp-python's comes built from the first stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The locked packages, in a layer that changes only with the lock. torch is pinned to its CPU
# build, which PyPI does not carry: TORCH_INDEX_URL names an index that does (a mirror of
# PyTorch's CPU index where that one cannot be reached).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY --from=llama-wheel /wheels /tmp/wheels
COPY requirements-runtime.lock ./
RUN pip install --no-deps /tmp/wheels/llama_cpp_python-*.whl \
    && pip install --require-hashes --extra-index-url "$TORCH_INDEX_URL" \
        -r requirements-runtime.lock \
    && rm -rf /tmp/wheels

# ragchat itself, built with the locked setuptools; nothing is resolved or downloaded here.
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY ui ./ui
RUN pip install --no-deps --no-build-isolation .

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
