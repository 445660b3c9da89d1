"""Whom TLS trusts, and how a TLS failure is told apart from a plain connection failure.

The system trust store (via `truststore`, as pip does) is where corporate and site proxies'
CAs are installed; certifi's bundle, httpx's default, would ignore them. `ca_bundle` adds a
PEM file on top. On Linux the system store is OpenSSL's default, so `SSL_CERT_FILE` /
`SSL_CERT_DIR` replace it, as for any OpenSSL program.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

import truststore

ADVICE: Final = (
    "if a proxy or a private CA signs this certificate, install that CA in the system trust "
    "store or set ca_bundle (HORDE_REPLICA_CA_BUNDLE) to its PEM file"
)


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """A client context trusting the system store, plus `ca_bundle` when given."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_bundle is not None:
        context.load_verify_locations(cafile=ca_bundle)
    return context


def tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error somewhere in `exc`'s chain of causes (httpx wraps httpcore wraps ssl)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(error: ssl.SSLError) -> str:
    """What failed, and what to do about it."""
    what = getattr(error, "verify_message", None) or error.reason or str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {what}; {ADVICE}"
    return f"TLS handshake failed ({what}); {ADVICE}"
