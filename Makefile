# mvmflow: the two quick-start commands and a few helpers.
#   make demo   - build the local virtual environment (first time) and run the main job
#   make test   - build the local virtual environment (first time) and run the tests
# Everything installs into ./.venv from the package registry; nothing outside it is touched.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
PYTEST_ARGS ?=

.PHONY: demo test test-all lint venv clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,reference]"
	touch $@

venv: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check mvmflow tests scripts benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results resources logs .snakemake
