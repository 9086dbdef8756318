# Two commands for a newcomer: `make demo` and `make test`. `make lab` opens JupyterLab.
# Both install from the lock (requirements/test.txt, made by `make lock`), so a fresh clone
# installs exactly what passed the suite; `make test-latest` tries the newest releases.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed
LOCK   := requirements/test.txt
# The one torch pin: the `test` extra's (torch stays out of the lock: requirements/not-locked.txt).
TORCH  := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
# `make test-latest` sets INSTALL=latest: the newest releases that pyproject.toml admits.
INSTALL ?= locked
# Python as it runs by default: it caches bytecode (a shell may say otherwise). The suite
# starts hundreds of services, kernels and servers; each would compile bt_jupyter anew.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast test-latest lock lint typecheck pytest jstest lab clean

# The venv starts with uv, itself pinned by hash: it installs the lock's 250 packages in
# seconds where pip takes minutes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements/uv.txt

# The JupyterLab extension's sources: the install's build hook compiles them (Node 20+).
LABEXT_SRC := labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/src/*.tsx labextension/style/* labextension/schema/*) \
	$(wildcard labextension/widget/*)

# Reinstall whenever the project's metadata, the lock or the labextension's sources change.
# Locked: every package of the lock, checked against its hashes, without resolving
# anything; then torch with pip (the file this machine's pip finds, or PyPI's); then the
# project itself, built with the lock's hatchling (no build isolation: nothing unpinned).
$(STAMP): pyproject.toml $(LOCK) $(LABEXT_SRC) | $(BIN)/python
ifeq ($(INSTALL),latest)
	@echo "Installing the newest releases of bt_jupyter's dependencies into $(VENV) ..."
	$(PIP) install '$(TORCH)'
	$(UV) pip install --python $(BIN)/python --compile-bytecode -e '.[test,lab]'
else
	@echo "Installing bt_jupyter and its test extras from $(LOCK) into $(VENV) ..."
	$(UV) pip install --python $(BIN)/python --compile-bytecode --require-hashes --no-deps -r $(LOCK)
	$(PIP) install '$(TORCH)'
	$(UV) pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
endif
	$(UV) pip check --python $(BIN)/python
	@touch $@

# Resolve the test environment anew (newest releases pyproject.toml admits) and pin it,
# with hashes, for every Python the suite runs on. Commit requirements/*.txt afterwards.
lock: | $(BIN)/python
	$(UV) pip compile --quiet --universal --python-version 3.11 --generate-hashes \
		--excludes requirements/not-locked.txt --extra test --extra lab \
		pyproject.toml requirements/test.in -o $(LOCK)
	$(UV) pip compile --quiet --universal --generate-hashes requirements/uv.in -o requirements/uv.txt

demo: $(STAMP)
	$(BIN)/python notebooks/demo.py

lint: $(STAMP)
	$(BIN)/ruff check bt_jupyter tests bench notebooks/demo.py
	$(BIN)/ruff format --check bt_jupyter tests bench notebooks/demo.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects no tests; make treats that as a failure, as it should.
# Three workers on two cores: most tests wait on jobs and servers, not on the CPU (with two,
# a quarter of the CPU time went unused). Whole files go to a worker (--dist loadfile): a
# module's fixtures (a service on truss's fixed port 8000) exist once. (xdist's loadgroup
# does not group under pytest 9 here: checked.)
pytest: $(STAMP)
	$(BIN)/pytest -n 3 --dist loadfile --durations=15

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

# The inner loop (about a minute): every test that starts no job, deployment or browser
# (tests/conftest.py: SLOW_FILES), and ruff. Run `make test` before you commit.
test-fast: $(STAMP)
	$(BIN)/ruff check bt_jupyter tests bench notebooks/demo.py
	$(BIN)/pytest -n 2 -m "not slow" --durations=5

# The suite against the newest releases pyproject.toml admits instead of the lock, in a
# venv of its own: run it before `make lock`, and whenever a dependency's release is news,
# to learn what a new release breaks before a fresh clone meets it.
test-latest:
	rm -rf .venv-latest
	$(MAKE) VENV=.venv-latest INSTALL=latest test

# JupyterLab refuses to run as root without --allow-root (containers, CI machines).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(PIP) install -e '.[test,lab]'
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -rf labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo bt_jupyter/labextension
