# Set-up is part of every target: a fresh clone needs only `make repro` or `make test`.
# The venv is rebuilt from scratch when the locked requirements or the torch index change.
#
# Which torch build: by default pip takes torch from PyPI (on Linux x86_64 that is PyTorch's CUDA build,
# which also runs on CPU). TORCH=cpu, cu128, ... (a make argument or an environment variable) adds
# PyTorch's own index https://download.pytorch.org/whl/$(TORCH); TORCH_INDEX=<url> names any other index.
#   make test TORCH=cpu        export TORCH=cu128; make repro
VENV ?= .venv
TORCH ?=
TORCH_INDEX ?= $(if $(TORCH),https://download.pytorch.org/whl/$(TORCH))
STAMP := $(VENV)/.installed-stamp
TORCH_STAMP := $(VENV)/.torch-index
PIP := $(VENV)/bin/pip --disable-pip-version-check
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: repro test lint bench lock check-lock FORCE

$(STAMP): requirements.lock requirements-cuda.txt pyproject.toml $(TORCH_STAMP)
	python3 -m venv --clear $(VENV)
	$(PIP) install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements.lock
	$(PIP) install -q --no-deps -e .
	echo '$(TORCH_INDEX)' > $(TORCH_STAMP)
	touch $@

# The torch index the venv was built with; rewritten (which rebuilds the venv) only when it changes.
$(TORCH_STAMP): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_INDEX)' | cmp -s - $@ || echo '$(TORCH_INDEX)' > $@

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	ruff check .
	pytest -q

lint: $(STAMP)
	ruff check . && ruff format --check .

# Regenerate requirements.lock + requirements-cuda.txt, or check them, against PyPI alone (tools/lock.py).
lock: $(STAMP)
	python tools/lock.py

check-lock: $(STAMP)
	python tools/lock.py --check
