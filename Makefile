# The two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# Settings are imported by mypy's Django plugin; it needs URLs but never connects.
TYPECHECK_ENV := DATABASE_URL=postgresql://typecheck@localhost/typecheck REDIS_URL=redis://localhost:1/0

.PHONY: install run test lint typecheck pytest system-tools bench local-llm clean-data

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) ..."
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	@$(PY) -m agentplatform.devrun

test: install system-tools lint typecheck pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(TYPECHECK_ENV) $(PY) -m mypy .

pytest: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Debian packages some tests need (chromium for browser tests, docker-compose v1 to validate
# the compose file); installed when missing and when we are allowed to.
system-tools:
	@bash tools/ensure-system-tools.sh

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-data:
	rm -rf .data
