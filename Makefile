# The README's two commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test verify lint format schema bench notebooks demo clean

run: $(VENV)/.runtime
	$(BIN)/python service.py migrate
	$(BIN)/python service.py

# Three workers (pytest-xdist) on a 2-core machine: most tests wait on HTTP, the database or a
# subprocess, and two workers kept the cores busy about 70% of the time (docs/evidence.md);
# tests sharing a module-scoped fixture stay on one (tests/conftest.py).
TEST_WORKERS ?= 3
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The money model at length (MONEY_MODEL_EXAMPLES per database, on SQLite and on the MariaDB at
# TEST_DATABASE_URL) and the reconciliation oracle (RECON_ORACLE_EXAMPLES), printing their
# figures; `make test` runs both at a small budget.
MONEY_MODEL_EXAMPLES ?= 2000
RECON_ORACLE_EXAMPLES ?= 2000
TEST_DATABASE_URL ?= mysql+pymysql://root@127.0.0.1:3306/test
verify: $(VENV)/.dev
	RECON_ORACLE_EXAMPLES=$(RECON_ORACLE_EXAMPLES) $(BIN)/python -m pytest \
		tests/test_recon_oracle.py -p no:cacheprovider -q --hypothesis-show-statistics
	MONEY_MODEL_EXAMPLES=$(MONEY_MODEL_EXAMPLES) TEST_DATABASE_URL=$(TEST_DATABASE_URL) \
		REQUIRE_MARIADB=1 $(BIN)/python -m pytest tests/test_money_model.py -p no:cacheprovider \
		-s -q --log-level=CRITICAL --hypothesis-show-statistics

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit --quiet --recursive mpesa_service recon service.py simulator.py

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(VENV)/.runtime
	$(BIN)/python service.py schema > sql/schema.mysql.sql

bench: $(VENV)/.dev
	$(BIN)/python bench/bench_recon.py
	$(BIN)/python bench/bench_recon_e2e.py
	$(BIN)/python bench/bench_callbacks.py
	$(BIN)/python bench/bench_initiation.py

# JupyterLab refuses to start as root (a container, a root shell) unless told it may.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
notebooks: $(VENV)/.lab
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter lab notebooks/ $(ALLOW_ROOT)

demo: $(VENV)/.runtime
	DATABASE_URL=sqlite:///data/demo.db $(BIN)/python service.py migrate
	$(BIN)/python -m recon demo-data --database-url sqlite:///data/demo.db --statement data/demo-statement.csv

# Installing takes a minute or more on a fresh machine: each step says what it is doing first.
$(VENV)/bin/python:
	@echo "== creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "== upgrading pip in $(VENV)"
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	@echo "== installing the service's packages (requirements.txt) into $(VENV)"
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	@echo "== installing the service's and the tests' packages (requirements-dev.txt) into" \
		"$(VENV): a few minutes on a fresh machine, quietly"
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

$(VENV)/.lab: requirements.txt requirements-dev.txt requirements-lab.txt | $(VENV)/bin/python
	@echo "== installing JupyterLab and the notebooks' packages (requirements-lab.txt) into $(VENV)"
	$(BIN)/python -m pip install -r requirements-lab.txt
	touch $@ $(VENV)/.dev $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
