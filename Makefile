# One target per task. `make run` and `make test` install everything they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every package of a working install, pinned with its hashes (make lock writes both).
LOCK := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
PORT ?= 8501

.PHONY: install lock audit licences run test test-unit test-integration lint format bench clean browser redis fuzz

install: $(STAMP)

# Exactly the locked versions, every file checked against its hash. torch is the CPU build
# (2.13.0+cpu): pip takes it from a wheel folder (PIP_FIND_LINKS) or an index that has it
# (PIP_EXTRA_INDEX_URL, e.g. PyTorch's CPU index). llama-cpp-python compiles from source the
# first time (minutes); pip's wheel cache makes every later install of it take seconds.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing $(LOCK) into $(VENV) (the first time: minutes, llama-cpp-python compiles)"
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	# ragchat itself, editable, built with the locked setuptools; no dependency is resolved.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Re-resolves the locks from pyproject.toml, keeping every pin that still fits; the runtime
# lock (the Docker image) is the same resolution without the dev extra. To move on:
# make lock UPGRADE=all, or UPGRADE="numpy faiss-cpu" for some packages only.
TORCH_INDEX ?=
UPGRADE ?=
LOCK_FLAGS := --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	-c constraints.txt --custom-compile-command 'make lock' \
	$(foreach d,$(PIP_FIND_LINKS),--find-links $(d)) \
	$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match)
lock: install
	$(VENV)/bin/uv pip compile --quiet pyproject.toml --extra dev $(LOCK_FLAGS) \
		$(if $(filter all,$(UPGRADE)),--upgrade,$(foreach p,$(UPGRADE),--upgrade-package $(p))) \
		-o $(LOCK)
	cp $(LOCK) $(RUNTIME_LOCK)
	$(VENV)/bin/uv pip compile --quiet pyproject.toml $(LOCK_FLAGS) -o $(RUNTIME_LOCK)

# Licences of every locked package and of the model weights, then known vulnerabilities
# (pip-audit, when PyPI's advisory data can be reached). Exits 1 on a finding.
audit: install
	$(PY) -m scripts.audit

# The licence part alone (make lint runs it, so CI does).
licences: install
	$(PY) -m scripts.audit --licences --brief

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

# Code checks first; then the licence check, which is the licences target itself.
lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec compose.yaml
	$(MAKE) --no-print-directory licences

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
