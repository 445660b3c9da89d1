"""Tests of the bounded GET and retry policy in `horde_replica_sync.sources.http`."""

from __future__ import annotations

import email.utils
import gzip
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from horde_replica_sync.config import Settings, load_settings
from horde_replica_sync.errors import ErrorKind, SourceError, SourceRejected, SourceUnavailable
from horde_replica_sync.runtime import make_client
from horde_replica_sync.sources.http import (
    PASSED_STATUSES,
    Response,
    RetryPolicy,
    get,
    get_with_retry,
    parse_retry_after,
)
from tests.faultserver import Reply, running

URL = "https://primary.test/api/model_references/v2/blip"
CAP = 1024
FAST = RetryPolicy(attempts=3, initial_seconds=0.001, max_seconds=0.01)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that replays canned responses and records the requests."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        index = min(len(self.requests), len(self.responses)) - 1
        item = self.responses[index]
        if isinstance(item, Exception):
            raise item
        return item

    @property
    def calls(self) -> int:
        """How many requests reached the transport."""
        return len(self.requests)


def client_for(handler: Handler) -> httpx.AsyncClient:
    """An AsyncClient whose every request is answered by `handler`."""
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def fetch(*responses: httpx.Response | Exception, max_bytes: int = CAP) -> Response:
    """Run one `get` against canned responses."""
    async with client_for(Recorder(*responses)) as client:
        return await get(client, URL, max_bytes=max_bytes)


async def fetch_error(*responses: httpx.Response | Exception, max_bytes: int = CAP) -> SourceError:
    """Run one `get` that must fail, and return its SourceError."""
    with pytest.raises(SourceError) as info:
        await fetch(*responses, max_bytes=max_bytes)
    return info.value


def http_date(offset: float) -> str:
    """An RFC 7231 HTTP-date `offset` seconds from now."""
    return email.utils.formatdate(time.time() + offset, usegmt=True)


