"""One bounded GET with error translation and a retry policy, shared by both sources.

Every httpx error is translated here, at the edge, into a `SourceError` that names the URL
(redacted), so the rest of the package never sees httpx exceptions. A TLS failure is its own
kind, and a connection failure names the proxy it went through.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from horde_replica_sync.errors import ErrorKind, SourceError, SourceRejected, SourceUnavailable
from horde_replica_sync.redact import redact_url
from horde_replica_sync.sources import tls
from horde_replica_sync.sources.decoding import read_decoded

log = structlog.get_logger(__name__)

# Statuses a caller handles itself; anything else non-2xx becomes a SourceError.
PASSED_STATUSES: Final = frozenset({200, 304, 404})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter; a Retry-After from the server wins.

    A server that asks for a longer pause than `max_retry_after_seconds` is not waited
    for inside a run: the error is reported at once (the caller may fall back or cool down).
    """

    attempts: int
    initial_seconds: float
    max_seconds: float
    max_retry_after_seconds: float = 30.0  # not a setting: longer pauses become a cooldown


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response body that fitted under the size cap."""

    url: str
    status: int
    content: bytes
    etag: str | None


async def get(
    client: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    deadline_seconds: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """GET `url`, reading at most `max_bytes` of body; raise `SourceError` unless 200/304/404.

    httpx's timeouts bound each wait; `deadline_seconds` bounds the whole request, so a server
    that sends a byte now and then cannot hold it forever.
    """
    try:
        async with asyncio.timeout(deadline_seconds):
            async with client.stream("GET", url, headers=headers) as response:
                _raise_for_status(url, response)
                content = await _read_capped(url, response, max_bytes)
    except TimeoutError as exc:
        reason = f"no complete answer within the {deadline_seconds:g} s request deadline"
        raise SourceUnavailable(url, reason, kind=ErrorKind.TIMEOUT) from exc
    except httpx.TimeoutException as exc:
        raise SourceUnavailable(
            url, f"timed out ({type(exc).__name__})", kind=ErrorKind.TIMEOUT
        ) from exc
    except httpx.HTTPError as exc:
        raise _connection_error(url, exc) from exc
    return Response(url, response.status_code, content, response.headers.get("etag"))


async def get_with_retry(
    client: httpx.AsyncClient,
    url: str,
    *,
    policy: RetryPolicy,
    max_bytes: int,
    deadline_seconds: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """`get` under `policy`: retries only what a later attempt can fix."""

    def retryable(exc: BaseException) -> bool:
        if not isinstance(exc, SourceUnavailable) or exc.kind is ErrorKind.TLS:
            return False  # an untrusted certificate stays untrusted on the next attempt
        return exc.retry_after is None or exc.retry_after <= policy.max_retry_after_seconds

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_backoff(policy),
        retry=retry_if_exception(retryable),
        before_sleep=_log_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await get(
                client, url, max_bytes=max_bytes, deadline_seconds=deadline_seconds, headers=headers
            )
    msg = "unreachable: tenacity reraises the last error"
    raise AssertionError(msg)  # pragma: no cover


class Cooldown:
    """Remembers a server's "come back later" across runs, so it is not asked again early.

    Retry-After values up to `waited_in_run` are waited out inside a run by the retry
    policy; a longer one starts a cooldown during which the source fails at once. A cooldown
    never exceeds `longest`, so a wild Retry-After cannot silence a source for days.
    """

    def __init__(
        self,
        name: str,
        *,
        waited_in_run: float = 0.0,
        longest: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._waited_in_run = waited_in_run
        self._longest = longest
        self._clock = clock
        self._until = 0.0

    @property
    def remaining(self) -> float:
        """Seconds until the source may be asked again (0 when it may)."""
        return max(0.0, self._until - self._clock())

    @contextlib.contextmanager
    def guard(self, url: str) -> Iterator[None]:
        """Refuse while cooling down; start a cooldown on a long Retry-After."""
        if remaining := self.remaining:
            reason = f"{self._name} asked us to back off; {remaining:.0f} s of cooldown left"
            raise SourceUnavailable(url, reason, kind=ErrorKind.RATE_LIMITED, retry_after=remaining)
        try:
            yield
        except SourceUnavailable as exc:
            if exc.retry_after and exc.retry_after > self._waited_in_run:
                self._until = self._clock() + min(exc.retry_after, self._longest)
            raise


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (delta or HTTP date) or GitHub's `x-ratelimit-reset`."""
    now = time.time() if now is None else now
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        if _is_count(value):
            return float(value)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            return None
    reset = headers.get("x-ratelimit-reset")
    if reset is not None and _is_count(reset.strip()):
        return max(0.0, float(reset) - now)
    return None


