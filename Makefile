# nightowl — two commands on a fresh machine with Python 3.11 and make:
#   make demo   creates .venv, installs, generates demo data, runs the nightly flow over 3 days
#   make test   creates .venv, installs, lints, builds the docs (--strict) and runs the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
#: make bench SIZE=S|M|L (see bench/suite.py)
SIZE   ?= S
STAMP  := $(VENV)/.installed-stamp
#: where `make lint` lays out the package as a wheel would
PKG_TREE := build/lint/package

.PHONY: demo test test-fast lint docs format bench gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nightowl demo --data-root demo

#: the full suite, as CI runs it
test: lint docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

#: for iteration: lint and every test but the end-to-end ones (marked e2e)
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not e2e"

#: the docs site, into site/ (open site/index.html, or run .venv/bin/mkdocs serve)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --quiet -d site

#: ruff; import-linter (layers, no circles, Prefect in flows/ only) and mypy, both on the package
#: as installed (flows/ tasks/ schemas/ warehouse/ copied under nightowl/, as the wheel has them)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf $(PKG_TREE) && mkdir -p $(PKG_TREE) && cp -r nightowl $(PKG_TREE)/
	cp -r flows tasks schemas warehouse $(PKG_TREE)/nightowl/
	cd $(PKG_TREE) && $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml
	cd $(PKG_TREE) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
	  --cache-dir $(CURDIR)/.mypy_cache -p nightowl

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.suite --size $(SIZE)

gpu-check:
	bench/gpu_check.sh

clean:
	rm -rf demo site .pytest_cache .ruff_cache .hypothesis .mypy_cache
