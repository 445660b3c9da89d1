"""A response body read under a cap on its *decoded* size, decoded as it streams.

httpx decodes each network chunk whole, so one 64 KiB chunk of a gzip bomb inflates to
~64 MB before any cap can look at it. Here the raw bytes are inflated with
`decompressobj.decompress(data, max_length)`, never past the room left under the cap, so
the memory a body costs stays near the cap whatever its compression ratio.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Final

import httpx

from horde_replica_sync.errors import ErrorKind, SourceRejected, SourceUnavailable

ACCEPT_ENCODING: Final = "gzip, deflate"
"""Sent with every request: the encodings `read_decoded` can bound (no br, no zstd)."""

_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_PIECE: Final = 256 * 1024  # decoded bytes per step: a bomb never costs more than cap + this
_ENCODINGS: Final = {"gzip": _GZIP_WBITS, "x-gzip": _GZIP_WBITS, "deflate": zlib.MAX_WBITS}


class _Inflater:
    """Incremental gzip/deflate decoding, in pieces, that stops once past the room it has."""

    def __init__(self, wbits: int) -> None:
        self._wbits = wbits
        self._inflate = zlib.decompressobj(wbits)
        self._started = False

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        """Decoded pieces of `data`; more than `room` bytes in all means the body is too big."""
        pending = data
        while pending and room >= 0:
            if self._inflate.eof:  # bytes after the end: another gzip member, or corruption
                self._next_member()
            piece = self._decompress(pending, min(room + 1, _PIECE))
            # Input not yet used: held back by max_length, or past the end of the stream.
            pending = self._inflate.unconsumed_tail or self._inflate.unused_data
            room -= len(piece)
            yield piece

    def _next_member(self) -> None:
        if self._wbits != _GZIP_WBITS:
            msg = "data after the end of the stream"
            raise zlib.error(msg)
        self._inflate = zlib.decompressobj(self._wbits)  # concatenated members: RFC 1952 2.2

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        try:
            return self._inflate.decompress(data, max_length)
        except zlib.error:
            if self._started or self._wbits != zlib.MAX_WBITS:
                raise
            # Some servers send raw deflate without the zlib header (httpx allows it too).
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._inflate.decompress(data, max_length)
        finally:
            self._started = True

    def flush(self) -> bytes:
        """What is left once the input ended (small: the input was consumed to the end).

        zlib takes a stream that stops early without a word: a cut body must not pass for a
        shorter one (a CSV cut at a line break still parses).
        """
        rest = self._inflate.flush()
        if self._started and not self._inflate.eof:
            msg = "the stream stops before its end"
            raise zlib.error(msg)
        return rest


async def read_decoded(url: str, response: httpx.Response, max_bytes: int) -> bytes:
    """The decoded body of `response`; `SourceRejected` (OVERSIZE) past `max_bytes`."""
    if response.is_stream_consumed:  # built in memory (e.g. a MockTransport), decoded already
        _check_cap(url, response.content, max_bytes)
        return response.content
    inflater = _inflater_for(url, response.headers.get("content-encoding", ""))
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            for piece in inflater.decode(raw, max_bytes - len(body)) if inflater else (raw,):
                body += piece
                _check_cap(url, body, max_bytes)
        if inflater:
            body += inflater.flush()
            _check_cap(url, body, max_bytes)
    except zlib.error as exc:
        reason = f"corrupt {response.headers['content-encoding']} body ({exc})"
        raise SourceUnavailable(url, reason, kind=ErrorKind.CONNECTION) from exc
    return bytes(body)


def _check_cap(url: str, body: bytes | bytearray, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise SourceRejected(url, f"body exceeds the {max_bytes}-byte cap", kind=ErrorKind.OVERSIZE)


def _inflater_for(url: str, content_encoding: str) -> _Inflater | None:
    """The decoder of the body's encoding; None for identity. Anything else is refused."""
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _ENCODINGS:
        return _Inflater(_ENCODINGS[codings[0]])
    reason = (
        f"unsupported Content-Encoding {content_encoding!r} (we ask for {ACCEPT_ENCODING}, or none)"
    )
    raise SourceRejected(url, reason, kind=ErrorKind.INVALID)