class ChunkedBody(httpx.AsyncByteStream):
    """A streamed body with no Content-Length, delivered in chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk


class TestGetPassedStatuses:
    """`get` returns a Response for the statuses its callers handle."""

    def test_passed_statuses(self) -> None:
        """PASSED_STATUSES is exactly 200, 304 and 404."""
        assert frozenset({200, 304, 404}) == PASSED_STATUSES

    async def test_200(self) -> None:
        """A 200 returns the URL, status, full body and ETag."""
        response = await fetch(httpx.Response(200, content=b'{"a": 1}', headers={"ETag": '"v1"'}))
        assert response == Response(URL, 200, b'{"a": 1}', '"v1"')

    async def test_200_without_etag(self) -> None:
        """A 200 without ETag has `etag` None."""
        response = await fetch(httpx.Response(200, content=b"{}"))
        assert response.etag is None

    async def test_304(self) -> None:
        """A 304 is returned with an empty body."""
        response = await fetch(httpx.Response(304, headers={"ETag": '"v1"'}))
        assert (response.status, response.content, response.etag) == (304, b"", '"v1"')

    async def test_404(self) -> None:
        """A 404 is returned to the caller with its body."""
        response = await fetch(httpx.Response(404, content=b'{"detail": "not found"}'))
        assert (response.status, response.content) == (404, b'{"detail": "not found"}')

    async def test_headers_are_sent(self) -> None:
        """Extra request headers reach the server."""
        recorder = Recorder(httpx.Response(304))
        async with client_for(recorder) as client:
            await get(client, URL, max_bytes=CAP, headers={"If-None-Match": '"v1"'})
        assert recorder.requests[0].headers["if-none-match"] == '"v1"'
        assert recorder.requests[0].method == "GET"
        assert str(recorder.requests[0].url) == URL

    async def test_body_exactly_at_cap(self) -> None:
        """A body of exactly `max_bytes` is accepted."""
        response = await fetch(httpx.Response(200, content=b"x" * CAP))
        assert len(response.content) == CAP


class TestGetErrors:
    """`get` translates every other outcome into a SourceError naming the URL."""

    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    async def test_redirect_not_followed(self, status: int) -> None:
        """A 3xx raises SourceUnavailable naming the Location, without following it."""
        recorder = Recorder(
            httpx.Response(status, headers={"Location": "https://elsewhere.test/x"}),
            httpx.Response(200, content=b"{}"),
        )
        async with client_for(recorder) as client:
            with pytest.raises(SourceUnavailable) as info:
                await get(client, URL, max_bytes=CAP)
        assert recorder.calls == 1
        assert info.value.status == status
        assert info.value.url == URL
        assert "https://elsewhere.test/x" in str(info.value)

    @pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
    async def test_retryable_status_without_retry_after(self, status: int) -> None:
        """5xx and 429 raise SourceUnavailable with the status and no retry_after."""
        error = await fetch_error(httpx.Response(status))
        assert type(error) is SourceUnavailable
        assert error.status == status
        assert error.retry_after is None
        assert error.url == URL
        assert str(status) in str(error)

    @pytest.mark.parametrize("status", [503, 429])
    async def test_retry_after_delta_seconds(self, status: int) -> None:
        """A Retry-After in delta seconds becomes `retry_after`."""
        error = await fetch_error(httpx.Response(status, headers={"Retry-After": "120"}))
        assert type(error) is SourceUnavailable
        assert error.retry_after == 120.0

    @pytest.mark.parametrize("status", [503, 429])
    async def test_retry_after_http_date(self, status: int) -> None:
        """A Retry-After HTTP-date becomes the seconds until that date."""
        headers = {"Retry-After": http_date(100)}
        error = await fetch_error(httpx.Response(status, headers=headers))
        assert type(error) is SourceUnavailable
        assert error.retry_after is not None
        assert 95 <= error.retry_after <= 101

    async def test_403_rate_limited(self) -> None:
        """A 403 with x-ratelimit-reset is a rate limit: SourceUnavailable with retry_after."""
        headers = {"x-ratelimit-reset": str(int(time.time()) + 60)}
        error = await fetch_error(httpx.Response(403, headers=headers))
        assert type(error) is SourceUnavailable
        assert error.status == 403
        assert error.retry_after is not None
        assert 55 <= error.retry_after <= 61
        assert "rate limited" in str(error)

    async def test_403_without_rate_limit(self) -> None:
        """A plain 403 is a definite refusal: SourceRejected."""
        error = await fetch_error(httpx.Response(403))
        assert type(error) is SourceRejected
        assert error.status == 403

    @pytest.mark.parametrize("status", [400, 401, 410, 422, 451])
    async def test_4xx_rejected(self, status: int) -> None:
        """Other 4xx (e.g. 422 unknown category, 400) raise SourceRejected with the status."""
        error = await fetch_error(httpx.Response(status, content=b'{"detail": "bad"}'))
        assert type(error) is SourceRejected
        assert error.status == status
        assert error.url == URL
        assert str(status) in str(error)

    @pytest.mark.parametrize("status", [201, 204, 206])
    async def test_other_2xx_rejected(self, status: int) -> None:
        """A 2xx other than 200 is not data: SourceRejected."""
        error = await fetch_error(httpx.Response(status))
        assert type(error) is SourceRejected
        assert error.status == status

    async def test_content_length_over_cap(self) -> None:
        """A declared Content-Length over the cap is rejected before the body is read."""
        body = ChunkedBody([b"x" * 10])
        response = httpx.Response(200, headers={"Content-Length": str(CAP + 1)}, stream=body)
        error = await fetch_error(response)
        assert type(error) is SourceRejected
        assert str(CAP + 1) in str(error)
        assert body.sent == 0

    async def test_streamed_body_over_cap(self) -> None:
        """A streamed body without Content-Length is cut off once it passes the cap."""
        body = ChunkedBody([b"x" * 600, b"x" * 600, b"x" * 600, b"x" * 600])
        error = await fetch_error(httpx.Response(200, stream=body))
        assert type(error) is SourceRejected
        assert str(CAP) in str(error)
        assert body.sent == 2

    async def test_streamed_body_under_cap(self) -> None:
        """A streamed body without Content-Length under the cap is read in full."""
        body = ChunkedBody([b"ab", b"cd"])
        response = await fetch(httpx.Response(200, stream=body))
        assert response.content == b"abcd"

    @pytest.mark.parametrize(
        "exc",
        [
            httpx.ConnectError("refused"),
            httpx.ConnectTimeout("slow connect"),
            httpx.ReadTimeout("slow read"),
            httpx.ReadError("reset"),
            httpx.RemoteProtocolError("garbage"),
        ],
        ids=lambda exc: type(exc).__name__,
    )
    async def test_transport_errors(self, exc: Exception) -> None:
        """Connection errors and timeouts raise SourceUnavailable naming the URL."""
        error = await fetch_error(exc)
        assert type(error) is SourceUnavailable
        assert error.url == URL
        assert error.status is None
        assert URL in str(error)
        assert error.__cause__ is exc


class TestGetWithRetry:
    """`get_with_retry` retries only what a later attempt can fix."""

    async def run(
        self, *responses: httpx.Response | Exception, policy: RetryPolicy = FAST
    ) -> tuple[Response | SourceError, int]:
        """Run `get_with_retry`; return its response or error and the number of calls."""
        recorder = Recorder(*responses)
        async with client_for(recorder) as client:
            try:
                result: Response | SourceError = await get_with_retry(
                    client, URL, policy=policy, max_bytes=CAP
                )
            except SourceError as exc:
                result = exc
        return result, recorder.calls

    async def test_succeeds_after_two_failures(self) -> None:
        """500, 500, 200 returns the 200 after exactly three calls."""
        result, calls = await self.run(
            httpx.Response(500), httpx.Response(500), httpx.Response(200, content=b"{}")
        )
        assert isinstance(result, Response)
        assert result.content == b"{}"
        assert calls == 3

    @pytest.mark.parametrize("attempts", [1, 2, 3, 5])
    async def test_gives_up_after_attempts(self, attempts: int) -> None:
        """Persistent 500s raise SourceUnavailable after exactly `attempts` calls."""
        policy = RetryPolicy(attempts=attempts, initial_seconds=0.001, max_seconds=0.01)
        result, calls = await self.run(httpx.Response(500), policy=policy)
        assert type(result) is SourceUnavailable
        assert result.status == 500
        assert calls == attempts

    async def test_transport_error_is_retried(self) -> None:
        """A connection error is retried like a 5xx."""
        result, calls = await self.run(
            httpx.ConnectError("refused"), httpx.Response(200, content=b"{}")
        )
        assert isinstance(result, Response)
        assert calls == 2

    @pytest.mark.parametrize("status", [400, 403, 422])
    async def test_rejection_not_retried(self, status: int) -> None:
        """A SourceRejected (e.g. 422) is raised after one call."""
        result, calls = await self.run(httpx.Response(status), httpx.Response(200))
        assert type(result) is SourceRejected
        assert calls == 1

    async def test_oversize_not_retried(self) -> None:
        """A body over the cap is rejected after one call."""
        result, calls = await self.run(httpx.Response(200, content=b"x" * (CAP + 1)))
        assert type(result) is SourceRejected
        assert calls == 1

    async def test_redirect_is_retried(self) -> None:
        """A redirect is SourceUnavailable and so retried, never followed."""
        result, calls = await self.run(httpx.Response(302, headers={"Location": "https://x"}))
        assert type(result) is SourceUnavailable
        assert calls == FAST.attempts

    async def test_long_retry_after_not_waited(self) -> None:
        """A Retry-After above max_retry_after_seconds is raised at once (one call)."""
        policy = RetryPolicy(
            attempts=3, initial_seconds=0.001, max_seconds=0.01, max_retry_after_seconds=0
        )
        result, calls = await self.run(
            httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200), policy=policy
        )
        assert type(result) is SourceUnavailable
        assert result.retry_after == 1.0
        assert calls == 1

    async def test_short_retry_after_is_retried(self) -> None:
        """A Retry-After within max_retry_after_seconds is honoured and retried."""
        result, calls = await self.run(
            httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, content=b"{}")
        )
        assert isinstance(result, Response)
        assert calls == 2

    async def test_rate_limited_403_is_retried(self) -> None:
        """A rate-limited 403 whose reset is already past is retried."""
        reset = {"x-ratelimit-reset": str(int(time.time()) - 10)}
        result, calls = await self.run(
            httpx.Response(403, headers=reset), httpx.Response(200, content=b"{}")
        )
        assert isinstance(result, Response)
        assert calls == 2

    def test_default_policy(self) -> None:
        """The settings own the retry defaults (3 attempts, 0.5 s, 10 s cap); 30 s Retry-After."""
        fields = Settings.model_fields
        policy = RetryPolicy(
            attempts=fields["retry_attempts"].default,
            initial_seconds=fields["retry_initial_seconds"].default,
            max_seconds=fields["retry_max_seconds"].default,
        )
        assert policy == RetryPolicy(3, 0.5, 10.0, 30.0)


NOW = 1_700_000_000.0


def _headers(**values: str) -> Iterator[tuple[bytes, bytes]]:
    for key, value in values.items():
        yield key.replace("_", "-").encode(), value.encode("latin-1")


class TestParseRetryAfter:
    """`parse_retry_after` reads Retry-After or GitHub's x-ratelimit-reset."""

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            pytest.param({}, None, id="none"),
            pytest.param({"retry_after": "0"}, 0.0, id="delta-zero"),
            pytest.param({"retry_after": "120"}, 120.0, id="delta"),
            pytest.param({"retry_after": " 7 "}, 7.0, id="delta-whitespace"),
            pytest.param(
                {"retry_after": email.utils.formatdate(NOW + 30, usegmt=True)},
                30.0,
                id="http-date-future",
            ),
            pytest.param(
                {"retry_after": email.utils.formatdate(NOW - 30, usegmt=True)},
                0.0,
                id="http-date-past",
            ),
            pytest.param({"retry_after": "soon"}, None, id="garbage"),
            pytest.param({"retry_after": ""}, None, id="empty"),
            pytest.param({"retry_after": "-5"}, None, id="negative"),
            pytest.param({"retry_after": "1.5"}, None, id="fraction"),
            pytest.param({"retry_after": "\xb2"}, None, id="non-ascii-digit"),
            pytest.param({"x_ratelimit_reset": str(int(NOW) + 45)}, 45.0, id="reset-future"),
            pytest.param({"x_ratelimit_reset": str(int(NOW) - 45)}, 0.0, id="reset-past"),
            pytest.param({"x_ratelimit_reset": "later"}, None, id="reset-garbage"),
            pytest.param({"x_ratelimit_reset": "\xb3"}, None, id="reset-non-ascii-digit"),
            pytest.param(
                {"retry_after": "5", "x_ratelimit_reset": str(int(NOW) + 45)},
                5.0,
                id="retry-after-wins",
            ),
        ],
    )
    def test_table(self, headers: dict[str, str], expected: float | None) -> None:
        """Each header form maps to the expected wait in seconds (or None)."""
        parsed = parse_retry_after(httpx.Headers(list(_headers(**headers))), now=NOW)
        assert parsed == (pytest.approx(expected) if expected is not None else None)

    def test_uses_clock_when_now_omitted(self) -> None:
        """Without `now`, an HTTP-date is measured against the current time."""
        parsed = parse_retry_after(httpx.Headers({"Retry-After": http_date(50)}))
        assert parsed is not None
        assert 45 <= parsed <= 51


