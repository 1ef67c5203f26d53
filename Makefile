# The README's two commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test lint format schema bench notebooks clean

run: $(VENV)/.runtime
	$(BIN)/python service.py migrate
	$(BIN)/python service.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(VENV)/.runtime
	$(BIN)/python service.py schema > sql/schema.mysql.sql

bench: $(VENV)/.dev
	$(BIN)/python bench/bench_recon.py

notebooks: $(VENV)/.lab
	$(BIN)/jupyter lab notebooks/

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.lab: requirements.txt requirements-dev.txt requirements-lab.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-lab.txt
	touch $@ $(VENV)/.dev $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
