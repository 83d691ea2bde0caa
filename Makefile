# The two commands a newcomer needs:
#   make demo   - the end-to-end demo (local Kafka, router, members, per-MOU feeds)
#   make test   - set up everything on a fresh machine and run unit + integration tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-check install kafka promtool browser lint unit integration clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Fetch Apache Kafka's jars from Maven Central once (or check KAFKA_HOME).
kafka: install
	$(BIN)/action-broker kafka fetch

# promtool (Debian's prometheus package) checks and unit-tests the alert rules.
promtool:
	@command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package for promtool"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null \
	  || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }; }
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests.yml

# Debian's chromium and its chromedriver, for the workspace's browser tests (tests/browser).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null \
	  || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null; }; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

# The integration tier starts its own Kafka unless ACTION_KAFKA_BOOTSTRAP names one.
integration: kafka
	$(BIN)/pytest tests/integration

test: lint kafka promtool browser
	$(BIN)/pytest tests
	$(BIN)/python -m demo --check

# The demo: local Kafka, router, members publishing, feeds differing per MOU. Ctrl-C stops.
demo: kafka
	$(BIN)/python -m demo

# The same scenario without interaction, every feed checked against the policy engine.
demo-check: kafka
	$(BIN)/python -m demo --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
