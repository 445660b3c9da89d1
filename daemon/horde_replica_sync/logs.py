"""structlog setup and the canonical log lines of a sync run.

JSON lines when stderr is not a terminal (journald, containers), a readable console
otherwise. One event per category and layer per run, plus one per run.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from horde_replica_sync.report import SyncReport


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
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def log_report(report: SyncReport) -> None:
    """Log one event per category and layer, then one for the run."""
    log = structlog.get_logger("horde_replica_sync.sync")
    for result in report.results:
        method = log.info if result.outcome.ok else log.warning
        method(
            "sync.category_done",
            category=result.category.value,
            layer=result.layer.value,
            outcome=result.outcome.value,
            source=result.source or ("cache" if result.cache_hit else None),
            miss=result.miss,
            bytes_downloaded=result.bytes_downloaded,
            bytes_written=result.bytes_written,
            duration_seconds=round(result.duration_seconds, 4),
            error=result.error,
        )
    log.info(
        "sync.run_done",
        ok=report.ok,
        forced=report.forced,
        dry_run=report.dry_run,
        failed=len(report.failed),
        duration_seconds=round(report.duration_seconds, 4),
        primary_error=report.primary_error,
        metadata_unusable=[c.value for c in report.metadata_unusable] or None,
        state_error=report.state_error,
    )
