"""One vocabulary: metric help texts name the label values they carry (built from the enums),
and "no source" keeps the spelling each output has always shown, from one enum."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from horde_replica_sync import cli
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.cli import render_report
from horde_replica_sync.config import (
    FLAGS,
    Settings,
    describe_setting,
    load_settings,
    provenance,
)
from horde_replica_sync.errors import ErrorKind, NoSource, SourceName
from horde_replica_sync.health import Refusal
from horde_replica_sync.hook import HookResult
from horde_replica_sync.logs import RunLog
from horde_replica_sync.metrics import PREFIX, Metrics
from horde_replica_sync.report import LayerResult, MissReason, Outcome, SyncReport

STATE_LOST = SyncReport(
    results=(), forced=False, dry_run=False, duration_seconds=0.1, state_error="x"
)


@pytest.mark.parametrize(
    ("metric", "members"),
    [
        ("layer_syncs", Outcome),
        ("cache_misses", MissReason),
        ("probe_requests_refused", Refusal),
        ("hook_runs", HookResult),
        ("active_source", SourceName),
        ("fetch_errors", [*SourceName, NoSource.LOCAL]),
    ],
)
def test_help_names_every_member(metric: str, members: Iterable[enum.StrEnum]) -> None:
    """Every value of a metric's label enum appears, as a word, in that metric's help."""
    registry = CollectorRegistry()
    Metrics(registry)
    helps = {family.name: family.documentation for family in registry.collect()}
    words = set(re.findall(r"[a-z0-9_]+", helps[f"{PREFIX}_{metric}"]))
    assert [m.value for m in members if m.value not in words] == []


def test_an_error_no_source_caused_keeps_its_label() -> None:
    """A state file that could not be written counts under source `none`, as it always has."""
    registry = CollectorRegistry()
    Metrics(registry).observe(STATE_LOST)
    labels = {"source": "none", "reason": ErrorKind.STORE.value}
    assert registry.get_sample_value(f"{PREFIX}_fetch_errors_total", labels) == 1


def test_an_error_no_source_caused_is_the_replicas_in_the_outage_line() -> None:
    """The outage line blames the replica for a state file that could not be written."""
    with capture_logs() as logs:
        RunLog().report(STATE_LOST)
    assert [e["down"] for e in logs if e["event"] == "sync.outage"] == [["replica: store"]]


def test_a_cache_hit_shows_cache_as_its_source() -> None:
    """The run table and the per-layer log name the cache where nothing was fetched."""
    hit = LayerResult(C.esrgan, Layer.V2, Outcome.UNCHANGED)
    report = SyncReport(results=(hit,), forced=False, dry_run=False, duration_seconds=0.1)
    assert render_report(report).splitlines()[1].split()[:4] == [
        "esrgan",
        "v2",
        "unchanged",
        "cache",
    ]
    with capture_logs() as logs:
        RunLog().report(report)
    assert [e["source"] for e in logs if e["event"] == "sync.category_done"] == ["cache"]


VALUES = {
    "primary_url": "http://127.0.0.1:9/api",
    "github_url": "http://127.0.0.1:9",
    "replica_dir": "/tmp/replica",
    "state_dir": "/tmp/state",
    "categories": "esrgan",
    "interval_seconds": "5",
    "metrics_addr": "127.0.0.1:0",
    "on_change_command": "true",
}


@pytest.mark.parametrize("key", list(FLAGS))
def test_every_flag_sets_its_setting(key: str) -> None:
    """Each flag in the one table is on `check-config` and sets its setting, named as a flag."""
    flag = FLAGS[key]
    argv = ["check-config", flag.name, *(() if flag.turns_off else (VALUES[key],))]
    overrides = cli._overrides(cli._parser().parse_args(argv))
    assert list(overrides) == [key]
    default = Settings.model_fields[key].get_default(call_default_factory=True)
    assert getattr(load_settings(**overrides), key) != default
    assert provenance(None, overrides)[key] == f"flag {flag.name}"


@pytest.mark.parametrize(
    ("key", "described"),
    [
        (
            "on_change_command",
            "on_change_command (env HORDE_REPLICA_ON_CHANGE_COMMAND, flag --on-change)",
        ),
        ("use_primary", "use_primary (env HORDE_REPLICA_USE_PRIMARY, flag --no-primary)"),
        ("max_concurrency", "max_concurrency (env HORDE_REPLICA_MAX_CONCURRENCY)"),
    ],
)
def test_a_setting_is_described_with_its_variable_and_flag(key: str, described: str) -> None:
    """Messages name a setting with the variable and the flag (if any) that set it."""
    assert describe_setting(key) == described
