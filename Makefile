# The loop. `make check` before every commit (about a minute); `make test` is the whole
# suite (Docker, Redis and the images must be up: `bash .ci/run` brings them up on a bare
# machine, then runs `make check` and `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Parallel test processes: each has its own Redis databases, Docker labels, ports and
# socket directories (tests/conftest.py), so they never see each other's state.
WORKERS ?= 4

.PHONY: check lint format types unit test ci lock venv

check: lint types unit

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

types:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q -m unit -p no:cacheprovider

test:
	$(BIN)/pytest -n $(WORKERS) --dist loadgroup

ci:
	bash .ci/run

# The lock files: requirements.lock (what the service runs: .ci/run, the app image, the
# README's install) and requirements-dev.lock (tests and tools, constrained by it).
# Regenerate after changing pyproject.toml's dependencies.
lock:
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -q --extra test --extra dev \
	  -c requirements.lock -o requirements-dev.lock

venv:
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
