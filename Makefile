# Two commands for a fresh machine (see README.md):
#   make demo   - install everything, then run a real `raylung tune` on the embedded defaults
#   make test   - install everything, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,wsi]"
	touch $@

demo: install
	$(BIN)/raylung tune search_spaces/smoke.yaml
	$(BIN)/raylung train --best

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not multinode"

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check raylung tests benchmarks

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache experiments .raylung
