"""The exceptions horde-replica-sync raises, rooted at one base class.

    ReplicaSyncError
    ├── ConfigError            bad settings; the CLI exits 78 before any I/O
    ├── LockHeldError          another process owns the replica directory
    ├── InstallError           `install-files` cannot write a deployment file (exit 73)
    ├── SourceError            a source could not deliver one file (carries the URL)
    │   ├── SourceUnavailable  connection, TLS, timeout, 5xx, 429, redirect: try the fallback
    │   └── SourceRejected     the source answered, but not with data (422, other 4xx)
    ├── InvalidPayload         the body is not what readers can load; nothing is published
    │   └── ShrinkRefused      the body would drop too many records
    └── StoreError             the replica or state directory could not be written
        └── ReplicaUnusable    the replica or its lock is unusable until an operator acts

The sync engine catches `ReplicaSyncError` per category, so one bad category never stops
the others; anything else is a bug and propagates. Which source to blame is not a property
of the error: the source chain, which made the call, records it beside the error.
"""

from __future__ import annotations

import enum
import re
from typing import Final
from urllib.parse import urlsplit

from horde_replica_sync.redact import redact_url


class SourceName(enum.StrEnum):
    """Where a body came from (a bounded metrics label)."""

    PRIMARY = "primary"
    GITHUB = "github"


class NoSource(enum.StrEnum):
    """What a result names where a `SourceName` would stand, when no source was involved.

    One place for these spellings; each keeps the one operators already see in its output.
    """

    CACHE = "cache"  # the REPLICA backend's cache answered: nothing fetched (run table, log)
    LOCAL = "none"  # an error no source caused, e.g. the state file (fetch_errors' label)

    @property
    def culprit(self) -> str:
        """Who is down, as the outage line names it: an error no source caused is the
        replica's own (its directory or state file)."""
        return "replica" if self is NoSource.LOCAL else self.value


class ErrorKind(enum.StrEnum):
    """Why a fetch, a layer or a run failed (a bounded metrics label, pre-created at 0)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"  # certificate not trusted, or the handshake failed
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    HTTP_4XX = "http_4xx"
    REDIRECT = "redirect"
    OVERSIZE = "oversize"
    UNKNOWN_CATEGORY = "unknown_category"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"
    SHRINK = "shrink"
    STORE = "store"
    RUN_TIMEOUT = "run_timeout"
    UNPROVEN_ABSENCE = (
        "unproven_absence"  # 404 from a server that showed no sign of being a PRIMARY
    )
    VANISHED = "vanished"  # data we held is gone upstream; the last good copy is kept
    ERROR = "error"


class ReplicaSyncError(Exception):
    """Base class of every error this package raises on purpose."""

    kind: ErrorKind = ErrorKind.ERROR


class ConfigError(ReplicaSyncError):
    """Raised by the settings loader when a setting breaks its rule."""


class InstallError(ReplicaSyncError):
    """Raised by `install-files` when a file exists with other content, or cannot be written."""


class LockHeldError(ReplicaSyncError):
    """Raised by the store when another process holds the replica's lock."""


class SourceError(ReplicaSyncError):
    """Raised by a source when one URL did not deliver a body.

    `url` is redacted (no credentials, no query values): the error is logged and stored.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        kind: ErrorKind = ErrorKind.UNAVAILABLE,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.url = redact_url(url)
        self.reason = reason
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{self.url}: {reason}")


class SourceUnavailable(SourceError):
    """The source could not be reached or asked us to back off; a fallback may help."""


class SourceRejected(SourceError):
    """The source answered with a definite refusal (e.g. 422: unknown category)."""


class InvalidPayload(ReplicaSyncError):
    """Raised by validation when a body must not replace the published copy."""

    kind = ErrorKind.INVALID

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class ShrinkRefused(InvalidPayload):
    """The body is valid but would drop more records than the shrink guard allows."""

    kind = ErrorKind.SHRINK


class StoreError(ReplicaSyncError):
    """Raised by the store when a file or the state could not be written."""

    kind = ErrorKind.STORE


class ReplicaUnusable(StoreError):
    """Raised by the store when the replica directory or its lock file cannot be used (not a
    directory, not writable, a symlink or FIFO lock): permanent, so the CLI exits 73."""


# How the engine nests one failure in another (chain.py): GitHub's error carries the PRIMARY's
# that sent it there, a skipped request the run's PRIMARY outage, a transport error the
# library's exception. An operator needs the innermost "URL: what happened" only.
_FALLBACK_TAIL: Final = " (GitHub fallback, after the PRIMARY was unavailable: "
_SKIPPED: Final = re.compile(r"^.+?: skipped: the PRIMARY is unavailable this run \((.*)\)$")
_EXCEPTION_DETAIL: Final = re.compile(r" \([A-Z][A-Za-z]*(?:Error|Exception|Timeout)\b[^()]*\)$")


def root_cause(error: str) -> str:
    """The root of a nested error message: `URL: what happened`, without the chain of
    fallbacks and the library's exception (those stay in the log and `status --json`)."""
    text = error.partition(_FALLBACK_TAIL)[0]
    while (skipped := _SKIPPED.match(text)) is not None:
        text = skipped.group(1)
    while (detail := _EXCEPTION_DETAIL.search(text)) is not None:
        text = text[: detail.start()]
    return text


def by_origin(cause: str) -> str:
    """`http://host:port/long/path: what` -> `http://host:port: what`: one line per server."""
    url, sep, what = cause.partition(": ")
    parts = urlsplit(url)
    if not sep or parts.scheme not in ("http", "https"):
        return cause
    return f"{parts.scheme}://{parts.netloc}: {what}"
