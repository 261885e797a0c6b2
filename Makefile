# learnware-dock: the two commands are `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test lint protos check-protos venv system-deps node-deps clean

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

## Everything from nothing: venv, system and node packages, lint, the test suite.
test: venv system-deps node-deps lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) tests/interop/node/node_modules