def _is_count(text: str) -> bool:
    # str.isdigit() accepts non-ASCII digits such as "²" that int() rejects.
    return text.isascii() and text.isdigit()


def _raise_for_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status in PASSED_STATUSES:
        return
    if 300 <= status < 400:
        location = redact_url(response.headers.get("location", "?"))
        raise SourceUnavailable(
            url,
            f"unexpected redirect (HTTP {status} to {location})",
            kind=ErrorKind.REDIRECT,
            status=status,
        )
    retry_after = parse_retry_after(response.headers)
    if status == 429 or status >= 500:
        kind = ErrorKind.RATE_LIMITED if status == 429 else ErrorKind.HTTP_5XX
        raise SourceUnavailable(
            url, f"HTTP {status}", kind=kind, status=status, retry_after=retry_after
        )
    if status == 403 and retry_after is not None:  # GitHub's rate limits answer 403 too
        raise SourceUnavailable(
            url,
            "HTTP 403 (rate limited)",
            kind=ErrorKind.RATE_LIMITED,
            status=status,
            retry_after=retry_after,
        )
    raise SourceRejected(url, f"unexpected HTTP {status}", kind=ErrorKind.HTTP_4XX, status=status)


async def _read_capped(url: str, response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and _is_count(declared) and int(declared) > max_bytes:
        reason = f"body of {declared} bytes exceeds the {max_bytes}-byte cap"
        raise SourceRejected(url, reason, kind=ErrorKind.OVERSIZE)
    return await read_decoded(url, response, max_bytes)


def _connection_error(url: str, exc: httpx.HTTPError) -> SourceUnavailable:
    """A failure below HTTP, told apart as TLS or not, naming the proxy it went through."""
    if tls_error := tls.tls_failure(exc):
        return SourceUnavailable(url, tls.describe(tls_error), kind=ErrorKind.TLS)
    proxy = proxy_for(url)
    via = f" via proxy {redact_url(proxy)}" if proxy else ""
    reason = f"connection failed{via} ({type(exc).__name__}: {exc})"
    return SourceUnavailable(url, reason, kind=ErrorKind.CONNECTION)


def proxy_for(url: str) -> str | None:
    """The proxy httpx uses for `url` (trust_env: `*_PROXY`, `NO_PROXY`), if any.

    httpx reads the same variables through `urllib.request.getproxies`; its own mapping is
    private, so this is the public equivalent for the message only.
    """
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(host):  # on Linux: NO_PROXY, as httpx reads it
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def _backoff(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    jittered = wait_random_exponential(multiplier=policy.initial_seconds, max=policy.max_seconds)

    def wait(retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, SourceError) and exc.retry_after is not None:
            return exc.retry_after
        return jittered(retry_state)

    return wait


def _log_retry(retry_state: RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    next_action = retry_state.next_action
    log.debug(  # the outage, if it becomes one, is logged once per change (logs.RunLog)
        "http.retry_scheduled",
        attempt=retry_state.attempt_number,
        wait_seconds=round(next_action.sleep, 3) if next_action else None,
        error=str(exc),
    )
