# Two commands on a fresh machine: `make demo` runs the demo, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-quick bench-query serve clean

# The package with every extra (server, embedded, grpc, parquet: `all`) and the dev tools: what
# demo, serve and test need. A service installs the bare package (see the README).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e ".[dev]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/homepot-analytics demo

serve: $(BIN)/.installed
	$(BIN)/homepot-analytics serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed lint
	bash scripts/ensure-system.sh
	$(BIN)/python -m pytest -q

bench-quick: $(BIN)/.installed
	bash scripts/ensure-system.sh
	$(BIN)/python bench/run.py --quick --output "$${TMPDIR:-/tmp}/bench-quick.json"

# Summaries from the rollups against raw rows: 1M rows per table over 30 days (a few minutes).
bench-query: $(BIN)/.installed
	bash scripts/ensure-system.sh
	$(BIN)/python -m bench.rollup_bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
