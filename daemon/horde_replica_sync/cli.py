"""Command line: `horde-replica-sync sync --once` (more commands arrive with the daemon).

Exit codes (sysexits): 0 every category fine; 75 some category failed or was refused but
the replica is consistent (or another process holds the replica); 78 configuration error;
1 anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from horde_replica_sync import __version__, logs
from horde_replica_sync.config import Settings, load_settings
from horde_replica_sync.errors import ConfigError, LockHeldError, ReplicaSyncError
from horde_replica_sync.runtime import RunFlags, open_engine
from horde_replica_sync.sync import SyncReport

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_TEMPFAIL: Final = 75
EXIT_CONFIG: Final = 78

log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    logs.configure()
    try:
        settings = load_settings(args.config, **_overrides(args))
    except ConfigError as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    flags = RunFlags(force=args.force, dry_run=args.dry_run, allow_shrink=args.allow_shrink)
    try:
        report = asyncio.run(_sync_once(settings, flags))
    except LockHeldError as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except ReplicaSyncError as exc:
        print(f"horde-replica-sync: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    print(render_report(report))
    return EXIT_OK if report.ok else EXIT_TEMPFAIL


async def _sync_once(settings: Settings, flags: RunFlags) -> SyncReport:
    async with open_engine(settings, flags) as engine:
        if flags.dry_run:  # writes nothing, so it needs no lock
            report = await engine.run(force=flags.force)
        else:
            with engine.store.locked():
                for stale in engine.store.remove_stale_temps():
                    log.info("store.stale_temp_removed", path=str(stale))
                report = await engine.run(force=flags.force)
    logs.log_report(report)
    return report


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
    mode = " (dry run: nothing written)" if report.dry_run else ""
    lines.append(f"sync {verdict} in {report.duration_seconds:.2f} s{mode}")
    return "\n".join(lines)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in ("primary_url", "github_url", "replica_dir", "state_dir", "categories"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.no_primary:
        overrides["use_primary"] = False
    if args.no_fallback:
        overrides["github_fallback"] = False
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horde-replica-sync",
        description="Keep a local replica of the AI Horde model reference fresh.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("sync", help="sync the replica once and exit with the result")
    sync.add_argument("--once", action="store_true", required=True, help="run one sync and exit")
    _add_source_flags(sync)
    sync.add_argument("--force", action="store_true", help="re-download and re-verify everything")
    sync.add_argument("--dry-run", action="store_true", help="fetch and validate; write nothing")
    sync.add_argument(
        "--allow-shrink",
        action="store_true",
        help="publish payloads that drop most records (overrides the shrink guard)",
    )
    return parser


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--primary-url", help="PRIMARY API base, including /api")
    parser.add_argument("--github-url", help="raw GitHub base URL (a proxy or mirror works)")
    parser.add_argument("--no-fallback", action="store_true", help="PRIMARY only, no GitHub")
    parser.add_argument("--no-primary", action="store_true", help="GitHub only")
    parser.add_argument("--replica-dir", type=Path, help="the replica directory readers load")
    parser.add_argument("--state-dir", type=Path, help="where state.json lives")
    parser.add_argument("--categories", help="comma-separated categories (default: all)")
