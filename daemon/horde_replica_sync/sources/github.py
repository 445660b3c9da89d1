"""GitHub raw legacy files: the fallback (or only) source, polite to GitHub's limits.

Unlike upstream, the base URL is configurable, so a proxy or mirror of
raw.githubusercontent.com works. Requests are conditional (`If-None-Match`), and a rate
limit answer puts the whole source on cooldown instead of retrying into it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Final

import httpx

from horde_replica_sync.categories import GithubRepo
from horde_replica_sync.errors import ErrorKind, SourceName, SourceRejected
from horde_replica_sync.ports import Fetched, NotModified
from horde_replica_sync.redact import redact_url
from horde_replica_sync.sources.http import Cooldown, RetryPolicy, get_with_retry


class GithubSource:
    """Reads legacy files from `{base_url}/{owner}/{repo}/refs/heads/{branch}/{file}`."""

    name: Final = SourceName.GITHUB

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        policy: RetryPolicy,
        max_bytes: int,
        deadline_seconds: float | None = None,
        owner: str,
        branch: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        # A rate limit is never waited out inside a run: it starts a cooldown instead.
        self._policy = dataclasses.replace(policy, max_retry_after_seconds=0.0)
        self._max_bytes = max_bytes
        self._deadline_seconds = deadline_seconds
        self._owner = owner
        self._branch = branch
        self.cooldown = Cooldown("GitHub", clock=clock)

    def url(self, repo: GithubRepo, file: str) -> str:
        """The raw URL of `file` in `repo`."""
        return f"{self.base_url}/{self._owner}/{repo.value}/refs/heads/{self._branch}/{file}"

    async def fetch(self, repo: GithubRepo, file: str, etag: str | None) -> Fetched | NotModified:
        """Fetch one file, conditionally on `etag` when we hold one."""
        url = self.url(repo, file)
        headers = {"If-None-Match": etag} if etag else None
        with self.cooldown.guard(url):
            response = await get_with_retry(
                self._client,
                url,
                policy=self._policy,
                max_bytes=self._max_bytes,
                deadline_seconds=self._deadline_seconds,
                headers=headers,
            )
        if response.status == 304 and etag:
            return NotModified(redact_url(url), etag)
        if response.status != 200:
            raise SourceRejected(
                url, f"HTTP {response.status}", kind=ErrorKind.HTTP_4XX, status=response.status
            )
        return Fetched(redact_url(url), response.content, response.etag)
