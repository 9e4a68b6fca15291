# The two commands: `make demo` and `make test`. Both install everything into .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The offline switches and local stores are set by gifqa_model/core/env.py in every entry point.

.PHONY: install browser stack-deps downstream-env up down demo test mutate lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (Python 3.11)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	@start=$$(date +%s); $(BIN)/gifqa run && echo "demo wall time: $$(( $$(date +%s) - start )) s"

# the page's test drives Debian's headless Chromium; installed here when missing (as root)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing chromium and chromium-driver (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; }

# the local stack's database: Debian's PostgreSQL server binaries, installed when missing (as root)
stack-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    postgresql >/dev/null; }

# the downstream service's virtualenv (the model's own requirements only) that
# tests/gifqa_model/serve/test_downstream.py loads the champion in: built once per checkout
downstream-env: install
	$(BIN)/python -m tests.downstream_env

# the local stack of real servers on 127.0.0.1 (flows/stack.py); `make down` stops it
up: install stack-deps
	$(BIN)/gifqa stack up

down: install
	$(BIN)/gifqa stack down

# the suite on both cores (a module's tests on one worker, so its module fixtures are built
# once; the longest in two lanes that start first: tests/conftest.py) in a random module and
# test order; rerun an order with `make test SEED=<the seed it printed>`
SEED ?= $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
SEED := $(SEED)# drawn once: a `?=` with $(shell) is drawn again at each use
WORKERS ?= 2
# one torch/OpenMP thread per process: two workers on two cores, each running torch with a
# team of two, outnumber the cores and throttle each other (two retrains at once: 175 → 152 s)
TEST_THREADS ?= 1
test: install browser stack-deps downstream-env
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	@echo "test order seed: $(SEED)"
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q --timeout=1800 -n $(WORKERS) --dist loadgroup --no-loadscope-reorder \
	  --random-order-bucket=module --random-order-seed=$(SEED) --durations=15 tests

# mutation testing of the decisions (not part of CI: an hour or more on 2 cores); the kill
# rate per file and the survivors are printed at the end (bench/mutation.py)
MUTANTS ?= gifqa_model.registry.* gifqa_model.data.ingest.* gifqa_model.train.checkpoint.* \
  gifqa_model.train.loop.x__resume* gifqa_model.train.loop.x_seed_everything* \
  gifqa_model.inference.* flows.retrain.*
# OMP_NUM_THREADS=1: two mutants run at once on 2 cores, one torch thread each (two teams
# each wanting both cores throttle each other); mutmut's fork server: [tool.mutmut]
mutate: install
	OMP_NUM_THREADS=1 GIFQA_SHARED_DATA=$(abspath ../shared/data) $(BIN)/mutmut run --max-children 2 $(MUTANTS) || true
	$(BIN)/python bench/mutation.py $(MUTANTS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf outputs metrics .prefect mlflow/mlflow.db mlflow/artifacts drop
