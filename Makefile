# Two commands after cloning: `make repro` (set up + run the pipeline), `make test` (set up + run the tests;
# `make test-fast`: the offline tier of unit tests, in about a minute; `make lint`: ruff and mypy).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
# uv installs requirements.lock in seconds (pip took minutes); make fetches this version of it with pip.
UV_VERSION := 0.13.9
# INSTALLER=pip: pip instead of uv, for a machine whose package index is set in pip's config (uv does not read it).
INSTALLER ?= uv
UV := $(BIN)/uv --quiet
GET_UV := test "$$($(BIN)/uv --version 2>/dev/null | cut -d' ' -f2)" = $(UV_VERSION) || \
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
# DVC's stage commands call `python`: it must be this environment's.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast lint system-packages ui docs lock clean

setup: $(STAMP)

# requirements.lock is the lock: exactly its versions and nothing else (uv pip sync removes what it does not
# name), then the project itself, editable; `pip check` fails if the lock lacks a package something needs.
# --compile-bytecode, as pip does by default: without .pyc files each new process compiles TensorFlow's and
# MLflow's modules again where bytecode is not written (PYTHONDONTWRITEBYTECODE): 11 s to import them, not 4.
# A change to this Makefile runs it again. The stamp goes first and comes back last: after a failed install
# there is none, and make installs again.
$(STAMP): pyproject.toml requirements.lock Makefile
	rm -f $@
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),pip)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check || { echo 'requirements.lock lacks what this needs: run make lock'; exit 1; }
else
	$(GET_UV)
	$(UV) pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	$(UV) pip check --python $(BIN)/python || { echo 'requirements.lock lacks what this needs: run make lock'; exit 1; }
endif
	touch $@

repro: $(STAMP)
	dvc repro

# The full tier; installs the Debian packages it drives first (tests/system-packages).
test: system-packages $(STAMP)
	python -m pytest

# tests/unit: no network, no system packages, no trained model (tests/conftest.py says which tests);
# tests/unit/test_lint.py runs the checks of `make lint` among them.
test-fast: $(STAMP)
	python -m pytest --fast tests/unit

# Linter, formatter and type checker, configured in pyproject.toml (.pre-commit-config.yaml runs the same).
lint: $(STAMP)
	python -m ruff check .
	python -m ruff format --check .
	python -m mypy

system-packages:
	PYTHON=$(PYTHON) tests/system-packages

# make ui OPEN=1: open the link it prints in the web browser too.
ui: $(STAMP)
	python -m mnist_pipeline ui --port $(PORT)$(if $(OPEN), --open)

# The documentation site from docs/ (mkdocs.yml) into site/; --strict: a broken link or anchor fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict --site-dir site

# Resolve requirements.lock again from pyproject.toml, keeping each pin that still fits (UPGRADE=1: the newest
# versions instead). --universal: for every platform and every Python 3.11.x, Debian 12's 3.11.2 included.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(GET_UV)
	$(UV) pip compile --universal --python-version 3.11 --extra test --no-annotate --custom-compile-command 'make lock' \
	  $(if $(UPGRADE),--upgrade) pyproject.toml -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
