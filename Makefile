# One entry point per check; CI (.ci/run) calls the same targets.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= $(abspath ../shared)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEER_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/horde-model-reference-peer/venv
SDK_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/horde-sdk-consumer/venv
export HRS_SHARED_DIR := $(SHARED)
export PEER_VENV
export SDK_VENV

.PHONY: help venv run lint format test tools peer sdk chaos bench clean

help:
	@echo "make run    set up and run horde-replica-sync with the documented defaults"
	@echo "make test   set up and run the whole test suite (starts the real upstream PRIMARY)"
	@echo "make lint   ruff + mypy --strict"
	@echo "make chaos  crash-consistency harness: SIGKILL syncs at random moments (KILLS=200)"
	@echo "make bench  measure against the real upstream PRIMARY and upstream's own client"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/horde-replica-sync run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check daemon tests scripts
	$(BIN)/ruff check daemon tests scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format daemon tests scripts
	$(BIN)/ruff check --fix daemon tests scripts

# The interop tests drive the real upstream horde-model-reference (Python >= 3.12, own venv).
# Starting it once provisions that venv; the tests start their own instances.
peer:
	@if ! "$(PEER_VENV)/bin/python" -c 'import horde_model_reference, uvicorn' 2>/dev/null; then \
		pid=$$(PEER_DATA_DIR=$$(mktemp -d) "$(SHARED)/peer/start_primary.sh" 19899) && \
		"$(SHARED)/peer/stop_primary.sh" "$$pid"; \
	fi

# The interop tests also run horde-sdk 0.33.3 (a real consumer, Python >= 3.12, own venv).
sdk:
	@bash scripts/sdk_venv.sh >/dev/null

# Debian tools the tests drive for real: promtool/prometheus, systemd-analyze, /bin/kill.
tools:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	[ -x /bin/kill ] || missing="$$missing procps"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

test: $(STAMP) peer sdk tools
	$(BIN)/pytest $(PYTEST_ARGS)

# The fronts in scripts/ import the harness from tests/: run as modules from the project root.
KILLS ?= 200
chaos: $(STAMP)
	$(BIN)/python -m scripts.chaos --kills $(KILLS)

bench: $(STAMP) peer
	$(BIN)/python -m scripts.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
