"""The exceptions horde-replica-sync raises, rooted at one base class.

    ReplicaSyncError
    ├── ConfigError            bad settings; the CLI exits 78 before any I/O
    ├── LockHeldError          another process owns the replica directory
    ├── SourceError            a source could not deliver one file (carries the URL)
    │   ├── SourceUnavailable  connection error, timeout, 5xx, 429, redirect: try the fallback
    │   └── SourceRejected     the source answered, but not with data (422, other 4xx)
    ├── InvalidPayload         the body is not what readers can load; nothing is published
    │   └── ShrinkRefused      the body would drop too many records
    └── StoreError             the replica or state directory could not be written

The sync engine catches `ReplicaSyncError` per category, so one bad category never stops
the others; anything else is a bug and propagates.
"""

from __future__ import annotations

from typing import Literal

SourceName = Literal["primary", "github"]

# Every `kind` an error can carry: a bounded label set for metrics (pre-created at 0).
ERROR_KINDS = (
    "timeout",
    "connection",
    "http_5xx",
    "rate_limited",
    "http_4xx",
    "redirect",
    "oversize",
    "unknown_category",
    "unavailable",
    "invalid",
    "shrink",
    "store",
    "run_timeout",
)


class ReplicaSyncError(Exception):
    """Base class of every error this package raises on purpose."""

    kind: str = "error"  # a bounded label for metrics
    source: SourceName | None = None  # the source to blame, when there is one


class ConfigError(ReplicaSyncError):
    """Raised by the settings loader when a setting breaks its rule."""


class LockHeldError(ReplicaSyncError):
    """Raised by the store when another process holds the replica's lock."""


class SourceError(ReplicaSyncError):
    """Raised by a source when one URL did not deliver a body."""

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        kind: str = "unavailable",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.url = url
        self.reason = reason
        self.kind = kind  # timeout, connection, http_5xx, rate_limited, ...
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{url}: {reason}")


class SourceUnavailable(SourceError):
    """The source could not be reached or asked us to back off; a fallback may help."""


class SourceRejected(SourceError):
    """The source answered with a definite refusal (e.g. 422: unknown category)."""


class InvalidPayload(ReplicaSyncError):
    """Raised by validation when a body must not replace the published copy."""

    kind = "invalid"

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


class ShrinkRefused(InvalidPayload):
    """The body is valid but would drop more records than the shrink guard allows."""

    kind = "shrink"


class StoreError(ReplicaSyncError):
    """Raised by the store when a file or the state could not be written."""

    kind = "store"
