# The two commands that matter: `make demo` and `make test`. Both build .venv from the lock first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1

.PHONY: demo test test-fast lint bench mutate crash-loop clean browser

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile --no-deps --no-build-isolation -e .
	# The machine sets PYTHONDONTWRITEBYTECODE=1; compile once here or every start pays for it. pip compiles
	# one file at a time, compileall on every core: 91 s instead of 120 s for the whole install (measured).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

# The report's browser test renders it in Debian's headless Chromium. Machines here are fresh each time
# and CI runs as root, so the project installs it itself; elsewhere the test skips and says why.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium || \
		 (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)) > /dev/null; \
	else echo "no $(CHROMIUM) and not root: the report's browser test will skip"; fi

# DuckDB 1.1 beside the venv (the venv pins 2.0): the types test reads the marts and the warehouse with it, as a
# BI tool bundling DuckDB 1.x would. Without it that test skips and says why.
DUCKDB_1_1 := $(VENV)/duckdb-1.1
$(DUCKDB_1_1)/.installed: $(STAMP)
	rm -rf $(DUCKDB_1_1)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --target $(DUCKDB_1_1) duckdb==1.1.3
	touch $@

demo: $(STAMP)
	$(BIN)/journeys demo

test: $(STAMP) browser $(DUCKDB_1_1)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# sqlfluff and mypy, then three pytest processes (the Prefect flows, the long serial tests, the rest), all
	# side by side: the suite stays under 10 minutes.
	$(BIN)/python tools/run_tests.py

# The inner loop: lint and every test not marked slow (end-to-end flows, crash and wheel tests, and the tests
# that take more than about 5 s), on two xdist workers: under 2 min on 2 cores.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -x -n 2 -p no:cacheprovider -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint src/journeys/sql
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# The mutation score (README "Mutation score"; not part of `make test`, over an hour on 2 cores): each mutant
# listed in tools/mutants.toml and each one sqlglot makes from the SQL models is planted in a copy of src/ and
# its tests run; fails below the threshold or when a mutant or a named equivalent no longer applies.
MUTATE_THRESHOLD ?= 0.95
mutate: $(STAMP)
	$(BIN)/python tools/mutate.py --threshold $(MUTATE_THRESHOLD)

# The randomised crash loop (README "Crash safety: the randomised loop"; not part of `make test`, about 11
# minutes): 20 SIGKILLs of `journeys run` at random items of ingest, identity, build or publish, 50k events.
CRASH_LOOP_ARGS ?=
crash-loop: $(STAMP)
	$(BIN)/python tools/crash_loop.py $(CRASH_LOOP_ARGS)

clean:
	rm -rf $(VENV) .prefect data/demo benchmarks/out
