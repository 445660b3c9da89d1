"""structlog setup and the canonical log lines of a sync run.

JSON lines when stderr is not a terminal (journald, containers), a readable console
otherwise. See `RunLog` for what a run logs.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

import structlog

from horde_replica_sync.errors import ErrorKind, NoSource, by_origin, root_cause
from horde_replica_sync.report import Outcome, SyncReport


def configure(
    *, stream: TextIO | None = None, json: bool | None = None, level: int = logging.INFO
) -> None:
    """Send structured logs to `stream` (stderr), as JSON unless it is a terminal."""
    stream = stream or sys.stderr
    use_json = not stream.isatty() if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_userinfo,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


# The last line of defence behind `redact.redact_url`: a traceback or a third-party message
# may quote a URL we never saw, so any `scheme://userinfo@` in a log line loses its userinfo.
# Up to the last `@` of the URL: a careless password may hold an unescaped "/".
_USERINFO: Final = re.compile(r"(?<=://)(?:[^\s@'\"]*@)+")


def _scrub_userinfo(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = _USERINFO.sub("***@", value)
    return event


LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class RunLog:
    """The log of successive runs, written to read like a diagnosis.

    Per layer, only what changed is logged at info (`sync.category_done` of an update); what
    stayed the same and each failure's detail are debug. An outage (what is down and why) is
    logged when it starts, when it changes and when it ends, not once per run, so a host with
    no network logs a handful of lines instead of dozens a minute. One `sync.run_done` per run.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._outage: frozenset[tuple[str, str]] = frozenset()
        self._since: float | None = None

    def report(self, report: SyncReport, *, next_attempt_seconds: float | None = None) -> None:
        """Log one finished run."""
        log = structlog.get_logger("horde_replica_sync.sync")
        for result in report.results:
            method = log.info if result.outcome is Outcome.UPDATED else log.debug
            method(
                "sync.category_done",
                category=result.category.value,
                layer=result.layer.value,
                outcome=result.outcome.value,
                source=result.source or (NoSource.CACHE if result.cache_hit else None),
                miss=result.miss,
                bytes_downloaded=result.bytes_downloaded,
                bytes_written=result.bytes_written,
                duration_seconds=round(result.duration_seconds, 4),
                error=result.error,
            )
            if result.older_answer:
                log.warning(
                    "sync.older_answer", category=result.category.value, detail=result.older_answer
                )
        self._outage_changes(log, report, next_attempt_seconds)
        log.info(
            "sync.run_done",
            ok=report.ok,
            forced=report.forced,
            dry_run=report.dry_run,
            updated=sum(r.outcome is Outcome.UPDATED for r in report.results),
            failed=len(report.failed),
            duration_seconds=round(report.duration_seconds, 4),
            primary_error=report.primary_error,
            metadata_unusable=[c.value for c in report.metadata_unusable] or None,
            state_error=report.state_error,
        )

    def _outage_changes(
        self, log: Any, report: SyncReport, next_attempt_seconds: float | None
    ) -> None:
        outage = _outage_of(report)
        if outage == self._outage:
            return
        now = self._clock()
        if not outage:
            lasted = None if self._since is None else round(now - self._since, 1)
            log.info("sync.outage_ended", lasted_seconds=lasted)
            self._outage, self._since = outage, None
            return
        failed = report.failed
        everything = len(failed) == len(report.results)
        log.warning(
            "sync.outage",
            state="started" if not self._outage else "changed",
            # Said in plain words first: the one thing an operator must know.
            workers=NOTHING_SERVED if report.nothing_served else None,
            down=sorted(f"{source}: {kind}" for source, kind in outage),
            layers_failing=f"all {len(failed)}"
            if everything
            else sorted(f"{r.category.value}/{r.layer.value}" for r in failed),
            reason=_root_causes(report) or _blind(report),
            next_attempt_in_seconds=next_attempt_seconds,
        )
        self._outage = outage
        self._since = now if self._since is None else self._since


NOTHING_SERVED: Final = "have no model reference yet: nothing is published and no source delivered"
MAX_CAUSES: Final = 3


def _root_causes(report: SyncReport) -> str | None:
    """The run's failures cut to their root causes (the PRIMARY's first), one per server and
    what happened, with how many more URLs failed alike; each layer's full error is in its
    `sync.category_done` at debug."""
    errors = [report.primary_error, *(r.error for r in report.failed)]
    alike: dict[str, list[str]] = {}
    for cause in (root_cause(e) for e in errors if e):
        urls = alike.setdefault(by_origin(cause), [])
        if cause not in urls:
            urls.append(cause)
    causes = [
        urls[0] + (f" (+{len(urls) - 1} more like it)" if len(urls) > 1 else "")
        for urls in alike.values()
    ]
    more = f" (+{len(causes) - MAX_CAUSES} more)" if len(causes) > MAX_CAUSES else ""
    return "; ".join(causes[:MAX_CAUSES]) + more if causes else None


def _blind(report: SyncReport) -> str | None:
    """Why change detection was blind this run (the metadata), else the state's error."""
    if report.metadata_error_kind is not None:
        reason = next(iter(report.metadata_unusable.values()), "")
        return f"the PRIMARY's metadata is unusable, so the cache TTL decides: {reason}"
    if report.metadata_unusable:
        entries = "; ".join(f"{c.value}: {why}" for c, why in report.metadata_unusable.items())
        return f"metadata entries unusable, so the cache TTL decides for them: {entries}"
    return report.state_error


def _outage_of(report: SyncReport) -> frozenset[tuple[str, str]]:
    """What is down, as (source, reason) pairs; empty when nothing is."""
    local = NoSource.LOCAL.culprit
    down: set[tuple[str, str]] = {
        (r.error_source or local, r.error_kind or ErrorKind.ERROR) for r in report.failed
    }
    if report.primary_error_kind is not None:
        down.add(("primary", report.primary_error_kind))
    if report.metadata_error_kind is not None:  # answering, but blind to changes
        down.add(("primary", report.metadata_error_kind))
    elif report.metadata_unusable:  # blind to these categories' changes: one outage for all
        blind = ",".join(sorted(c.value for c in report.metadata_unusable))
        down.add(("primary metadata", f"{ErrorKind.INVALID} ({blind})"))
    if report.state_error is not None:
        down.add((local, ErrorKind.STORE))
    return frozenset(down)
