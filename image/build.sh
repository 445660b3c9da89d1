#!/usr/bin/env bash
# Builds the Dockerfile into $IMAGE with podman (or docker where podman is absent).
#   IMAGE         tag to build (default localhost/horde-replica-sync:latest)
#   PYTHON_IMAGE  base image build argument (default: the Dockerfile's python:3.11-slim-bookworm;
#                 `local`: a Debian base made here by image/base.sh, reused while its inputs hold)
#   EXTRA_CA      a PEM file the build's pip trusts too (a build secret, never in the image)
#   ENGINE        podman or docker (default: podman if installed, else docker)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null; then ENGINE=podman; else ENGINE=docker; fi
fi
IMAGE=${IMAGE:-localhost/horde-replica-sync:latest}
if [ "${PYTHON_IMAGE:-}" = local ]; then PYTHON_IMAGE=$(ENGINE=$ENGINE image/base.sh); fi
args=(build --tag "$IMAGE")
if [ -n "${PYTHON_IMAGE:-}" ]; then args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"); fi
if [ -n "${EXTRA_CA:-}" ]; then args+=(--secret "id=extra_ca,src=$EXTRA_CA"); fi
case "$ENGINE" in
    podman)
        export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/image/containers.conf}
        # docker format keeps HEALTHCHECK (OCI has no field for it); host network: no bridge,
        # no CNI setup, the build reaches package indexes the way the host does.
        args+=(--format docker --network host)
        ;;
    docker) export DOCKER_BUILDKIT=1 ;;  # secrets need BuildKit (the default since Docker 23)
esac
started=$SECONDS
"$ENGINE" "${args[@]}" .
echo "built $IMAGE with $ENGINE in $((SECONDS - started)) s" >&2
