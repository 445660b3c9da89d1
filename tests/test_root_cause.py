"""`root_cause`: a nested error message cut to what an operator acts on."""

from __future__ import annotations

import pytest

from horde_replica_sync.errors import root_cause

META = "http://127.0.0.1:9/api/model_references/v2/metadata/metadata"
GITHUB = "http://127.0.0.1:9/Haidra-Org/AI-Horde-image-model-reference/refs/heads/main/blip.json"
CONNECT = "connection failed (ConnectError: All connection attempts failed)"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (f"{META}: {CONNECT}", f"{META}: connection failed"),
        (  # GitHub's failure after the PRIMARY's: GitHub's is the last word for the layer
            f"{GITHUB}: {CONNECT} (GitHub fallback, after the PRIMARY was unavailable: "
            "http://127.0.0.1:9/api/model_references/v2/blip: skipped: the PRIMARY is "
            f"unavailable this run ({META}: {CONNECT}))",
            f"{GITHUB}: connection failed",
        ),
        (  # a request skipped for the run's outage: the outage is the cause
            "http://127.0.0.1:9/api/model_references/v2/lora: skipped: the PRIMARY is "
            f"unavailable this run ({META}: {CONNECT})",
            f"{META}: connection failed",
        ),
        (  # a catalog skipped for the run's outage (its only source): the outage too
            "the baselines catalog (its only source is the PRIMARY; the last good copy is "
            f"kept): skipped: the PRIMARY is unavailable this run ({META}: {CONNECT})",
            f"{META}: connection failed",
        ),
        ("https://***@h/api/model_references/v2/esrgan: HTTP 500", None),
        ("https://h/api/x: HTTP 403 (rate limited)", None),  # not an exception: kept
        ("records unusable: 'a' lacks baseline", None),
    ],
)
def test_root_cause(error: str, expected: str | None) -> None:
    """The chain and the library's exception go; the URL and what happened stay."""
    assert root_cause(error) == (error if expected is None else expected)
