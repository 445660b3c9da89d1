"""Deployment artefacts: systemd units, the Dockerfile, example config, Prometheus rules."""
