"""What a v2 body says about the stamp it was fetched for, and where the stamp's operation
comes from (the metadata family that gave the newest stamp)."""

from __future__ import annotations

import json

import httpx
import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.evidence import Evidence, judge
from horde_replica_sync.ports import Operation
from horde_replica_sync.sources.http import RetryPolicy
from horde_replica_sync.sources.primary import PrimarySource
from tests.faultserver import FaultServer, Reply, running


def record(name: str, updated_at: object) -> dict[str, object]:
    return {"name": name, "metadata": {"updated_at": updated_at}}


class TestJudge:
    @pytest.mark.parametrize(
        ("records", "operation", "expected"),
        [
            ({"a": record("a", 200)}, None, Evidence.SHOWN),  # updated at the stamp
            ({"a": record("a", 100), "b": record("b", 230)}, None, Evidence.SHOWN),
            # far after the stamp (more than SKEW_SECONDS): a wrong time proves nothing
            ({"a": record("a", 100), "b": record("b", 10**9)}, None, Evidence.OLDER),
            # stamped the second before its metadata (upstream stamps the record first)
            ({"a": record("a", 199)}, None, Evidence.SHOWN),
            ({"a": record("a", 194)}, None, Evidence.OLDER),  # more than EARLY_SECONDS before
            ({"a": record("a", 100)}, Operation("delete", "b"), Evidence.SHOWN),  # b is gone
            ({"a": record("a", 100)}, Operation("delete", "a"), Evidence.OLDER),  # a is not
            ({"k": record("a", 100)}, Operation("delete", "a"), Evidence.OLDER),  # by name too
            ({"a": record("a", 100)}, Operation("update", "a"), Evidence.OLDER),
            ({"a": {"name": "a"}}, None, Evidence.SILENT),  # no timestamps at all
            ({"a": record("a", True)}, None, Evidence.SILENT),  # a boolean is not a time
            ({"a": record("a", "200")}, None, Evidence.SILENT),
            ({}, None, Evidence.SILENT),
            # metadata initialized (upstream: lazily, at its first read), no write since: the
            # stamp is later than the records without anything having changed
            ({"a": record("a", 100)}, Operation(None), Evidence.SILENT),
            ({"a": record("a", 100)}, Operation("delete", None), Evidence.OLDER),  # whose?
        ],
    )
    def test_cases(
        self, records: dict[str, object], operation: Operation | None, expected: Evidence
    ) -> None:
        assert judge(records, 200, operation) is expected


class TestBytes:
    """Changed bytes are the evidence a legacy write leaves; the bytes held prove nothing."""

    def test_the_bytes_held_prove_nothing_even_with_a_record_as_new(self) -> None:
        records = {"a": record("a", 200)}
        assert judge(records, 200, None, changed=False) is Evidence.OLDER
        assert judge(records, 200, Operation("update", "a"), changed=False) is Evidence.OLDER
        assert judge(records, 200, Operation(None), changed=False) is Evidence.SILENT  # init

    def test_a_legacy_write_is_shown_by_changed_bytes_alone(self) -> None:
        records = {"a": record("a", 100)}
        assert judge(records, 200, None, changed=True, legacy_write=True) is Evidence.SHOWN
        assert judge(records, 200, None, changed=True) is Evidence.OLDER  # v2 times speak
        assert judge(records, 200, None, changed=None, legacy_write=True) is Evidence.OLDER


def metadata_of(stamp: int, operation: tuple[str, str] | None) -> bytes:
    entry: dict[str, object] = {"category": "esrgan", "last_updated": stamp}
    if operation is not None:
        entry |= {"last_operation_type": operation[0], "last_operation_model": operation[1]}
    return json.dumps({"esrgan": entry}).encode()


async def stamps_from(server: FaultServer) -> tuple[dict[C, int], dict[C, Operation]]:
    async with httpx.AsyncClient() as client:
        primary = PrimarySource(
            client, f"{server.url}/api", policy=RetryPolicy(1, 0, 0), max_bytes=1 << 20
        )
        stamps = await primary.fetch_last_updated()
    return stamps.last_updated, stamps.operations


@pytest.mark.parametrize(
    ("v1", "v2", "expected"),
    [
        ((300, ("delete", "x")), (200, ("update", "y")), Operation("delete", "x")),  # v1 newer
        ((200, ("delete", "x")), (300, None), None),  # the newer family names none
        ((300, ("delete", "x")), (300, ("update", "y")), Operation("update", "y")),  # tie: v2
        ((300, None), (300, ("create", "z")), Operation("create", "z")),
    ],
)
async def test_the_operation_comes_with_the_newest_stamp(
    v1: tuple[int, tuple[str, str] | None],
    v2: tuple[int, tuple[str, str] | None],
    expected: Operation | None,
) -> None:
    with running() as server:
        server.script("/api/model_references/v1/metadata/metadata", Reply(body=metadata_of(*v1)))
        server.script("/api/model_references/v2/metadata/metadata", Reply(body=metadata_of(*v2)))
        stamps, operations = await stamps_from(server)
    assert stamps == {C.esrgan: max(v1[0], v2[0])}
    assert operations.get(C.esrgan) == expected


async def test_null_operation_is_an_initialization_and_absent_is_unknown() -> None:
    """Upstream's fresh metadata says `last_operation_type: null`; a PRIMARY that omits the
    field says nothing (the evidence rule then applies as for any write)."""
    fresh = json.dumps(
        {
            "esrgan": {"last_updated": 5, "last_operation_type": None},
            "lora": {"last_updated": 5},
        }
    ).encode()
    with running() as server:
        for family in ("v1", "v2"):
            server.script(f"/api/model_references/{family}/metadata/metadata", Reply(body=fresh))
        _, operations = await stamps_from(server)
    assert operations == {C.esrgan: Operation(None)}


async def test_a_strange_operation_is_ignored_never_an_error() -> None:
    body = json.dumps(
        {"esrgan": {"last_updated": 5, "last_operation_type": 7, "last_operation_model": None}}
    ).encode()
    with running() as server:
        for family in ("v1", "v2"):
            server.script(f"/api/model_references/{family}/metadata/metadata", Reply(body=body))
        stamps, operations = await stamps_from(server)
    assert stamps == {C.esrgan: 5}
    assert operations == {}
