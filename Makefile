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

.PHONY: help venv run demo docs lint format test tools peer sdk readers chaos bench clean image image-tools image-test

help:
	@echo "make run    set up and run horde-replica-sync with the documented defaults"
	@echo "make demo   offline: the real upstream PRIMARY on 127.0.0.1 and the daemon syncing from it"
	@echo "make docs   regenerate docs/configuration.md's settings table from Settings"
	@echo "make test   set up and run the whole test suite (starts the real upstream PRIMARY)"
	@echo "make lint   ruff + mypy --strict"
	@echo "make chaos  crash-consistency harness: SIGKILL syncs at random moments (KILLS=200)"
	@echo "make bench  measure against the real upstream PRIMARY and upstream's own client"
	@echo "make image  build the container image (podman, or docker where podman is absent)"
	@echo "make image-test  build the image and smoke-test it against the real upstream PRIMARY"

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/horde-replica-sync run $(ARGS)

# Offline: the real upstream PRIMARY from $(SHARED)/peer on 127.0.0.1, a sync, status, then
# the daemon until Ctrl-C (DEMO_SECONDS=N stops it after N s).
demo: $(STAMP) peer
	BIN=$(BIN) scripts/demo.sh

docs: $(STAMP)
	$(BIN)/python -m scripts.config_doc

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

# The reader matrix (docs/readers.md) runs more readers, each in its own cached venv:
# horde_model_reference 0.9.2 and horde-engine 7.12.0's model managers.
readers:
	@bash scripts/reader_venv.sh hmr-0.9.2 >/dev/null
	@bash scripts/reader_venv.sh horde-engine-7.12.0 >/dev/null

# Debian tools the tests drive for real: promtool/prometheus, systemd-analyze, /bin/kill, nginx
# (the site cache; /usr/sbin is not on every user's PATH), faketime (libfaketime steps a
# daemon's wall clock).
tools:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v faketime >/dev/null 2>&1 || missing="$$missing faketime"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	[ -x /bin/kill ] || missing="$$missing procps"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

test: $(STAMP) peer sdk readers tools
	$(BIN)/pytest $(PYTEST_ARGS)

# The container image. podman is configured by image/containers.conf (CONTAINERS_CONF), never
# by the host's files. PYTHON_IMAGE= the base (empty: the Dockerfile's python:3.11-slim-bookworm);
# EXTRA_CA= a PEM file the build trusts too (default: the host's bundle; empty: none).
IMAGE ?= localhost/horde-replica-sync:latest
PYTHON_IMAGE ?=
EXTRA_CA ?= $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt))
export CONTAINERS_CONF ?= $(abspath image/containers.conf)

# A daemonless engine (podman, runc) and debootstrap for a local base image, when missing.
image-tools:
	@missing=""; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	command -v debootstrap >/dev/null 2>&1 || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

image: image-tools
	IMAGE="$(IMAGE)" PYTHON_IMAGE="$(PYTHON_IMAGE)" EXTRA_CA="$(EXTRA_CA)" image/build.sh

# Builds the image (on a local debootstrap base, cached by its inputs, where the official base
# cannot be pulled) and runs it against the real upstream PRIMARY: tests/image.
image-test: $(STAMP) peer image-tools
	PYTHON_IMAGE="$(PYTHON_IMAGE)" EXTRA_CA="$(EXTRA_CA)" $(BIN)/pytest -v -m image tests/image $(PYTEST_ARGS)

# The fronts in scripts/ import the harness from tests/: run as modules from the project root.
KILLS ?= 200
chaos: $(STAMP)
	$(BIN)/python -m scripts.chaos --kills $(KILLS)

bench: $(STAMP) peer
	$(BIN)/python -m scripts.bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
