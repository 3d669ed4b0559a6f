# The two commands: `make run` and `make test`. Both set up .venv on first use, from the lock
# files (pip checks every hash): `make run` installs requirements-run.txt (what running needs),
# every other target requirements-dev.txt (that, plus tests and tools). `make lock` re-resolves
# the locks from pyproject.toml.
PORT ?= 8000
HOST ?= 127.0.0.1
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# One stamp per lock and content: a changed lock installs again.
stamp = $(VENV)/.installed-$(1)-$(shell cksum < $(2) | cut -d' ' -f1)
RUN_STAMP := $(call stamp,run,requirements-run.txt)
DEV_STAMP := $(call stamp,dev,requirements-dev.txt)

export PATH := $(BIN):$(PATH)

.PHONY: run test coverage test-watch setup setup-run migrate bench bench-all lint lock clean chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements-run.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --require-hashes -r requirements-run.txt
	rm -f $(VENV)/.installed-*
	touch $@

# requirements-dev.txt holds requirements-run.txt at the same versions (tests/core/test_packaging.py).
$(DEV_STAMP): requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@ $(RUN_STAMP)

setup: $(DEV_STAMP)
setup-run: $(RUN_STAMP)

# Development mode (DEBUG=true: the built-in secret key, any host, text logs) is switched on
# here, for `make run` and the migrations it runs first, and nowhere else: every other way
# of starting SnapAsset is production unless told otherwise. `make run DEBUG=false` tries
# the production settings locally (they then need a real SECRET_KEY).
run migrate: export DEBUG ?= true

migrate: setup-run
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0

# honcho reads no .env itself (it would let the file win over the environment):
# `python -m snapasset.env` loads it as every SnapAsset process does, environment first, and
# the embedded Redis starts only when REDIS_URL is set nowhere.
run: migrate
	rm -rf var/metrics  # prometheus_client multiprocess files of the previous run
	WEB_PORT=$(PORT) HOST=$(HOST) exec $(BIN)/python -m snapasset.env sh -c \
		'exec honcho --env /dev/null -f Procfile.dev start web worker cleanup webhooks beat $$(test -n "$$REDIS_URL" || echo redis)'

# Tests use the machine's real Postgres and Redis: a database of their own per run
# (pytest-django creates test_<name> and drops it) and a Redis db number of their own. They
# run in development mode, as `make run` does; the tests of production behaviour start
# their processes without it.
RUN_ID := $(shell echo $$$$)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/snapasset_$(RUN_ID)
TEST_REDIS_URL ?= redis://127.0.0.1:6379/$(shell expr $(RUN_ID) % 15 + 1)
TEST_ENV = DEBUG=true DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	IMAGE_PROVIDER=local SNAPASSET_VAR_DIR=$(CURDIR)/var/test-$(RUN_ID)

test: setup
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS) $(COVERAGE_ARGS)

# `make test` with a coverage report (the web and worker processes the tests start count
# too); CI runs this and prints the total.
coverage: COVERAGE_ARGS = --cov --cov-report=term:skip-covered
coverage: test

# Re-runs the tests affected by a saved .py file: watchfiles watches the code (not .venv,
# whose reads would flood a watcher of the whole folder) and restarts pytest, and
# pytest-testmon picks the tests that the change affects (its first run runs all of
# PYTEST_ARGS' selection to learn what each test touches).
test-watch: setup
	$(TEST_ENV) $(BIN)/watchfiles --filter python \
		'$(BIN)/python -m pytest --testmon $(PYTEST_ARGS)' snapasset jobs cleanup tests bench

# The suite without the tests marked slow (the 1,000-job load, the multi-process runs of a
# minute or more): a couple of minutes. `make test` (CI) still runs everything.
.PHONY: test-fast
test-fast: override PYTEST_ARGS := -m "not slow" $(PYTEST_ARGS)
test-fast: test

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	# django-stubs loads the settings: development mode, as for the tests.
	DEBUG=true $(BIN)/mypy jobs snapasset cleanup
	$(BIN)/deptry .
	$(BIN)/deptry tests bench --exclude '\.venv' --ignore DEP002,DEP004
	$(BIN)/lint-imports

# Resolve pyproject.toml into the three locks, keeping current pins where they still fit
# (`make lock UPGRADE=--upgrade` takes the newest). The dev lock is resolved first; the run
# and runtime locks are constrained to it, so all three agree on every version.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--annotation-style line --custom-compile-command "make lock" $(UPGRADE) pyproject.toml
lock: setup
	$(UV_COMPILE) --group dev -o requirements-dev.txt
	$(UV_COMPILE) --group run -c requirements-dev.txt -o requirements-run.txt
	$(UV_COMPILE) -c requirements-dev.txt -o requirements.txt

# `make bench`: the round-two targets in one table, one run (a few minutes); one group of
# rows: `make bench BENCH_ARGS="--only e2e"`. `make bench-all` adds every detailed bench.
bench: setup
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-all: setup
	$(BIN)/python -m bench --all $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache .coverage .coverage.* .testmondata*

# The long fault campaign (tests/chaos): a few minutes of faults on the real processes, then
# the invariants. CHAOS_SEED replays a run (random by default), CHAOS_SECONDS sets its length.
chaos: setup
	CHAOS_SEED=$${CHAOS_SEED:-$$(shuf -i 1-999999 -n 1)} CHAOS_SECONDS=$${CHAOS_SECONDS:-240} \
		$(MAKE) test PYTEST_ARGS="tests/chaos/test_campaign.py -s $(PYTEST_ARGS)"
