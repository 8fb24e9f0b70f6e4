# One target per task. `make run` and `make test` install everything they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PORT ?= 8501

.PHONY: install run test test-unit test-integration lint format bench clean browser redis fuzz

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The sample knowledge base (docs/) is indexed first; re-running skips unchanged files.
run: install
	$(VENV)/bin/ragchat ingest docs
	FORWARDED_ALLOW_IPS='' $(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

test: install browser redis
	$(PY) -m pytest

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
		else echo "install Chromium first: sudo apt-get install chromium" >&2; exit 1; fi; }

# The Redis-mode job tests start Debian's redis-server on a loopback port.
redis:
	@test -x /usr/bin/redis-server || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
		else echo "install Redis first: sudo apt-get install redis-server" >&2; exit 1; fi; }

test-unit: install
	$(PY) -m pytest tests/unit

test-integration: install browser redis
	$(PY) -m pytest tests/integration

# A long fuzzing run of the loaders (CI runs 25 examples per property).
FUZZ_EXAMPLES ?= 5000
fuzz: install
	RAG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/unit/test_fuzz_loaders.py

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Benchmarks print figures; the corpora come from Debian packages and PyPI (see bench/).
bench: install
	$(PY) bench/ingest.py
	$(PY) bench/first_token.py
	$(PY) bench/cache_hit.py
	$(PY) bench/cache_similarity.py
	$(PY) bench/halueval.py
	$(PY) bench/postgres_eval.py
	$(PY) bench/store_stress.py
	$(PY) bench/hostile.py
	$(PY) bench/large_files.py
	RAG_LLM_TIMEOUT_S=5 $(PY) bench/endpoint_faults.py
	$(PY) bench/embeddings.py
	$(PY) bench/cold_start.py
	$(PY) -m bench.batch
	$(PY) bench/concurrent_local.py
	$(PY) bench/first_answer.py
	$(PY) bench/pii.py
	$(PY) -m bench.injection
	$(PY) -m bench.injection --answers obedient --quarantine
	$(PY) -m bench.injection --answers bundled --spotlight off
	$(PY) -m bench.injection --answers bundled --spotlight datamark
	$(PY) bench/usage_log.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
