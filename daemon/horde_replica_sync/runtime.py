"""The composition root: settings in, a wired sync engine out (and the client it uses)."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from horde_replica_sync import __version__
from horde_replica_sync.backends.replica import ReplicaDirectoryBackend
from horde_replica_sync.catalog_sync import CatalogRules
from horde_replica_sync.catalogs import categories_of
from horde_replica_sync.chain import SourceChain
from horde_replica_sync.clock import SYSTEM
from horde_replica_sync.config import Settings
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.publish import ComparingPublisher, StorePublisher
from horde_replica_sync.redact import ENCODING_ADVICE, redact_url
from horde_replica_sync.sources.decoding import ACCEPT_ENCODING
from horde_replica_sync.sources.github import GithubSource
from horde_replica_sync.sources.http import RetryPolicy
from horde_replica_sync.sources.primary import PrimarySource
from horde_replica_sync.sources.tls import ssl_context
from horde_replica_sync.store import ReplicaStore
from horde_replica_sync.sync import SyncEngine, SyncOptions

ClientFactory = Callable[[Settings], httpx.AsyncClient]
"""How the daemon gets a client for its settings (at start and on each reload)."""


@dataclass(frozen=True, slots=True)
class RunFlags:
    """Per-invocation choices that are not settings."""

    force: bool = False
    dry_run: bool = False
    allow_shrink: bool = False


def make_client(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The one pooled client every source shares. Redirects are errors, not surprises.

    TLS trusts the system store plus `ca_bundle`; only encodings whose decoding is bounded
    are asked for. Proxies come from the environment (`*_PROXY`, `NO_PROXY`). A `transport`
    (tests: an in-process fake) replaces the network, with every other choice kept.
    """
    verify = ssl_context(settings.ca_bundle)
    # What the client itself can refuse is the environment's proxy URL; httpx's message
    # quotes that URL, so it is never shown.
    try:
        return _client(settings, verify, transport)
    except ImportError:  # httpx imports socksio only for a socks5:// proxy
        why = "names a SOCKS proxy, which needs the socksio package (pip install 'httpx[socks]')"
        raise ConfigError(_unusable_proxy(why)) from None
    except (httpx.InvalidURL, ValueError):  # a bad port, or a scheme httpx has no proxy for
        why = "is not a proxy URL a request can use: give an http:// or https:// URL, and "
        raise ConfigError(_unusable_proxy(why + ENCODING_ADVICE)) from None


def _unusable_proxy(why: str) -> str:
    proxies = [
        f"{name}={redact_url(value)}"
        for name, value in sorted(os.environ.items())
        if name.lower().endswith("_proxy") and name.lower() != "no_proxy"
    ]
    return f"a proxy variable ({', '.join(proxies)}) {why}"


def _client(
    settings: Settings, verify: ssl.SSLContext, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport,
        trust_env=transport is None,  # a fake transport is the whole network: no proxy mounts
        timeout=httpx.Timeout(settings.request_timeout_seconds),
        follow_redirects=False,
        verify=verify,
        headers={
            "User-Agent": f"horde-replica-sync/{__version__}",
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        limits=httpx.Limits(max_connections=settings.max_concurrency * 2),
    )


def build_engine(
    settings: Settings,
    client: httpx.AsyncClient,
    flags: RunFlags = RunFlags(),
    *,
    previous: SyncEngine | None = None,
    clock: Callable[[], float] = SYSTEM.now,
) -> SyncEngine:
    """Wire store, backend, sources, chain and engine from `settings`; stamps read `clock`.

    With `previous` (a config reload), its backend (the cache and its counters) and its state
    carry over, so nothing is re-downloaded and no metric resets.
    """
    store = ReplicaStore(
        settings.replica_dir, settings.effective_state_dir, max_file_bytes=settings.max_body_bytes
    )
    policy = RetryPolicy(
        attempts=settings.retry_attempts,
        initial_seconds=settings.retry_initial_seconds,
        max_seconds=settings.retry_max_seconds,
    )
    primary = (
        PrimarySource(
            client,
            settings.primary_url,
            policy=policy,
            max_bytes=settings.max_body_bytes,
            deadline_seconds=settings.request_deadline_seconds,
        )
        if settings.use_primary
        else None
    )
    github = GithubSource(
        client,
        settings.github_url,
        policy=policy,
        max_bytes=settings.max_body_bytes,
        deadline_seconds=settings.request_deadline_seconds,
        owner=settings.github_owner,
        branch=settings.github_branch,
    )
    chain = SourceChain(
        primary,
        github,
        github_fallback=settings.github_fallback,
        max_shrink_fraction=None if flags.allow_shrink else settings.max_shrink_fraction,
    )
    if previous is None:
        state = store.load_state()
        backend = ReplicaDirectoryBackend(
            store,
            categories=categories_of(settings.categories),
            cache_ttl_seconds=settings.cache_ttl_seconds,
            clock=clock,
        )
        backend.warm_from_disk(state)
    else:
        state, cache = previous.state, previous.cache
        assert isinstance(cache, ReplicaDirectoryBackend)  # what this function built before
        backend = cache
        backend.reconfigure(categories_of(settings.categories), settings.cache_ttl_seconds)
    options = SyncOptions(
        categories=settings.categories,
        max_concurrency=settings.max_concurrency,
        run_timeout_seconds=settings.run_timeout_seconds,
        cache_ttl_seconds=settings.cache_ttl_seconds,
        catalog_rules=CatalogRules(
            ttl_seconds=settings.cache_ttl_seconds,
            max_shrink_fraction=None if flags.allow_shrink else settings.max_shrink_fraction,
        ),
    )
    publisher = ComparingPublisher(store) if flags.dry_run else StorePublisher(store)
    return SyncEngine(
        backend,
        chain,
        publisher,
        primary=primary,
        options=options,
        state=state,
        dry_run=flags.dry_run,
        clock=clock,
    )


@contextlib.asynccontextmanager
async def open_engine(
    settings: Settings, flags: RunFlags = RunFlags()
) -> AsyncIterator[SyncEngine]:
    """An engine with its client, closed on exit."""
    async with make_client(settings) as client:
        yield build_engine(settings, client, flags)
