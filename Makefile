# Shareflow: `make serve` and `make test` do all the set-up on a machine with python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test install schema bench bench-quick migrate demo clean

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
