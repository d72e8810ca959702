# mvmflow: the two quick-start commands and a few helpers.
#   make demo   - build the local virtual environment (first time) and run the main job
#   make test   - add the test extras to it (first time) and run the tests
# Everything installs into ./.venv from the package registry; nothing outside it is touched.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
PYTEST_ARGS ?=
PLUGIN := plugins/snakemake-logger-plugin-mvmflow
# setuptools prints an information-only notice on every editable install ("be careful with
# folders in your working directory..."): not a problem of ours, so not shown
PIP_QUIET := PYTHONWARNINGS=ignore::UserWarning

.PHONY: demo test test-all lint venv clean config-doc

# The workflow alone (what `make demo` needs), then the test, reference and cluster extras on
# top (pytest, ruff, drizzlepac, the SLURM executor plugin: only the tests, benchmarks and
# ci/slurm.sh use them).
# The workflow's logger plugin is a small distribution of its own (plugins/), installed as
# a regular package because Snakemake finds plugins by scanning the installed modules.
$(BIN)/.installed: pyproject.toml $(PLUGIN)/pyproject.toml $(PLUGIN)/snakemake_logger_plugin_mvmflow/__init__.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_QUIET) $(BIN)/python -m pip install --quiet -e . ./$(PLUGIN)
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	$(PIP_QUIET) $(BIN)/python -m pip install --quiet -e ".[test,reference,cluster]"
	touch $@

venv: $(BIN)/.installed-test

demo: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

test: $(BIN)/.installed-test
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: $(BIN)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed-test
	$(BIN)/ruff check mvmflow tests scripts benchmarks plugins
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint

# config/README.md from config/schema.yaml (tests/test_configdoc.py fails when it is stale)
config-doc: $(BIN)/.installed
	$(BIN)/python -m mvmflow.configdoc

clean:
	rm -rf results resources logs .snakemake
