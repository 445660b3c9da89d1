"""The one way a URL leaves the process: without credentials or query values.

A URL may carry a password (`https://user:password@host/api`) or a token (a user name such
as `https://TOKEN@host`, or `?token=…` in a proxy URL). Requests use the real URL; every
URL that is logged, stored, printed or exported goes through `redact_url` first.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

HIDDEN: Final = "***"
# The content keys this daemon adds to data requests (sources/primary.py): stamps and
# one-off nonces, never secrets, and the stamp is what a diagnosis of a stale cache needs.
OWN_PARAMETERS: Final = frozenset({"last_updated", "v2", "fresh"})
ENCODING_ADVICE: Final = (
    'percent-encode "/", "?", "#" and "@" in a user name or password (e.g. "/" as %2F), '
    "and give the port as a number from 1 to 65535"
)
"""What to do about a URL whose authority no request can use (config.py, runtime.py)."""


def redact_url(url: str) -> str:
    """`url` with its userinfo (user and password) and query values replaced by `***`.

    The fragment is dropped. Idempotent, so a URL may be redacted twice on its way out.
    An `@` past the parsed authority means a password with an unescaped "/", "?" or "#"
    (the parser ends the authority there): all up to the last `@` is hidden, a path or
    query value with an `@` included (too much hidden beats a password shown).
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: show nothing of it
        return f"{HIDDEN}(unparsable URL)"
    if not parts.netloc and "@" in url:  # no "//": "user:password@host:port" (a proxy value)
        return f"{HIDDEN}@{url.rpartition('@')[2]}"
    after_scheme = url.partition("//")[2]
    if "@" in after_scheme and "@" not in parts.netloc:
        return redact_url(f"{parts.scheme}://{HIDDEN}@{after_scheme.rpartition('@')[2]}")
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _hidden_values(parts.query), ""))


def _hidden_values(query: str) -> str:
    """`a=1&b=2` -> `a=***&b=***`: the names help a diagnosis, the values may be tokens.

    Our own content keys (`OWN_PARAMETERS`) are shown as they are.
    """
    if not query:
        return ""
    return "&".join(_hidden_value(pair) for pair in query.split("&"))


def _hidden_value(pair: str) -> str:
    name, _, _ = pair.partition("=")
    return pair if name in OWN_PARAMETERS else f"{name}={HIDDEN}"


def carries_credentials(name: str, value: str) -> bool:
    """Whether the environment variable `name=value` holds a URL with a user or password.

    Any word of the value (a list of URLs included) with an `@` after its `scheme://`, and
    a proxy variable's scheme-less `user:password@host:port`. An `@` in a path counts too:
    too much withheld beats a password passed on.
    """
    for word in value.replace(",", " ").split():
        scheme, sep, rest = word.partition("://")
        if sep and "@" in rest and scheme:
            return True
        if not sep and "@" in word and name.lower().endswith("_proxy"):
            return True
    return False
