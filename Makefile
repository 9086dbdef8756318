# Two commands for a newcomer: `make demo` and `make test`. `make lab` opens JupyterLab.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest lab clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# Reinstall whenever the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing bt_jupyter and its test extras into $(VENV) ..."
	$(PIP) install -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m bt_jupyter.demo

lint: $(STAMP)
	$(BIN)/ruff check bt_jupyter tests bench
	$(BIN)/ruff format --check bt_jupyter tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; make treats that as a failure, as it should.
pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(PIP) install -e '.[test,lab]'
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
