# Set-up is part of both targets: a fresh clone needs only `make repro` or `make test`.
# The venv is rebuilt when the locked requirements change.
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: repro test lint bench

$(STAMP): requirements.lock pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	ruff check .
	pytest -q

lint: $(STAMP)
	ruff check . && ruff format --check .