class TestGetOddHeaders:
    """`get` never lets a malformed header escape as a non-SourceError exception."""

    async def test_non_ascii_digit_retry_after(self) -> None:
        """A 503 whose Retry-After is a non-ASCII digit is still SourceUnavailable."""
        response = httpx.Response(503, headers=[(b"Retry-After", b"\xb2")])
        error = await fetch_error(response)
        assert type(error) is SourceUnavailable
        assert error.retry_after is None


# A CSV that compresses to a few KiB, so a cut at a few hundred bytes is mid-stream.
CSV = b"".join(b"model-%d,%d\n" % (i, i * 7919 % 100003) for i in range(800))


def gzipped(data: bytes) -> bytes:
    """`data` as a gzip member."""
    return gzip.compress(data)


class TestGetDecoding:
    """Bodies are decoded as they stream, and bounded by their decoded size."""

    @pytest.mark.parametrize(
        ("encoding", "encode"),
        [
            ("gzip", gzip.compress),
            ("x-gzip", gzip.compress),
            ("deflate", zlib.compress),
            ("deflate", lambda d: zlib.compress(d, wbits=-zlib.MAX_WBITS)),  # raw, no header
            ("identity", lambda d: d),
        ],
        ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "identity"],
    )
    async def test_decoded(self, encoding: str, encode: Callable[[bytes], bytes]) -> None:
        """Each supported encoding is decoded to the original bytes."""
        plain = b'{"a": {"name": "a"}}' * 20
        body = ChunkedBody([encode(plain)])
        response = httpx.Response(200, headers={"Content-Encoding": encoding}, stream=body)
        assert (await fetch(response)).content == plain

    async def test_bomb_stops_at_the_cap(self) -> None:
        """A small gzip body that inflates far past the cap is OVERSIZE, read only partly."""
        bomb = gzipped(bytes(64 * CAP))
        body = ChunkedBody([bomb[i : i + 16] for i in range(0, len(bomb), 16)])
        response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)
        error = await fetch_error(response)
        assert type(error) is SourceRejected and error.kind is ErrorKind.OVERSIZE
        assert f"{CAP}-byte cap" in str(error)
        assert body.sent < len(body.chunks)

    async def test_body_exactly_at_cap_when_compressed(self) -> None:
        """A gzip body whose decoded size is exactly the cap is accepted."""
        body = ChunkedBody([gzipped(b"x" * CAP)])
        response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)
        assert len((await fetch(response)).content) == CAP

    @pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])
    async def test_unsupported_encoding_rejected(self, encoding: str) -> None:
        """An encoding we did not ask for is refused, naming it."""
        body = ChunkedBody([b"xx"])
        response = httpx.Response(200, headers={"Content-Encoding": encoding}, stream=body)
        error = await fetch_error(response)
        assert type(error) is SourceRejected and error.kind is ErrorKind.INVALID
        assert encoding in str(error)

    async def test_corrupt_gzip(self) -> None:
        """A body that is not the gzip it claims is a SourceUnavailable naming the encoding."""
        body = ChunkedBody([b"nope"])
        response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)
        error = await fetch_error(response)
        assert type(error) is SourceUnavailable and "corrupt gzip body" in str(error)

    async def test_every_gzip_member_is_decoded(self) -> None:
        """Concatenated members are one gzip body (RFC 1952 2.2; gzip(1) and curl read them
        all): the first member alone used to be taken as the whole body."""
        plain = CSV
        body = ChunkedBody([gzipped(plain[:500]) + gzipped(plain[500:])])
        response = httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=body)
        assert (await fetch(response, max_bytes=len(plain))).content == plain

    @pytest.mark.parametrize(
        ("encoding", "raw"),
        [
            ("gzip", gzipped(CSV)[:200]),  # cut mid-stream
            ("gzip", gzipped(CSV)[:-8]),  # without its CRC and length
            ("gzip", gzipped(CSV) + b"GARBAGE"),
            ("deflate", zlib.compress(CSV)[:100]),
            ("deflate", zlib.compress(CSV) + b"GARBAGE"),
        ],
        ids=["gzip-cut", "gzip-no-trailer", "gzip-garbage", "deflate-cut", "deflate-garbage"],
    )
    async def test_a_stream_cut_or_padded_is_corrupt(self, encoding: str, raw: bytes) -> None:
        """A compressed stream that stops before its end (or goes on after it) is not the body
        that was sent: it used to be taken, a truncated CSV still parsing as fewer rows."""
        response = httpx.Response(
            200, headers={"Content-Encoding": encoding}, stream=ChunkedBody([raw])
        )
        error = await fetch_error(response, max_bytes=len(CSV))
        assert type(error) is SourceUnavailable, error
        assert f"corrupt {encoding} body" in str(error), error

    async def test_an_empty_encoded_answer_is_empty(self) -> None:
        """A 304 or empty answer that names an encoding has no stream to be cut."""
        response = httpx.Response(304, headers={"Content-Encoding": "gzip"}, stream=ChunkedBody([]))
        assert (await fetch(response)).content == b""

    async def test_a_cut_gzip_stream_from_a_real_server(self) -> None:
        """The same over a real socket: Content-Length matches, the gzip inside is cut."""
        raw = gzipped(CSV)[:300]
        with running() as server:
            server.script("/cut.csv", Reply(body=raw, headers={"Content-Encoding": "gzip"}))
            async with make_client(load_settings()) as client:
                with pytest.raises(SourceUnavailable) as info:
                    await get(client, f"{server.url}/cut.csv", max_bytes=len(CSV))
        assert "corrupt gzip body" in str(info.value)

    async def test_accept_encoding_of_the_client(self) -> None:
        """The daemon's client asks only for the encodings it bounds."""
        async with make_client(load_settings()) as client:
            assert client.headers["accept-encoding"] == "gzip, deflate"


