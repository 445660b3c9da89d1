"""Issue 20, items 3 and 8, on the wire: a real socket per request, the fault server as PRIMARY.

3. Unusable stamps on every entry (floats, past 2^53, strings): the cache TTL decides, data
   requests stay keyed (an nginx site cache stores them), the outage is logged once.
8. Two PRIMARY instances behind one balancer: the metadata flaps between their stamps. After
   the flapping is seen, nothing is refetched and the alarm was raised once.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from structlog.testing import capture_logs

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import spec_for
from tests.faults.conftest import SyncFn
from tests.faultserver import FaultServer, Reply, metadata, records, script_primary, v2_path

METADATA = tuple(f"/api/model_references/{f}/metadata/metadata" for f in ("v1", "v2"))
UNUSABLE = (1796170214.5, 2**53 + 1, "1796170214")


def serve_metadata(server: FaultServer, body: bytes) -> None:
    for path in METADATA:
        server.script(path, Reply(body=body))


def data_requests(server: FaultServer, since: int) -> list[tuple[str, dict[str, list[str]]]]:
    return [
        (seen.path, parse_qs(seen.query))
        for seen in server.requests[since:]
        if seen.path not in METADATA
    ]


async def test_unusable_stamps_on_every_entry_fall_back_to_the_ttl(
    server: FaultServer, sync: SyncFn
) -> None:
    """Runs within the TTL fetch no data; one past it fetches each layer once, keyed."""
    script_primary(server)
    assert (await sync(categories="esrgan,blip", cache_ttl_seconds=3600)).ok
    for bad in UNUSABLE:
        entries = json.loads(metadata(1000))
        for entry in entries.values():
            entry["last_updated"] = bad
        serve_metadata(server, json.dumps(entries).encode())
        since = len(server.requests)
        with capture_logs() as logs:
            report = await sync(categories="esrgan,blip", cache_ttl_seconds=3600)
        assert report.ok
        assert set(report.metadata_unusable) == {C.esrgan, C.blip}
        assert data_requests(server, since) == [], f"{bad!r}: every layer fetched"
        assert not [e for e in logs if e["event"] == "sync.metadata_entry_unusable"]
    # past the TTL: fetched, and keyed (the TTL window), so a site cache can answer it
    await asyncio.sleep(1.1)
    since = len(server.requests)
    assert (await sync(categories="esrgan,blip", cache_ttl_seconds=1)).ok
    asked = data_requests(server, since)
    layers = sum(len(spec_for(c).layers) for c in (C.esrgan, C.blip))
    assert len(asked) == layers
    assert all(query.get("last_updated") for _, query in asked), asked


async def test_two_primaries_behind_a_balancer_are_refetched_no_more(
    server: FaultServer, sync: SyncFn
) -> None:
    """A at 1000 with body A, B at 2000 with body B, answering in turn."""
    script_primary(server)
    assert (await sync(categories="esrgan")).ok
    flaps, fetched = [], []
    for turn in range(10):
        stamp, tag = (2000, "B") if turn % 2 == 0 else (1000, "A")
        serve_metadata(server, metadata(stamp))
        server.script(v2_path(C.esrgan), Reply(body=records(C.esrgan, 4, tag=tag)))
        since = len(server.requests)
        with capture_logs() as logs:
            assert (await sync(categories="esrgan")).ok
        fetched.append(len(data_requests(server, since)))
        flaps += [e for e in logs if e["event"] == "sync.stamps_flapping"]
    assert sum(fetched[3:]) == 0, f"data requests per run: {fetched}"
    assert len(flaps) == 1 and flaps[0]["stamps"] == [1000, 2000]
