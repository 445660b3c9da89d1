"""The image's HEALTHCHECK: GET /healthz where `run` binds `metrics_addr`; exit 0 if it is 200.

`python -m horde_replica_sync.healthcheck`, or `horde-replica-sync healthcheck`. The settings
come from the environment and the config file, as `run` reads them. Kept to the settings and
the probe: it starts in about half the time of the whole command line (which imports the sync
engine), and under load start-up is most of a check's time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Final

from horde_replica_sync.config import Settings, find_config_file, load_settings
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.health import probe, probe_url

TIMEOUT_SECONDS: Final = 4.0
"""The probe's own bound; the HEALTHCHECK's --timeout adds the interpreter's start-up."""
EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 1  # what Docker and podman read as unhealthy
EXIT_CONFIG: Final = 78


def check(settings: Settings) -> int:
    """Probe /healthz where the daemon binds; say why on stderr when it is not healthy."""
    url = probe_url(*settings.metrics_host_port)
    try:
        status, body = probe(url, TIMEOUT_SECONDS)
    except OSError as exc:
        problem = f"did not answer ({exc})"
    else:
        if status == HTTPStatus.OK:
            return EXIT_HEALTHY
        problem = f"answered {status}: {body.decode(errors='replace').strip()}"  # what is stuck
    print(f"horde-replica-sync: {url} {problem}", file=sys.stderr)
    return EXIT_UNHEALTHY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings a check may need beyond the environment."""
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--metrics-addr", metavar="HOST:PORT", help="as given to `run`")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, load the settings and check."""
    parser = argparse.ArgumentParser(
        prog="python -m horde_replica_sync.healthcheck", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    overrides = {} if args.metrics_addr is None else {"metrics_addr": args.metrics_addr}
    try:
        settings = load_settings(find_config_file(args.config), **overrides)
    except ConfigError as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return check(settings)


if __name__ == "__main__":
    raise SystemExit(main())
