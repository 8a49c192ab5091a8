# Two commands after cloning: `make repro` (set up + run the pipeline), `make test` (set up + run the tests;
# `make test-fast`: the offline tier of unit tests, in under a minute; `make lint`: ruff and mypy).
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
# DVC's stage commands call `python`: it must be this environment's.
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test test-fast lint system-packages ui docs lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
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

lock: $(STAMP)
	{ head -n 2 requirements.lock; python -m pip freeze --exclude-editable | grep -v '^mnist-pipeline'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
