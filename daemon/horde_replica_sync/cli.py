"""Command line: `run`, `sync --once`, `status`, `check-config`.

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

from horde_replica_sync import __version__, early, logs, status
from horde_replica_sync.config import Settings, find_config_file, load_settings, provenance
from horde_replica_sync.errors import ConfigError, ReplicaSyncError, ReplicaUnusable
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


def _cmd_status(args: argparse.Namespace, settings: Settings, *_: Any) -> int:
    rows = status.collect(settings)
    print(status.render_json(rows) if args.json else status.render_table(rows))
    return EXIT_UNEXPECTED if any(r.problem for r in rows) else EXIT_OK


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
        print(f"# config file: {config_file or 'none found'}")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}  # {origins[key]}")
    return EXIT_OK


async def _sync_once(settings: Settings, flags: RunFlags) -> SyncReport:
    if flags.dry_run:  # writes nothing, so it needs no lock
        report = await _run_once(settings, flags)
    else:
        store = ReplicaStore(settings.replica_dir, settings.effective_state_dir)
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
    """A table of the run for humans; errors name the category, URL and reason."""
    lines = [f"{'category':<21} {'layer':<6} {'outcome':<9} {'source':<7} {'written':>9}  error"]
    for r in report.results:
        source = r.source or ("cache" if r.cache_hit else "-")
        lines.append(
            f"{r.category.value:<21} {r.layer.value:<6} {r.outcome.value:<9} {source:<7} "
            f"{r.bytes_written:>9}  {r.error or ''}".rstrip()
        )
    verdict = "ok" if report.ok else f"{len(report.failed)} failed"
    if report.primary_error:
        verdict += f"; the PRIMARY was unavailable ({report.primary_error})"
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
    return parser


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--primary-url", help="PRIMARY API base, including /api")
    parser.add_argument("--github-url", help="raw GitHub base URL (a proxy or mirror works)")
    parser.add_argument("--no-fallback", action="store_true", help="PRIMARY only, no GitHub")
    parser.add_argument("--no-primary", action="store_true", help="GitHub only")
    parser.add_argument("--replica-dir", type=Path, help="the replica directory readers load")
    parser.add_argument("--state-dir", type=Path, help="where state.json lives")
    parser.add_argument(
        "--categories", help="comma-separated categories and catalogs (default: all)"
    )