class TestGetTlsAndProxies:
    """TLS failures are their own kind; a connection failure names the proxy it used."""

    async def test_certificate_failure_is_tls(self) -> None:
        """An untrusted certificate is kind tls, says what to do, and is not retried."""
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "self-signed certificate"
        connect = httpx.ConnectError("handshake")
        connect.__cause__ = cause
        recorder = Recorder(connect)
        async with client_for(recorder) as client:
            with pytest.raises(SourceUnavailable) as info:
                await get_with_retry(client, URL, policy=FAST, max_bytes=CAP)
        assert info.value.kind is ErrorKind.TLS
        assert "self-signed certificate" in str(info.value) and "ca_bundle" in str(info.value)
        assert recorder.calls == 1

    async def test_proxy_named_and_redacted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The proxy for the URL's scheme is named, without its credentials."""
        for name in ("HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        monkeypatch.setenv("HTTPS_PROXY", "http://u:pw@proxy.local:3128")
        error = await fetch_error(httpx.ConnectError("refused"))
        assert "via proxy http://***@proxy.local:3128" in str(error)

    async def test_no_proxy_bypass(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A host NO_PROXY exempts is reported without a proxy."""
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
        monkeypatch.setenv("NO_PROXY", "primary.test")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        error = await fetch_error(httpx.ConnectError("refused"))
        assert "proxy" not in str(error)

    async def test_redirect_location_redacted(self) -> None:
        """A redirect's Location is shown without credentials."""
        response = httpx.Response(302, headers={"Location": "https://u:pw@elsewhere/x"})
        error = await fetch_error(response)
        assert "pw" not in str(error) and "https://***@elsewhere/x" in str(error)
