"""The PRIMARY API: v2 and v1 category data, and change detection from its metadata."""

from __future__ import annotations

import asyncio
import secrets
from typing import Final
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, spec_for
from horde_replica_sync.errors import ErrorKind, SourceName, SourceRejected
from horde_replica_sync.ports import INITIALIZED, PLAIN, DataKey, Fetched, Operation, Stamps
from horde_replica_sync.redact import redact_url
from horde_replica_sync.sources.http import (
    Cooldown,
    Response,
    RetryPolicy,
    get_with_retry,
)
from horde_replica_sync.validation import describe_validation_error

# A Unix time a float holds exactly (metrics are floats); past it, or before 1970, the
# entry is unusable: 10**400 once stopped the daemon at the gauge (OverflowError).
MAX_STAMP: Final = 2**53


class _MetadataEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # "123" and true are not stamps
    last_updated: int | None = Field(None, ge=0, le=MAX_STAMP)


def _operation(entry: object) -> Operation | None:
    """The entry's last operation (None when it does not say); evidence only, never an error."""
    if not isinstance(entry, dict) or "last_operation_type" not in entry:
        return None
    kind, model = entry["last_operation_type"], entry.get("last_operation_model")
    if kind is None:
        return INITIALIZED
    if not isinstance(kind, str):
        return None
    return Operation(kind, model if isinstance(model, str) else None)


# The document is parsed entry by entry: one bad entry blinds change detection for its
# category only, never for the others.
_DOCUMENT: TypeAdapter[dict[str, object]] = TypeAdapter(dict[str, object])


