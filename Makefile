# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
# Python writes a module's bytecode the first time it is imported, and every later process loads it:
# with PYTHONDONTWRITEBYTECODE set (some images and CI runners set it), each `sensorstream` process
# compiled pyspark, pandas and duckdb from source again, 2.3 s of CPU for a start that takes 0.7 s.
unexport PYTHONDONTWRITEBYTECODE
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := .cache/jars/kafka/.complete .cache/jars/spark-kafka/.complete
CDS := .cache/cds/.trained

.PHONY: run test test-fast deps cds system browser psql systemd-tools lint fmt bench bench-kafka bench-stream bench-scale bench-store bench-soak bench-alerts faults dashboard clean distclean

run: deps  ## install what is missing, then broker + producer + stream + dashboard
	$(BIN)/sensorstream run

# Tests are marked by what they start (tests/conftest.py); the fast tier starts none of it (no
# broker, Spark, browser, JVM, Go build or Python process of its own) and leaves out the slow
# end-to-end and fault tests too.
FAST_TIER := not (broker or spark or browser or jvm or go or process or slow)
# A worker per core (pytest-xdist): these tests are mostly one Python thread each and each has its
# own files and ports, so two workers on two cores take ~60% of the serial time.

# make test runs the fast tier first, a worker per core, then everything else on two workers, a test
# module at a time on each (tests/conftest.py): those start a broker, Spark or a browser and wait on
# them; one at a time they left the two cores 40% idle. Their bounds are for a shared machine.
test: deps $(CDS) browser psql systemd-tools lint  ## install what is missing, then the whole test suite (starts and stops its own broker)
	$(BIN)/pytest -n auto -m "$(FAST_TIER)"
	$(BIN)/pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=25 -m "not ($(FAST_TIER))"

test-fast: deps lint  ## for every change: the tests that start no broker, Spark, browser, JVM, Go build or process (under 90 s)
	$(BIN)/pytest -n auto -m "$(FAST_TIER)"

deps: system $(STAMP) $(JARS)

# A fresh Debian machine as root gets a JRE and Maven here (as `browser` gets Chromium); anyone else
# gets one sentence saying what to install, from the checks below.
system:
	@command -v java >/dev/null || [ -n "$$JAVA_HOME" ] || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { echo "installing Java 17 (openjdk-17-jdk-headless) for Kafka and Spark"; \
	    apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless >/dev/null; }
	@command -v mvn >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { echo "installing Maven, used once to fetch the Kafka and Spark jars"; \
	    apt-get update -qq && apt-get install -y -qq maven >/dev/null; }

browser:  ## headless Chromium for the dashboard's browser test (installed when we are root)
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	@command -v chromium >/dev/null || echo "note: no chromium; the browser test will be skipped (apt-get install chromium chromium-driver)"

psql:  ## Debian's psql for the PostgreSQL endpoint's client tests (installed when we are root)
	@command -v psql >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq postgresql-client)
	@command -v psql >/dev/null || echo "note: no psql; the psql tests will be skipped (apt-get install postgresql-client)"
	@command -v go >/dev/null || echo "note: no go; the pgx (Grafana's driver) tests will be skipped"

systemd-tools:  ## systemd-analyze, to verify deploy/systemd/*.service in the tests (installed when we are root)
	@command -v systemd-analyze >/dev/null || [ "$$(id -u)" != 0 ] || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd)
	@command -v systemd-analyze >/dev/null || echo "note: no systemd-analyze; the unit files' test will be skipped (apt-get install systemd)"

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "sensorstream needs Python 3.11+; set PYTHON=/path/to/python3.11"; exit 1; }
	@command -v java >/dev/null || [ -n "$$JAVA_HOME" ] || \
	  { echo "Java 17+ is needed for Kafka and Spark: install a JDK (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# constraints.txt is the lock: a fresh machine gets exactly the versions we test with.
	# --no-compile: Python writes a module's bytecode when something first imports it; compiling every
	# file of every package up front (pyspark, scipy, pandas...) was half of a fresh install (42 s against 22 s).
	$(BIN)/pip install -q --no-compile -c constraints.txt -e '.[dev]'
	touch $@

.cache/jars/%/.complete: $(STAMP)
	@command -v mvn >/dev/null || { echo "Maven (mvn) is needed once to fetch the Kafka and Spark jars: apt-get install maven"; exit 1; }
	$(BIN)/python -c 'from pathlib import Path; from sensorstream.jvm.classpath import ensure_jars; ensure_jars(Path(".cache"), "$*")'

# The broker's and the Spark driver's class archives (src/sensorstream/jvm/cds.py): trained once
# (~40 s of CPU), each later JVM start takes ~60% of the time. Another JDK or other jars get their own.
# `make test` starts some 40 JVMs, so it trains them first; `make run` starts two and uses them once
# trained (`make cds`), as every command does, rather than spend 30 s on its first start.
cds: $(CDS)  ## train the broker's and the Spark driver's class archives: their JVMs then start faster

$(CDS): $(STAMP) $(JARS)
	$(BIN)/python -m sensorstream.tools.cds_training .cache
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

fmt:
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

bench-kafka: deps
	$(BIN)/sensorstream bench kafka

bench-stream: deps
	$(BIN)/sensorstream bench stream

bench-scale: deps
	$(BIN)/sensorstream bench scale

bench-store: deps
	$(BIN)/sensorstream bench store

bench-soak: deps  ## the cost of a batch on a full store, then a 20-minute run at steady state
	$(BIN)/sensorstream bench soak

# Each benchmark alone, one after the other: two Spark jobs at once distort each other on 2 cores.
bench: bench-kafka bench-stream bench-scale bench-store bench-soak bench-alerts

bench-alerts: deps  ## false alarms on clean signals; injected spikes, drifts and stuck values caught
	$(BIN)/sensorstream bench alerts

faults: deps
	$(BIN)/sensorstream faults

dashboard: deps
	$(BIN)/sensorstream dashboard

clean:
	rm -rf data reports .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) .cache
