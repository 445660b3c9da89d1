"""The daemon's own bookkeeping: what is published, where it came from, how it went.

Kept in `<state dir>/state.json`, never inside the data layout, and written after the data
it describes. A state that is missing, unreadable or from another schema is not fatal: the
next run re-verifies every file against upstream (and rewrites none that already match).
"""

from __future__ import annotations

import enum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from horde_replica_sync.catalogs import Catalog, Name
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer
from horde_replica_sync.errors import SourceName
from horde_replica_sync.report import Outcome

SCHEMA_VERSION = 1


class FileRecord(BaseModel):
    """One published file: its digest and size, and its source's validator: GitHub's ETag, or
    a catalog's revision (`<revision>:<updated_at>`, on its main file)."""

    model_config = ConfigDict(extra="ignore")

    sha256: str
    size: int
    etag: str | None = None


class LastOutcome(enum.StrEnum):
    """How the last attempt at a layer ended, as `state.json` keeps it: an `Outcome`, with
    updated and unchanged both stored as `ok` (the spelling every state file has used)."""

    OK = "ok"  # published or confirmed current
    ABSENT = Outcome.ABSENT.value
    REFUSED = Outcome.REFUSED.value
    FAILED = Outcome.FAILED.value

    @classmethod
    def of(cls, outcome: Outcome) -> LastOutcome:
        """What `outcome` is stored as."""
        if outcome in (Outcome.UPDATED, Outcome.UNCHANGED):
            return cls.OK
        return cls(outcome.value)

    @property
    def failed(self) -> bool:
        """Whether the last attempt failed or was refused (the next run retries it)."""
        return self in (LastOutcome.REFUSED, LastOutcome.FAILED)


STAMPS: Final = ("fetched_at", "verified_at", "last_foreign_change_at")


class LayerState(BaseModel):
    """What we know about one layer of one category."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    source: SourceName | None = None
    files: dict[str, FileRecord] = Field(default_factory=dict)
    records: int | None = None
    upstream_last_updated: int | None = None
    rolled_back_from: int | None = None  # the newer stamp we held when upstream went back
    foreign_changes: int = 0  # times another process rewrote or removed our files
    last_foreign_change_at: float | None = None
    fetched_at: float | None = None
    verified_at: float | None = None
    last_outcome: LastOutcome | None = None
    last_error: str | None = None
    # The stamp whose PRIMARY body, asked past every cache, did not show it (held back once).
    unproven_stamp: int | None = None
    # Runs in a row whose body, past every cache, was still the one held under a moved stamp
    # (chain.py; /readyz fails at freshness.UNSHOWN_RUNS_ALARM).
    unshown_runs: int = 0
    # (older, newer): the metadata flaps between these stamps (sync.py); the newer is held.
    flapping: tuple[int, int] | None = None
    flap_other_runs: int = 0  # runs in a row the metadata showed the older of them

    @property
    def last_failed(self) -> bool:
        """Whether the last attempt failed or was refused (the next run retries it)."""
        return self.last_outcome is not None and self.last_outcome.failed


class CategoryState(BaseModel):
    """Both layers of one category."""

    model_config = ConfigDict(extra="ignore")

    v2: LayerState = Field(default_factory=LayerState)
    legacy: LayerState = Field(default_factory=LayerState)

    def layer(self, layer: Layer) -> LayerState:
        """The state of `layer`."""
        return self.v2 if layer is Layer.V2 else self.legacy


class ReplicaState(BaseModel):
    """The whole state file."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    categories: dict[MODEL_REFERENCE_CATEGORY, CategoryState] = Field(default_factory=dict)
    catalogs: dict[Catalog, LayerState] = Field(default_factory=dict)
    # `sync --once`: the categories and catalogs its on-change hook has yet to deliver.
    # Recorded before the hook runs, cleared when it succeeds, so the next invocation retries
    # a failed (or killed) one.
    hook_due: list[Name] = Field(default_factory=list)

    def category(self, category: MODEL_REFERENCE_CATEGORY) -> CategoryState:
        """The state of `category`, created empty on first use."""
        return self.categories.setdefault(category, CategoryState())

    def layer(self, name: Name, layer: Layer) -> LayerState:
        """The state of one layer of a category, or of a catalog (its one layer)."""
        if isinstance(name, Catalog):
            return self.catalogs.setdefault(name, LayerState())
        return self.category(name).layer(layer)

    def shifted(self, seconds: float) -> ReplicaState:
        """A copy with every stamp moved by `seconds` (from the steady scale to the wall's)."""
        copy = self.model_copy(deep=True)
        layers = [x for both in copy.categories.values() for x in (both.v2, both.legacy)]
        for layer in (*layers, *copy.catalogs.values()):
            for name in STAMPS:
                if (stamp := getattr(layer, name)) is not None:
                    setattr(layer, name, stamp + seconds)
        return copy
