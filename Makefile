# The two commands: `make run` and `make test`. Both set up .venv on first use.
PORT ?= 8000
HOST ?= 127.0.0.1
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# Without REDIS_URL, `make run` also starts the embedded Redis (see README).
PROCESSES := web worker cleanup beat $(if $(REDIS_URL),,redis)

export PATH := $(BIN):$(PATH)

.PHONY: run test setup migrate bench lint clean chaos

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

migrate: setup
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0

run: migrate
	rm -rf var/metrics  # prometheus_client multiprocess files of the previous run
	WEB_PORT=$(PORT) HOST=$(HOST) exec $(BIN)/honcho -f Procfile.dev start $(PROCESSES)

# Tests use the machine's real Postgres and Redis: a database of their own per run
# (pytest-django creates test_<name> and drops it) and a Redis db number of their own.
RUN_ID := $(shell echo $$$$)
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/snapasset_$(RUN_ID)
TEST_REDIS_URL ?= redis://127.0.0.1:6379/$(shell expr $(RUN_ID) % 15 + 1)

test: setup
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) IMAGE_PROVIDER=local \
		SNAPASSET_VAR_DIR=$(CURDIR)/var/test-$(RUN_ID) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy jobs snapasset cleanup

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache

# The long fault campaign (tests/chaos): a few minutes of faults on the real processes, then
# the invariants. CHAOS_SEED replays a run (random by default), CHAOS_SECONDS sets its length.
chaos: setup
	CHAOS_SEED=$${CHAOS_SEED:-$$(shuf -i 1-999999 -n 1)} CHAOS_SECONDS=$${CHAOS_SECONDS:-240} \
		$(MAKE) test PYTEST_ARGS="tests/chaos/test_campaign.py -s --runxfail $(PYTEST_ARGS)"
