"""The image's HEALTHCHECK: GET /healthz where `run` binds `metrics_addr`; exit 0 if it is 200.

`python -m horde_replica_sync.healthcheck`, or `horde-replica-sync healthcheck`. The settings
come from the environment and the config file, as `run` reads them; when another setting is
broken there since the daemon started (it refuses such a reload and runs on), `metrics_addr`
alone is read, so a refused reload never turns a live daemon unhealthy. Kept to the settings and
the probe: it starts in about half the time of the whole command line (which imports the sync
engine), and under load start-up is most of a check's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Final

from horde_replica_sync.config import (
    FLAGS,
    Settings,
    find_config_file,
    load_settings,
    our_variable,
    split_host_port,
)
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.health import probe, probe_url

TIMEOUT_SECONDS: Final = 6.0
"""The probe's own bound; the HEALTHCHECK's --timeout adds the interpreter's start-up."""
EXIT_HEALTHY: Final = 0
EXIT_UNHEALTHY: Final = 1  # what Docker and podman read as unhealthy
EXIT_CONFIG: Final = 78


def check(settings: Settings) -> int:
    """Probe /healthz where the daemon binds; say why on stderr when it is not healthy."""
    return check_address(*settings.metrics_host_port)


def check_address(host: str, port: int) -> int:
    """Probe /healthz on a server bound to HOST:PORT."""
    url = probe_url(host, port)
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
    flag = FLAGS["metrics_addr"]
    parser.add_argument(
        flag.name, dest="metrics_addr", metavar=flag.metavar, help="as given to `run`"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, load the settings and check."""
    parser = argparse.ArgumentParser(
        prog="python -m horde_replica_sync.healthcheck", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    overrides = {} if args.metrics_addr is None else {"metrics_addr": args.metrics_addr}
    try:
        config_file = find_config_file(args.config)
        return check(load_settings(config_file, **overrides))
    except ConfigError as exc:
        # A setting broken since the daemon started (a reload it refused) leaves it running on
        # the settings it started with: probe its metrics_addr alone rather than call it dead.
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        try:
            return check_address(*metrics_addr_alone(args.config, args.metrics_addr))
        except ConfigError as alone:
            print(f"horde-replica-sync: {alone}", file=sys.stderr)
            return EXIT_CONFIG


def metrics_addr_alone(config: Path | None, flag: str | None) -> tuple[str, int]:
    """`metrics_addr` alone, from the first of the flag, our variable and the config file that
    sets it (their precedence in `run`), else its default; validated as `run` validates it."""
    value = flag
    if value is None and (name := our_variable("metrics_addr")):
        value = os.environ[name]
    if value is None:
        try:
            config_file = find_config_file(config)
            if config_file is not None:
                with config_file.open("rb") as f:
                    value = tomllib.load(f).get("metrics_addr")
        except (OSError, tomllib.TOMLDecodeError, ConfigError):
            value = None
    default: str = Settings.model_fields["metrics_addr"].default
    try:
        return split_host_port(value if isinstance(value, str) else default)
    except ValueError as exc:
        msg = f"invalid setting metrics_addr: {exc}"
        raise ConfigError(msg) from exc


if __name__ == "__main__":
    raise SystemExit(main())
