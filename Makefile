# Shareflow: `make serve` and `make test` do all the set-up on a machine with python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test test-plain-engine install schema bench bench-quick migrate demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

migrate: install
	$(BIN)/shareflow migrate

demo: migrate
	$(BIN)/shareflow demo

serve: demo
	$(BIN)/shareflow serve --host 127.0.0.1 --port 8000

test: install
	$(BIN)/python -m pytest

# The suite a second time with the GraphQL engine's overrides off (graph/engine/), on SQLite only.
# Left out as they do not go through the GraphQL engine: the pure billing core, the use-case tests
# (tests/services/), SQLite's checkpoints; and, to keep CI short, the browser suite (the dashboard
# page's GraphQL is what the API tests ask both ways) and scale-out (PostgreSQL only); the tests
# marked `postgres` are deselected (not skipped: CI skips nothing).
PLAIN_ENGINE_SKIPS := tests/billing tests/services tests/test_sqlite_checkpoints.py tests/test_dashboard.py tests/test_scale_out.py
test-plain-engine: install
	env -u SHAREFLOW_TEST_POSTGRES_URL SHAREFLOW_ENGINE_OVERRIDES=off $(BIN)/python -m pytest -m "not postgres" $(addprefix --ignore=,$(PLAIN_ENGINE_SKIPS))

schema: install
	$(BIN)/strawberry export-schema graph.schema:schema --output schema.graphql

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis

# Benchmarks (bench/): `bench` rewrites bench/RESULTS.md; `bench-quick` runs smaller sizes in under
# two minutes and writes bench/out/RESULTS-quick.md. wrk is installed from Debian's packages if missing.
bench: install
	$(BIN)/python -m bench.run

bench-quick: install
	$(BIN)/python -m bench.run --quick
