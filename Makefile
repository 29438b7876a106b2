# Two commands for a fresh machine (see README.md):
#   make demo   - install everything, then run a real `raylung tune` on the embedded defaults
#   make test   - install everything, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint bench clean lock

install: $(VENV)/.installed

# Exactly the tested versions (constraints.txt), inside the ranges pyproject.toml states.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,test]"
	touch $@

# Re-pin: a fresh venv of everything at the newest releases the ranges allow, frozen.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet ".[all,test]"
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^raylung'; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .lock-venv

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
