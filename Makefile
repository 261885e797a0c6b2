# learnware-dock: the two commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up demo test lint protos check-protos venv system-deps node-deps clean

## Create or update .venv/ (pip takes torch==2.13.0, the CPU build on this machine's disk).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## Debian packages the tests need (an older protoc for the compatibility check; bubblewrap).
system-deps:
	@bash scripts/system-deps.sh

## The Node.js interop client's packages (exact versions from its package-lock.json).
node-deps:
	cd tests/interop/node && npm ci --no-audit --no-fund --silent

## Start the whole suite on 127.0.0.1 with embedded defaults; Ctrl-C stops everything.
up: venv
	$(VENV)/bin/lwdock up

## The suite (as `make up`), then the digits demo market through it (`lwdock demo`: builds,
## checks, searches and reuses, prints the reference's comparison table), then keeps serving.
demo: venv
	$(VENV)/bin/lwdock demo --up

## Regenerate the committed Python stubs from protos/.
protos: venv
	$(PY) scripts/gen_protos.py

## Fail when regenerating the stubs changes anything.
check-protos: venv
	$(PY) scripts/gen_protos.py --check

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/buf lint
	$(PY) scripts/gen_protos.py --check

MACHINE_PG := postgresql://postgres@127.0.0.1:5432/postgres
REGISTRY_TESTS := tests/test_registry_storage.py tests/test_registry_service.py \
	tests/test_registry_tokens.py tests/test_registry_checks.py \
	tests/test_registry_s3_and_watch.py tests/test_registry_operations.py

## Everything from nothing: venv, system and node packages, lint, the test suite (on the
## embedded PostgreSQL), then the registry's tests again on the machine's own PostgreSQL at
## 127.0.0.1:5432 when one answers there.
test: venv system-deps node-deps lint
	$(VENV)/bin/pytest
	@if $(PY) -c "import psycopg; psycopg.connect('$(MACHINE_PG)', connect_timeout=3).close()" \
		2>/dev/null; then \
		echo "registry tests again on the machine's PostgreSQL ($(MACHINE_PG))"; \
		LWDOCK_TEST_DATABASE_URL=$(MACHINE_PG) $(VENV)/bin/pytest $(REGISTRY_TESTS); \
	fi

clean:
	rm -rf $(VENV) tests/interop/node/node_modules
