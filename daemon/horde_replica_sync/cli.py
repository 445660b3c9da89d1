"""Command line: `run`, `sync --once`, `status`, `check-config`, `install-files`.

Exit codes (sysexits): 0 fine; 75 some category failed or was refused but the replica is
consistent, or another process holds the replica (temporary: retrying helps); 73 the replica
directory or its lock file is unusable (permanent until an operator fixes it); 78
configuration error; 1 anything unexpected. `status` exits 1 when a layer is missing or stale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from horde_replica_sync import __version__, deploy, early, logs, status
from horde_replica_sync.config import (
    Settings,
    find_config_file,
    load_settings,
    provenance,
    resolved_paths,
)
from horde_replica_sync.errors import (
    ConfigError,
    InstallError,
    ReplicaSyncError,
    ReplicaUnusable,
    root_cause,
)
from horde_replica_sync.hook import HookCommand, HookResult, run_hook
from horde_replica_sync.report import SyncReport
from horde_replica_sync.runtime import RunFlags, open_engine
from horde_replica_sync.store import ReplicaStore

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_CANTCREAT: Final = 73  # sysexits: "a (user specified) output file cannot be created"
EXIT_TEMPFAIL: Final = 75
EXIT_CONFIG: Final = 78

ON_CHANGE_HELP: Final = "command to run after a sync published changes (no shell)"

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.handler is not _cmd_run:  # only the daemon defers signals until it is up
        early.release()
    if args.command == "install-files":  # needs no settings: a broken config must not stop it
        return _cmd_install_files(args)
    logs.configure()
    overrides = _overrides(args)
    try:
        config_file = find_config_file(args.config)
        settings = load_settings(config_file, **overrides)
    except ConfigError as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(level=logs.LEVELS[settings.log_level])
    command: Callable[..., int] = args.handler
    if command is _cmd_sync:  # stdout is the run's table: where it goes is context, on stderr
        for line in _where(settings, config_file, overrides):
            print(line, file=sys.stderr)
    try:
        return command(args, settings, lambda: load_settings(config_file, **overrides), config_file)
    except ConfigError as exc:  # e.g. the metrics address is taken
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ReplicaUnusable as exc:  # e.g. the lock file is a symlink: restarting cannot help
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    except ReplicaSyncError as exc:  # e.g. the replica is locked by another process
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except Exception:
        log.exception("unexpected_error")
        return EXIT_UNEXPECTED


# -- commands ------------------------------------------------------------------------------


def _cmd_run(
    args: argparse.Namespace, settings: Settings, reload: Callable[[], Settings], *_: Any
) -> int:
    from horde_replica_sync.daemon import Daemon  # the daemon's imports serve `run` only

    return asyncio.run(Daemon(settings, reload_settings=reload).serve())


def _cmd_sync(args: argparse.Namespace, settings: Settings, *_: Any) -> int:
    flags = RunFlags(force=args.force, dry_run=args.dry_run, allow_shrink=args.allow_shrink)
    report = asyncio.run(_sync_once(settings, flags))
    print(render_report(report))
    hook_ok = _run_hook_once(settings, report)
    return EXIT_OK if report.ok and hook_ok else EXIT_TEMPFAIL


def _run_hook_once(settings: Settings, report: SyncReport) -> bool:
    """After publishing changes, run the on-change hook and wait for it (never in a dry run;
    the lock is released first). False when it did not succeed."""
    command = HookCommand.from_settings(settings)
    if command is None or report.dry_run or not report.changed:
        return True
    run = asyncio.run(run_hook(command, report.changed))
    if run.result is HookResult.OK:
        return True
    print(f"on-change hook failed ({run.result.value}): {run.error or run.output_tail.strip()}")
    return False


def _cmd_status(
    args: argparse.Namespace, settings: Settings, _: Any, config_file: Path | None
) -> int:
    rows = status.collect(settings)
    paths = resolved_paths(settings, config_file, provenance(config_file, _overrides(args)))
    if args.json:
        print(status.render_json(rows, paths))
    else:
        print("\n".join([*_where(settings, config_file, _overrides(args)), ""]))
        print(status.render_table(rows))
    return EXIT_UNEXPECTED if any(r.problem for r in rows) else EXIT_OK


def _where(settings: Settings, config_file: Path | None, overrides: dict[str, Any]) -> list[str]:
    """`replica: …`, `state: …`, `config: …` lines: what this command reads and why."""
    paths = resolved_paths(settings, config_file, provenance(config_file, overrides))
    return [f"{name + ':':<8} {value}" for name, value in paths.items()]


def _cmd_check_config(
    args: argparse.Namespace, settings: Settings, _: Any, config_file: Path | None
) -> int:
    values = settings.model_dump(mode="json")
    origins = provenance(config_file, _overrides(args))
    if args.json:
        print(
            json.dumps({k: {"value": v, "from": origins[k]} for k, v in values.items()}, indent=2)
        )
    else:
        for line in _where(settings, config_file, _overrides(args)):
            print(f"# {line}")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}  # {origins[key]}")
    return EXIT_OK


def _cmd_install_files(args: argparse.Namespace) -> int:
    try:
        installed = deploy.install_files(args.directory, binary=args.bin, force=args.force)
    except (InstallError, OSError) as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CANTCREAT
    print(render_installed(installed, args.directory))
    return EXIT_OK


def render_installed(installed: deploy.Installed, directory: Path) -> str:
    """What was written, and the commands that turn it into a running service."""
    d = directory.absolute()
    lines = [f"wrote {len(installed.files)} files under {d}; the units start {installed.binary}"]
    lines += [f"  {path}" for path in installed.files]
    if installed.binary_hidden:
        lines.append(
            f"warning: {installed.binary} is under a home directory, which the units' sandbox"
            " hides (ProtectHome=yes): install system-wide (pipx install --global, or a venv"
            " under /opt) or pass --bin with a path outside /home and /root"
        )
    lines += [
        'systemd (as root; README "Run it under systemd"):',
        f"  install -m 0644 {d}/systemd/horde-replica-sync.sysusers.conf"
        " /etc/sysusers.d/horde-replica-sync.conf && systemd-sysusers",
        f"  install -m 0644 {d}/systemd/horde-replica-sync.service /etc/systemd/system/",
        "  systemctl daemon-reload && systemctl enable --now horde-replica-sync",
        f"compose: docker compose -f {d}/config/compose.example.yaml up -d",
    ]
    return "\n".join(lines)


async def _sync_once(settings: Settings, flags: RunFlags) -> SyncReport:
    if flags.dry_run:  # writes nothing, so it needs no lock
        report = await _run_once(settings, flags)
    else:
        store = ReplicaStore(
            settings.replica_dir,
            settings.effective_state_dir,
            max_file_bytes=settings.max_body_bytes,
        )
        with store.locked():
            for stale in store.remove_stale_temps():
                log.info("store.stale_temp_removed", path=str(stale))
            report = await _run_once(settings, flags)
    logs.RunLog().report(report)
    return report


async def _run_once(settings: Settings, flags: RunFlags) -> SyncReport:
    async with open_engine(settings, flags) as engine:
        return await engine.run(force=flags.force)


def render_report(report: SyncReport) -> str:
    """A table of the run for humans; errors cut to their root cause (URL and what happened;
    in full in the log's `sync.category_done` at debug and in `status --json`)."""
    lines = [f"{'category':<21} {'layer':<6} {'outcome':<9} {'source':<7} {'written':>9}  error"]
    for r in report.results:
        source = r.source or ("cache" if r.cache_hit else "-")
        lines.append(
            f"{r.category.value:<21} {r.layer.value:<6} {r.outcome.value:<9} {source:<7} "
            f"{r.bytes_written:>9}  {root_cause(r.error) if r.error else ''}".rstrip()
        )
    verdict = "ok" if report.ok else f"{len(report.failed)} failed"
    if report.primary_error:
        verdict += f"; the PRIMARY was unavailable ({root_cause(report.primary_error)})"
    if report.state_error:
        verdict += f"; the state file could not be saved ({report.state_error})"
    mode = " (dry run: nothing written)" if report.dry_run else ""
    lines.append(f"sync {verdict} in {report.duration_seconds:.2f} s{mode}")
    return "\n".join(lines)


# -- arguments -----------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("primary_url", "github_url", "replica_dir", "state_dir", "categories")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "no_primary", False):
        overrides["use_primary"] = False
    if getattr(args, "no_fallback", False):
        overrides["github_fallback"] = False
    if getattr(args, "interval", None) is not None:
        overrides["interval_seconds"] = args.interval
    if getattr(args, "metrics_addr", None) is not None:
        overrides["metrics_addr"] = args.metrics_addr
    if getattr(args, "on_change", None) is not None:
        overrides["on_change_command"] = args.on_change
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horde-replica-sync",
        description="Keep a local replica of the AI Horde model reference fresh.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon (scheduler, signals, metrics)")
    _add_settings_flags(run)
    run.add_argument("--interval", type=float, metavar="SECONDS", help="sync period (60)")
    run.add_argument("--metrics-addr", metavar="HOST:PORT", help="metrics/health (127.0.0.1:9464)")
    run.add_argument("--on-change", metavar="CMD", help=ON_CHANGE_HELP)
    run.set_defaults(handler=_cmd_run)

    sync = commands.add_parser("sync", help="sync the replica once and exit with the result")
    sync.add_argument("--once", action="store_true", required=True, help="run one sync and exit")
    _add_settings_flags(sync)
    sync.add_argument("--force", action="store_true", help="re-download and re-verify everything")
    sync.add_argument("--dry-run", action="store_true", help="fetch and validate; write nothing")
    sync.add_argument(
        "--allow-shrink",
        action="store_true",
        help="publish payloads that drop most records (overrides the shrink guard)",
    )
    sync.add_argument("--on-change", metavar="CMD", help=ON_CHANGE_HELP)
    sync.set_defaults(handler=_cmd_sync)

    stat = commands.add_parser("status", help="show the replica's state (no daemon needed)")
    _add_settings_flags(stat)
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.set_defaults(handler=_cmd_status)

    check = commands.add_parser("check-config", help="print the effective config and its origins")
    _add_settings_flags(check)
    check.add_argument("--interval", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    check.add_argument("--metrics-addr", metavar="HOST:PORT", help=argparse.SUPPRESS)
    check.add_argument("--on-change", metavar="CMD", help=argparse.SUPPRESS)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_cmd_check_config)

    install = commands.add_parser(
        "install-files",
        help="write the systemd units, example config, alerts and dashboard into DIRECTORY",
    )
    install.add_argument("directory", type=Path, metavar="DIRECTORY")
    install.add_argument(
        "--bin",
        type=Path,
        metavar="PATH",
        help="the console script the units start (default: this installation's)",
    )
    install.add_argument("--force", action="store_true", help="overwrite files that differ")
    install.set_defaults(handler=_cmd_install_files)
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    # Paths stay strings until validated: Path("") would already be ".".
    parser.add_argument("--config", help="TOML settings file")
    parser.add_argument("--primary-url", help="PRIMARY API base, including /api")
    parser.add_argument("--github-url", help="raw GitHub base URL (a proxy or mirror works)")
    parser.add_argument("--no-fallback", action="store_true", help="PRIMARY only, no GitHub")
    parser.add_argument("--no-primary", action="store_true", help="GitHub only")
    parser.add_argument("--replica-dir", help="the replica directory readers load")
    parser.add_argument("--state-dir", help="where state.json lives")
    parser.add_argument("--categories", help="comma-separated categories (default: all)")
