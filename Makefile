# Two commands for a newcomer: `make demo` and `make test`. `make lab` opens JupyterLab.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest jstest lab clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

# The JupyterLab extension's sources: the install's build hook compiles them (Node 20+).
LABEXT_SRC := labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/src/*.tsx labextension/style/* labextension/schema/*) \
	$(wildcard labextension/widget/*)

# Reinstall whenever the project's metadata or the labextension's sources change.
$(STAMP): pyproject.toml $(LABEXT_SRC) | $(BIN)/python
	@echo "Installing bt_jupyter and its test extras into $(VENV) ..."
	$(PIP) install -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m bt_jupyter.demo

lint: $(STAMP)
	$(BIN)/ruff check bt_jupyter tests bench
	$(BIN)/ruff format --check bt_jupyter tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; make treats that as a failure, as it should.
# Two workers: most tests wait on jobs and servers, not on the CPU. Whole files go to a
# worker (--dist loadfile): a module's fixtures (a service on truss's fixed port 8000)
# exist once. (xdist's loadgroup does not group under pytest 9 here: checked.)
pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

# The labextension's type check and unit tests (jest). The install's build hook has
# installed node_modules from yarn.lock; they are reinstalled when the lockfile changes.
NODE_CHECK := command -v node >/dev/null || { echo "Node.js 20+ is needed to build and test labextension/"; exit 1; }

labextension/node_modules/.yarn-state.yml: labextension/package.json labextension/yarn.lock | $(STAMP)
	@$(NODE_CHECK)
	cd labextension && ../$(BIN)/jlpm install --immutable
	@touch $@

jstest: $(STAMP) labextension/node_modules/.yarn-state.yml
	@$(NODE_CHECK)
	@test -f bt_jupyter/labextension/package.json || { echo "The labextension was not built: run $(BIN)/pip install -e . and read its output"; exit 1; }
	cd labextension && ../$(BIN)/jlpm typecheck && ../$(BIN)/jlpm test

test: lint typecheck jstest pytest

# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(PIP) install -e '.[test,lab]'
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -rf labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo bt_jupyter/labextension
