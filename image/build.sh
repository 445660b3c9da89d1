#!/usr/bin/env bash
# Builds the Dockerfile into $IMAGE with podman (or docker where podman is absent).
#   IMAGE         tag to build (default localhost/horde-replica-sync:latest)
#   PYTHON_IMAGE  base image build argument (default: the Dockerfile's python:3.11-slim-bookworm,
#                 or, when that can be neither found nor pulled, `local`, saying so;
#                 `local`: a Debian base made here by image/base.sh, reused while its inputs hold)
#   EXTRA_CA      a PEM file the build's pip trusts too (a build secret, never in the image)
#   ENGINE        podman or docker (default: podman if installed, else docker)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null; then ENGINE=podman; else ENGINE=docker; fi
fi
if [ "$ENGINE" = podman ]; then export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/image/containers.conf}; fi
IMAGE=${IMAGE:-localhost/horde-replica-sync:latest}
if [ -z "${PYTHON_IMAGE:-}" ]; then
    # The Dockerfile's default base; offline (no registry) the build would fail on it with a raw
    # DNS error, so fall back to the local base, as `make image-test` does.
    official=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
    if ! "$ENGINE" image inspect "$official" >/dev/null 2>&1 \
        && ! pulled=$("$ENGINE" pull --quiet "$official" 2>&1 >/dev/null); then
        echo "cannot pull $official ($(printf '%s\n' "$pulled" | tail -n 1)): building on a" \
            "local Debian base" \
            "(PYTHON_IMAGE=local); pass PYTHON_IMAGE=<your mirror>/$official to use a mirror" >&2
        PYTHON_IMAGE=local
    fi
fi
if [ "${PYTHON_IMAGE:-}" = local ]; then PYTHON_IMAGE=$(ENGINE=$ENGINE image/base.sh); fi
# OCI labels: the one version (the package's), the commit, the build time.
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' daemon/horde_replica_sync/__init__.py)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then revision+="-dirty"; fi
args=(build --tag "$IMAGE" --build-arg "VERSION=$version" --build-arg "REVISION=$revision"
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ -n "${PYTHON_IMAGE:-}" ]; then args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"); fi
if [ -n "${EXTRA_CA:-}" ]; then args+=(--secret "id=extra_ca,src=$EXTRA_CA"); fi
case "$ENGINE" in
    podman)
        # docker format keeps HEALTHCHECK (OCI has no field for it); host network: no bridge,
        # no CNI setup, the build reaches package indexes the way the host does.
        args+=(--format docker --network host)
        ;;
    docker) export DOCKER_BUILDKIT=1 ;;  # secrets need BuildKit (the default since Docker 23)
esac
started=$SECONDS
"$ENGINE" "${args[@]}" .
echo "built $IMAGE with $ENGINE in $((SECONDS - started)) s" >&2