class PrimarySource:
    """Reads one PRIMARY (`horde-model-reference` in PRIMARY mode) over HTTP.

    `api_url` includes `/api` (e.g. `https://models.aihorde.net/api`) and is otherwise opaque.

    Data requests are content-keyed (`DataKey`): they carry the stamp they must be as new as
    (`?last_updated=`; the legacy layer also `&v2=`, its v2 body's digest), so every host that
    saw the same metadata asks for the same URL and any HTTP cache in between fetches it from
    the PRIMARY once; `fresh` adds a key no cache has seen. The PRIMARY ignores query
    parameters it does not know. Metadata polls stay plain.
    """

    name: Final = SourceName.PRIMARY

    def __init__(
        self,
        client: httpx.AsyncClient,
        api_url: str,
        *,
        policy: RetryPolicy,
        max_bytes: int,
        deadline_seconds: float | None = None,
    ) -> None:
        self._client = client
        self.api_url = api_url.rstrip("/")
        self._policy = policy
        self._max_bytes = max_bytes
        self._deadline_seconds = deadline_seconds
        self.cooldown = Cooldown("the PRIMARY", waited_in_run=policy.max_retry_after_seconds)

    def v2_url(self, category: MODEL_REFERENCE_CATEGORY) -> str:
        """The v2 endpoint of `category`."""
        return f"{self.api_url}/model_references/v2/{category.value}"

    def legacy_url(self, category: MODEL_REFERENCE_CATEGORY) -> str | None:
        """The v1 endpoint of `category`, or None when it has no legacy format."""
        name = spec_for(category).primary_legacy_name
        return None if name is None else f"{self.api_url}/model_references/v1/{name}"

    async def fetch_v2(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        """The v2 body of `category` under `key`; None when the PRIMARY has none (404)."""
        return await self._fetch(_keyed(self.v2_url(category), key), category)

    async def fetch_legacy(
        self, category: MODEL_REFERENCE_CATEGORY, key: DataKey = PLAIN
    ) -> Fetched | None:
        """The v1 (legacy) body of `category` under `key`; None when there is none."""
        url = self.legacy_url(category)
        if url is None:
            return None
        return await self._fetch(_keyed(url, key), category)

    def catalog_url(self, path: str) -> str:
        """A catalog endpoint (`catalogs.CatalogSpec.export` or `.probe`)."""
        return f"{self.api_url}/{path}"

    async def fetch_catalog(
        self, path: str, *, revision: str | None = None, fresh: bool = False
    ) -> Fetched | None:
        """A catalog's export or probe page; None on 404.

        An export is content-keyed by the `revision` a probe showed (`&revision=`), like
        category data by its stamp, so a site cache stores it per revision; `fresh` goes past
        every cache. The PRIMARY ignores both parameters.
        """
        query: dict[str, str] = {}
        if revision is not None:
            query["revision"] = revision
        if fresh:
            query["fresh"] = secrets.token_hex(8)
        url = self.catalog_url(path)
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        response = await self._get(url)
        if response.status == 404:
            return None
        if response.status != 200:
            raise SourceRejected(url, f"unexpected HTTP {response.status}", kind=ErrorKind.HTTP_4XX)
        return Fetched(redact_url(url), response.content)

    async def fetch_last_updated(self) -> Stamps:
        """Each category's newest `last_updated` over the v1 and v2 metadata families.

        Both families are read because a legacy-canonical PRIMARY bumps only v1 metadata
        when it rewrites v2 files (upstream-protocol §2.3). One family failing is tolerated;
        both failing raises the v2 family's error.
        """
        families = ("v1", "v2")
        answers = await asyncio.gather(
            *(self._fetch_metadata(family) for family in families), return_exceptions=True
        )
        merged: dict[MODEL_REFERENCE_CATEGORY, int] = {}
        unusable: dict[MODEL_REFERENCE_CATEGORY, str] = {}
        operations: dict[MODEL_REFERENCE_CATEGORY, Operation] = {}
        by_v1: set[MODEL_REFERENCE_CATEGORY] = set()
        for family, answer in zip(families, answers, strict=True):  # v1 first: on a tie, v2's
            if isinstance(answer, BaseException):
                continue
            for category, stamp in answer.last_updated.items():
                held = merged.get(category)
                if held is not None and stamp < held:
                    continue
                if held is None or stamp > held:  # a newer stamp: the older operation is moot
                    operations.pop(category, None)
                    by_v1.discard(category)
                    if family == "v1":
                        by_v1.add(category)
                elif family == "v2":  # a tie: both families moved together
                    by_v1.discard(category)
                merged[category] = stamp
                if category in answer.operations:
                    operations[category] = answer.operations[category]
            unusable |= answer.unusable
        errors = [a for a in answers if isinstance(a, BaseException)]
        if len(errors) == len(families):
            raise errors[-1]
        # A category one family stamps well is usable, whatever the other family says of it.
        usable_only = {c: why for c, why in unusable.items() if c not in merged}
        return Stamps(merged, usable_only, operations, frozenset(by_v1))

    async def _fetch(self, url: str, category: MODEL_REFERENCE_CATEGORY) -> Fetched | None:
        try:
            response = await self._get(url)
        except SourceRejected as exc:
            if exc.status != 422:
                raise
            reason = f"the PRIMARY does not know category {category.value!r} (HTTP 422)"
            raise SourceRejected(url, reason, kind=ErrorKind.UNKNOWN_CATEGORY, status=422) from exc
        if response.status == 404:
            return None
        if response.status != 200:
            raise SourceRejected(url, f"unexpected HTTP {response.status}", kind=ErrorKind.HTTP_4XX)
        return Fetched(redact_url(url), response.content)

    async def _get(self, url: str) -> Response:
        with self.cooldown.guard(url):
            return await get_with_retry(
                self._client,
                url,
                policy=self._policy,
                max_bytes=self._max_bytes,
                deadline_seconds=self._deadline_seconds,
            )

    async def _fetch_metadata(self, family: str) -> Stamps:
        url = f"{self.api_url}/model_references/{family}/metadata/metadata"
        response = await self._get(url)
        if response.status != 200:
            raise SourceRejected(url, f"unexpected HTTP {response.status}", kind=ErrorKind.HTTP_4XX)
        try:
            entries = _DOCUMENT.validate_json(response.content)
        except ValidationError as exc:
            raise SourceRejected(
                url,
                f"malformed metadata: {describe_validation_error(exc)}",
                kind=ErrorKind.INVALID,
            ) from exc
        stamps, unusable, operations = {}, {}, {}
        for category in MODEL_REFERENCE_CATEGORY:
            if category.value not in entries:
                continue
            try:
                entry = _MetadataEntry.model_validate(entries[category.value])
            except ValidationError as exc:
                unusable[category] = f"{redact_url(url)}: {describe_validation_error(exc)}"
                continue
            if entry.last_updated is not None:
                stamps[category] = entry.last_updated
                if operation := _operation(entries[category.value]):
                    operations[category] = operation
        return Stamps(stamps, unusable, operations)


def _keyed(url: str, key: DataKey) -> str:
    """`url` with its content key (`DataKey`), and a one-off key when it must be fresh."""
    query: dict[str, int | str] = {}
    if key.stamp is not None:
        query["last_updated"] = key.stamp
    if key.v2 is not None:
        query["v2"] = key.v2
    if key.fresh:
        query["fresh"] = secrets.token_hex(8)
    return f"{url}?{urlencode(query)}" if query else url
