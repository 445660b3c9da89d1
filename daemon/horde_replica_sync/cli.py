"""Command line: `run`, `sync --once`, `status`, `check-config`, `install-files`,
`healthcheck`.

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
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Final

import structlog

from horde_replica_sync import __version__, deploy, early, healthcheck, logs, status
from horde_replica_sync.catalogs import ALL_NAMES, Name
from horde_replica_sync.config import (
    FLAGS,
    Settings,
    find_config_file,
    load_settings,
    provenance,
    resolved_paths,
)
from horde_replica_sync.errors import (
    ConfigError,
    InstallError,
    NoSource,
    ReplicaSyncError,
    ReplicaUnusable,
    StoreError,
    root_cause,
)
from horde_replica_sync.hook import HookCommand, HookResult, run_hook
from horde_replica_sync.report import SyncReport
from horde_replica_sync.runtime import RunFlags, open_engine
from horde_replica_sync.store import ReplicaStore
from horde_replica_sync.sync import SyncEngine

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_CANTCREAT: Final = 73  # sysexits: "a (user specified) output file cannot be created"
EXIT_TEMPFAIL: Final = 75
EXIT_CONFIG: Final = 78

DAEMON_FLAGS: Final = [key for key, flag in FLAGS.items() if flag.daemon]  # run, check-config

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
    command = None if flags.dry_run else HookCommand.from_settings(settings)
    report, due = asyncio.run(_sync_once(settings, flags, hook=command is not None))
    print(render_report(report))
    hook_ok = command is None or _run_hook_once(settings, command, due)
    return EXIT_OK if report.ok and hook_ok else EXIT_TEMPFAIL


def _run_hook_once(settings: Settings, command: HookCommand, due: frozenset[Name]) -> bool:
    """Run the on-change hook for what is due and wait for it (the lock is released first).
    False when it did not succeed: what it was told stays due for the next invocation."""
    if not due:
        return True
    run = asyncio.run(run_hook(command, due))
    if run.result is HookResult.OK:
        _clear_hook_due(settings, due)
        return True
    print(f"on-change hook failed ({run.result.value}): {run.error or run.output_tail.strip()}")
    return False


def _record_hook_due(engine: SyncEngine, changed: Collection[Name]) -> frozenset[Name]:
    """What the hook must be told: this run's changes and what an earlier invocation's hook
    did not deliver, saved as due before it runs (so a failed or killed hook is retried)."""
    held = frozenset(engine.state.hook_due)
    due = held | frozenset(changed)
    if due != held:
        engine.state.hook_due = [c for c in ALL_NAMES if c in due]
        try:
            engine.publisher.save_state(engine.state, durable=True)
        except StoreError as exc:  # the hook still runs; only a retry after a failure is lost
            log.error("state.save_failed", error=str(exc))
    return due


def _clear_hook_due(settings: Settings, delivered: frozenset[Name]) -> None:
    """Forget what the hook delivered. When the lock is taken meanwhile, the invocation that
    holds it tells the hook again: at least once, as promised."""
    store = ReplicaStore(settings.replica_dir, settings.effective_state_dir)
    try:
        with store.locked():
            state = store.load_state()
            if delivered & set(state.hook_due):
                state.hook_due = [c for c in state.hook_due if c not in delivered]
                store.save_state(state)
    except ReplicaSyncError as exc:
        log.warning("hook.due_not_cleared", error=str(exc))


def _cmd_healthcheck(args: argparse.Namespace, settings: Settings, *_: Any) -> int:
    return healthcheck.check(settings)


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


async def _sync_once(
    settings: Settings, flags: RunFlags, *, hook: bool = False
) -> tuple[SyncReport, frozenset[Name]]:
    """The run's report, and what the on-change hook is due to be told (with `hook`)."""
    if flags.dry_run:  # writes nothing, so it needs no lock
        report, due = await _run_once(settings, flags, hook=False)
    else:
        store = ReplicaStore(
            settings.replica_dir,
            settings.effective_state_dir,
            max_file_bytes=settings.max_body_bytes,
        )
        with store.locked():
            for stale in store.remove_stale_temps():
                log.info("store.stale_temp_removed", path=str(stale))
            report, due = await _run_once(settings, flags, hook=hook)
    logs.RunLog().report(report)
    return report, due


async def _run_once(
    settings: Settings, flags: RunFlags, *, hook: bool
) -> tuple[SyncReport, frozenset[Name]]:
    async with open_engine(settings, flags) as engine:
        report = await engine.run(force=flags.force)
        return report, (_record_hook_due(engine, report.changed) if hook else frozenset())


def render_report(report: SyncReport) -> str:
    """A table of the run for humans; errors cut to their root cause (URL and what happened;
    in full in the log's `sync.category_done` at debug and in `status --json`)."""
    lines = [f"{'category':<21} {'layer':<6} {'outcome':<9} {'source':<7} {'written':>9}  error"]
    for r in report.results:
        source = r.source or (NoSource.CACHE if r.cache_hit else "-")
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
    """The settings given as flags (each flag's destination is its setting's key)."""
    return {key: value for key in FLAGS if (value := getattr(args, key, None)) is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horde-replica-sync",
        description="Keep a local replica of the AI Horde model reference fresh.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the daemon (scheduler, signals, metrics)")
    _add_settings_flags(run)
    _add_flags(run, DAEMON_FLAGS)
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
    _add_flags(sync, ["on_change_command"])
    sync.set_defaults(handler=_cmd_sync)

    stat = commands.add_parser("status", help="show the replica's state (no daemon needed)")
    _add_settings_flags(stat)
    stat.add_argument("--json", action="store_true", help="machine-readable output")
    stat.set_defaults(handler=_cmd_status)

    probe = commands.add_parser(
        "healthcheck", help="exit 0 if the daemon's /healthz answers 200 (container HEALTHCHECK)"
    )
    healthcheck.add_arguments(probe)
    probe.set_defaults(handler=_cmd_healthcheck)

    check = commands.add_parser("check-config", help="print the effective config and its origins")
    _add_settings_flags(check)
    _add_flags(check, DAEMON_FLAGS, hidden=True)
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
    parser.add_argument("--config", help="TOML settings file")
    _add_flags(parser, [key for key, flag in FLAGS.items() if not flag.daemon])


def _add_flags(
    parser: argparse.ArgumentParser, keys: Sequence[str], *, hidden: bool = False
) -> None:
    """The flags of settings `keys` (config.FLAGS), each stored under its setting's key."""
    for key in keys:
        flag = FLAGS[key]
        shown = argparse.SUPPRESS if hidden else flag.help
        if flag.turns_off:
            parser.add_argument(flag.name, dest=key, action="store_const", const=False, help=shown)
        else:
            parser.add_argument(
                flag.name, dest=key, type=flag.type, metavar=flag.metavar, help=shown
            )
