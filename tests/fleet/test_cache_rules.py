"""What the site cache (real nginx, the example config) stores and for how long, against a
scripted PRIMARY: each rule the freshness argument rests on, one request at a time."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import pytest

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from tests.faultserver import FaultServer, Reply, metadata, records, v2_path
from tests.harness.site_cache import (
    EXAMPLE,
    METADATA_CACHE_SECONDS,
    METADATA_MAX_AGE_SECONDS,
    SiteCache,
)

ESRGAN: Final = MODEL_REFERENCE_CATEGORY.esrgan
METADATA: Final = "/api/model_references/v2/metadata/metadata"
DATA: Final = v2_path(ESRGAN)
STAMP: Final = "last_updated=1000"
STAMPED: Final = f"{DATA}?{STAMP}"
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(cache: SiteCache, target: str, method: str = "GET") -> tuple[int, bytes, str]:
    """(status, body, X-Cache-Status) of one request to the site cache."""
    request = urllib.request.Request(f"http://127.0.0.1:{cache.port}{target}", method=method)
    try:
        with _NO_PROXY_OPENER.open(request, timeout=15) as response:
            return response.status, response.read(), response.headers.get("X-Cache-Status", "")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), exc.headers.get("X-Cache-Status", "")


def test_metadata_is_never_older_than_the_cache_period(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """One upstream request per period; a new stamp shows once the period is over."""
    scripted.script(METADATA, Reply(body=metadata(1000)))
    first = time.monotonic()
    assert get(scripted_cache, METADATA)[1] == metadata(1000)
    scripted.script(METADATA, Reply(body=metadata(2000)))
    assert get(scripted_cache, METADATA)[1:] == (metadata(1000), "HIT")
    assert scripted.count(METADATA) == 1
    while get(scripted_cache, METADATA)[1] != metadata(2000):
        assert time.monotonic() - first <= METADATA_MAX_AGE_SECONDS, "older than the period"
        time.sleep(0.1)
    assert time.monotonic() - first >= METADATA_CACHE_SECONDS - 0.5, "not cached at all"


def test_metadata_is_not_served_stale_when_the_primary_fails(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """An outage shows as an outage once the period is over, not as an old answer."""
    scripted.script(METADATA, Reply(body=metadata(1000)), Reply(503, b'{"detail":"down"}'))
    assert get(scripted_cache, METADATA)[0] == 200
    time.sleep(METADATA_MAX_AGE_SECONDS + 0.2)
    assert get(scripted_cache, METADATA)[0] == 503


def asked(server: FaultServer, query: str) -> int:
    """How many requests for DATA with exactly `query` reached the scripted PRIMARY."""
    return sum(1 for seen in server.requests if seen.path == DATA and seen.query == query)


def test_stamped_data_is_one_upstream_request_for_a_herd(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """20 hosts asking for one (path, stamp) at once: the PRIMARY answers once."""
    body = records(ESRGAN, 3, tag="v1000")
    scripted.script(DATA, Reply(body=body, delay=0.5))
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: get(scripted_cache, STAMPED), range(20)))
    assert {(status, got) for status, got, _ in answers} == {(200, body)}
    assert asked(scripted, STAMP) == 1


def test_a_new_stamp_is_a_new_key(scripted: FaultServer, scripted_cache: SiteCache) -> None:
    """The stamp is part of the key: a newer stamp reaches the PRIMARY."""
    older, newer = records(ESRGAN, 3, tag="v1000"), records(ESRGAN, 3, tag="v2000")
    scripted.script(DATA, Reply(body=older), Reply(body=newer))
    assert get(scripted_cache, STAMPED)[1] == older
    assert get(scripted_cache, f"{DATA}?last_updated=2000")[1] == newer
    assert get(scripted_cache, STAMPED)[1:] == (older, "HIT")
    assert (asked(scripted, STAMP), asked(scripted, "last_updated=2000")) == (1, 1)


def test_data_without_a_stamp_is_never_stored(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """Nothing vouches for how new an unstamped body is: every request reaches the PRIMARY."""
    scripted.script(DATA, Reply(body=records(ESRGAN, 3)))
    for target in (DATA, DATA, f"{DATA}?last_updated=", f"{DATA}?last_updated="):
        assert get(scripted_cache, target)[2] == "BYPASS", target
    assert (asked(scripted, ""), asked(scripted, "last_updated=")) == (2, 2)


def test_a_fresh_refetch_replaces_the_sites_entry(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """A doubting daemon's `&fresh=` goes to the PRIMARY, and its answer is what the site's
    other hosts get for that stamp from then on."""
    old, new = records(ESRGAN, 3, tag="old"), records(ESRGAN, 3, tag="new")
    scripted.script(DATA, Reply(body=old), Reply(body=new))
    assert get(scripted_cache, STAMPED)[1] == old
    assert get(scripted_cache, f"{STAMPED}&fresh=9f2c")[1:] == (new, "BYPASS")
    assert get(scripted_cache, STAMPED)[1:] == (new, "HIT")
    assert (asked(scripted, STAMP), asked(scripted, f"{STAMP}&fresh=9f2c")) == (1, 1)


def test_stamped_data_survives_a_primary_outage(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """A body stored under a stamp stays right for that stamp: the site serves it (for a day,
    and stale after that) while the PRIMARY fails."""
    body = records(ESRGAN, 3, tag="v1000")
    scripted.script(DATA, Reply(body=body), Reply(503, b'{"detail":"down"}'))
    assert get(scripted_cache, STAMPED)[1] == body
    assert get(scripted_cache, STAMPED) == (200, body, "HIT")
    assert get(scripted_cache, f"{STAMPED}&fresh=1")[0] == 503, "the outage itself shows"


def test_everything_else_is_refused_without_asking_the_primary(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """Writes and other endpoints never reach the PRIMARY through the site cache."""
    scripted.script(DATA, Reply(body=records(ESRGAN, 3)))
    assert get(scripted_cache, STAMPED, method="POST")[0] == 403
    assert get(scripted_cache, STAMPED, method="DELETE")[0] == 403
    for target in (
        "/api/model_references/statistics/image_generation",
        "/api/model_references/v2/image_generation/model/x",
        "/api/heartbeat",
        "/model_references/v2/esrgan",  # the PRIMARY answers without /api too; we do not
    ):
        assert get(scripted_cache, target)[0] == 404, target
    assert scripted.requests == []


@pytest.mark.parametrize(
    "target",
    [
        f"/api/model_references/v2/clip/../esrgan?{STAMP}",  # nginx keys it as .../v2/esrgan
        f"/api/model_references/v2/./esrgan?{STAMP}",
        f"/api/model_references/v1/../v2/esrgan?{STAMP}",
        "/api/model_references/v2/metadata/../metadata/metadata",
    ],
)
def test_a_path_nginx_rewrites_never_fills_another_key(
    scripted: FaultServer, scripted_cache: SiteCache, target: str
) -> None:
    """nginx keys the cache on the normalised path but forwards the path as sent: whatever
    the PRIMARY (or a proxy before it) answers for `clip/../esrgan` would be what every host
    gets for esrgan. Such a path is refused, and never reaches the PRIMARY."""
    raw = target.partition("?")[0]
    scripted.script(raw, Reply(body=records(ESRGAN, 1, tag="another answer")))
    scripted.script(DATA, Reply(body=records(ESRGAN, 3, tag="esrgan")))
    scripted.script(METADATA, Reply(body=metadata(1000)))
    assert get(scripted_cache, target)[0] == 404
    assert scripted.requests == []
    assert get(scripted_cache, STAMPED)[1] == records(ESRGAN, 3, tag="esrgan")
    assert get(scripted_cache, METADATA)[1] == metadata(1000)


def test_the_example_verifies_the_primary_and_listens_on_loopback() -> None:
    """As shipped (before the per-site values are set): TLS to the public PRIMARY with SNI and
    verification, and nothing reachable from off the host."""
    directives = {
        line.split("#")[0].strip() for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
    }
    for expected in (
        "proxy_pass https://models.aihorde.net;",
        "proxy_ssl_server_name on;",
        "proxy_ssl_verify on;",
        "listen 127.0.0.1:8080;",
    ):
        assert expected in directives, expected
    assert not any(d.startswith("listen") and "127.0.0.1" not in d for d in directives)


LICENSING: Final = "/api/model_references/v2/licensing/export"
BASELINES: Final = "/api/model_references/v2/image_generation/baselines/export"
PROBE: Final = "/api/model_references/v2/licensing/licenses"


def test_the_catalogs_are_served_and_keyed_like_the_categories(
    scripted: FaultServer, scripted_cache: SiteCache
) -> None:
    """The licensing export is cached per revision (unkeyed: passed through, never stored);
    the small exports and the licensing probe are cached like metadata."""
    one, two = b'{"metadata":{"revision":1}}', b'{"metadata":{"revision":2}}'
    scripted.script(LICENSING, Reply(body=one), Reply(body=two))
    keyed = f"{LICENSING}?revision=1%3A100"
    assert get(scripted_cache, keyed)[:2] == (200, one)
    assert get(scripted_cache, keyed)[1:] == (one, "HIT")
    assert get(scripted_cache, f"{keyed}&fresh=ab12")[1:] == (two, "BYPASS")
    assert get(scripted_cache, LICENSING)[2] == "BYPASS"
    for path, query in ((BASELINES, ""), (PROBE, "?limit=1")):
        scripted.script(path, Reply(body=one))
        assert get(scripted_cache, path + query)[:2] == (200, one)
        assert get(scripted_cache, path + query)[2] == "HIT"
    assert get(scripted_cache, LICENSING, method="POST")[0] == 403
