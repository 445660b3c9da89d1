"""The chaos PRIMARY: a `FaultServer` whose data never stops changing, and which remembers it.

Every v2/v1 body gets a new version on every request (deterministic per version, so it can be
rebuilt), and every body it ever served is remembered by sha256, per replica path.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any, Final

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY, Layer, spec_for
from horde_replica_sync.store import sha256_hex
from tests.faultserver import FaultServer, Reply, Seen

METADATA_PATHS: Final = tuple(
    f"/api/model_references/{family}/metadata/metadata" for family in ("v1", "v2")
)


def body_for(
    category: MODEL_REFERENCE_CATEGORY,
    layer: Layer,
    version: int,
    *,
    min_records: int,
    max_records: int,
) -> bytes:
    """The body of `category`/`layer` at `version`: deterministic, so it can be rebuilt."""
    rng = random.Random(f"{category.value}/{layer.value}/{version}")
    count = rng.randint(min_records, max_records)
    data: dict[str, Any] = {}
    for i in range(count):
        name = f"{category.value}-model-{i}"
        data[name] = {
            "name": name,
            "version": str(version),  # upstream reads it as a string (record_rules too)
            "layer": layer.value,
            "description": f"{category.value} model {i} as served in version {version}",
            "baseline": "stable_diffusion_xl" if i % 2 else "stable_diffusion_1",
            "nsfw": i % 3 == 0,
            "config": {
                "download": [
                    {
                        "file_name": f"{name}-v{version}.safetensors",
                        "file_url": f"https://files.test/{name}-v{version}.safetensors",
                        "sha256sum": f"{rng.getrandbits(256):064x}",
                    }
                ]
            },
        }
    return json.dumps(data, separators=(",", ":")).encode()


def metadata_body(categories: tuple[MODEL_REFERENCE_CATEGORY, ...], stamp: int) -> bytes:
    """A metadata/metadata body giving every category `stamp`."""
    return json.dumps(
        {c.value: {"category": c.value, "last_updated": stamp} for c in categories}
    ).encode()


class ChangingPrimary(FaultServer):
    """A PRIMARY that serves a new version of every v2/v1 body on every request.

    Every body it ever served is remembered by its sha256 (and version), per replica path,
    so "equals one version the server served" is a set lookup. `freeze()` pins one version
    (and a metadata stamp newer than any before) so a recovery run has one right answer.
    """

    def __init__(
        self,
        categories: tuple[MODEL_REFERENCE_CATEGORY, ...],
        *,
        min_records: int = 200,
        max_records: int = 2000,
    ) -> None:
        super().__init__()
        self.categories = categories
        self.min_records = min_records
        self.max_records = max_records
        self.routes: dict[str, tuple[MODEL_REFERENCE_CATEGORY, Layer]] = {}
        for category in categories:
            self.routes[f"/api/model_references/v2/{category.value}"] = (category, Layer.V2)
            name = spec_for(category).primary_legacy_name
            if name is not None:
                self.routes[f"/api/model_references/v1/{name}"] = (category, Layer.LEGACY)
        self.relpaths = tuple(
            sorted(spec_for(c).relpath(layer) for c, layer in self.routes.values())
        )
        self.served: dict[str, dict[str, int]] = {rel: {} for rel in self.relpaths}
        self.bodies_served = 0
        self._version = 0
        self._frozen: int | None = None
        self._guard = threading.Lock()
        # A killed client resets its connections; that is the point, not an error to print.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def body(self, category: MODEL_REFERENCE_CATEGORY, layer: Layer, version: int) -> bytes:
        """The body of `category`/`layer` at `version`, with this server's record range."""
        return body_for(
            category,
            layer,
            version,
            min_records=self.min_records,
            max_records=self.max_records,
        )

    def _next_version(self) -> int:
        with self._guard:
            if self._frozen is not None:
                return self._frozen
            self._version += 1
            return self._version

    def next_reply(self, path: str, headers: dict[str, str], query: str = "") -> Reply:
        """Answer metadata with a moving stamp and data with a brand-new version."""
        with self._lock:  # FaultServer's own lock guards `requests`
            self.requests.append(Seen(path, headers, query))
        if path in METADATA_PATHS:
            return Reply(body=metadata_body(self.categories, self._next_version()))
        route = self.routes.get(path)
        if route is None:
            return Reply(404, b'{"detail":"Not Found"}')
        category, layer = route
        version = self._next_version()
        body = self.body(category, layer, version)
        with self._guard:  # remembered before a single byte leaves
            self.served[spec_for(category).relpath(layer)][sha256_hex(body)] = version
            self.bodies_served += 1
        return Reply(body=body)

    def freeze(self) -> dict[str, str]:
        """Serve one new version from now on; return each replica path's expected digest."""
        with self._guard:
            self._version += 1
            self._frozen = self._version
            version = self._frozen
        return {
            spec_for(category).relpath(layer): sha256_hex(self.body(category, layer, version))
            for category, layer in self.routes.values()
        }

    def thaw(self) -> None:
        """Go back to a new version per request."""
        with self._guard:
            self._frozen = None

    def version_of(self, relpath: str, digest: str) -> int | None:
        """The version whose body for `relpath` has `digest`, or None if never served."""
        with self._guard:
            return self.served.get(relpath, {}).get(digest)
