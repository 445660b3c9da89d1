"""Content-keyed data requests on the wire, and a cache that answers with an older body.

The fault server stands in for an HTTP cache that ignores query strings (a common CDN
setting): it answers the new stamp's URL with the body it stored for the old one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.report import Outcome
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.store import sha256_hex
from tests.faults.conftest import SyncFn
from tests.faultserver import FaultServer, Reply, minimal_record, v1_path, v2_path

StateOf = Callable[[], ReplicaState]
METADATA = tuple(f"/api/model_references/{f}/metadata/metadata" for f in ("v1", "v2"))


def esrgan_v2(updated_at: int, tag: str) -> bytes:
    """An esrgan v2 body as the PRIMARY serves it: records stamped `updated_at`."""
    records = {}
    for name in ("a", "b"):
        record = minimal_record(C.esrgan, name, tag)
        record["metadata"] = {"schema_version": "2.1.0", "created_at": 1, "updated_at": updated_at}
        records[name] = record
    return json.dumps(records).encode()


def publish_stamp(server: FaultServer, stamp: int) -> None:
    body = json.dumps({"esrgan": {"category": "esrgan", "last_updated": stamp}}).encode()
    for path in METADATA:
        server.script(path, Reply(body=body))


def queries(server: FaultServer, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(seen.query) for seen in server.requests if seen.path == path]


async def test_data_urls_carry_the_stamp_and_metadata_polls_stay_plain(
    server: FaultServer, sync: SyncFn
) -> None:
    """Every host that saw stamp 1000 asks for the same URL; polls have no query."""
    publish_stamp(server, 1000)
    server.script(v2_path(C.esrgan), Reply(body=esrgan_v2(1000, "one")))
    server.script(v1_path(C.esrgan), Reply(body=json.dumps({"a": {"name": "a"}}).encode()))
    assert (await sync(categories="esrgan")).ok
    assert queries(server, v2_path(C.esrgan)) == [{"last_updated": ["1000"]}]
    # the legacy layer's key also names the v2 body it goes with
    v2_digest = sha256_hex(esrgan_v2(1000, "one"))[:16]
    assert queries(server, v1_path(C.esrgan)) == [{"last_updated": ["1000"], "v2": [v2_digest]}]
    assert {seen.query for seen in server.requests if seen.path in METADATA} == {""}


async def test_an_older_body_from_a_cache_is_never_recorded_as_new(
    server: FaultServer, sync: SyncFn, state_of: StateOf, replica: Path
) -> None:
    """Metadata moves to 2000; the cache still answers with the 1000 body. The daemon asks
    again with a key no cache has seen, and records only the new body with 2000."""
    old, new = esrgan_v2(1000, "old"), esrgan_v2(2000, "new")
    publish_stamp(server, 1000)
    server.script(v2_path(C.esrgan), Reply(body=old))
    server.script(v1_path(C.esrgan), Reply(body=json.dumps({"a": {"name": "a"}}).encode()))
    assert (await sync(categories="esrgan")).ok
    publish_stamp(server, 2000)
    server.script(v2_path(C.esrgan), Reply(body=old), Reply(body=new))  # the cache, then origin
    report = await sync(categories="esrgan")
    assert report.ok
    assert (replica / "esrgan.json").read_bytes() == new
    layer = state_of().layer(C.esrgan, Layer.V2)
    assert layer.upstream_last_updated == 2000
    assert layer.files["esrgan.json"].sha256 == sha256_hex(new)
    asked = queries(server, v2_path(C.esrgan))[1:]
    assert [q["last_updated"] for q in asked] == [["2000"], ["2000"]]
    assert "fresh" not in asked[0] and "fresh" in asked[1]
    assert "fresh" in queries(server, v1_path(C.esrgan))[-1]  # the category's other layer too
    v2 = next(r for r in report.results if r.layer is Layer.V2)
    assert v2.outcome is Outcome.UPDATED and v2.older_answer
