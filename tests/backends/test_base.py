"""Tests of `ModelReferenceBackend`, `ReplicateMode` and `CategoryMetadata`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest
from structlog.testing import capture_logs

import horde_replica_sync.backends as backends_pkg
from horde_replica_sync.backends import CategoryMetadata, ModelReferenceBackend, ReplicateMode
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY

C = MODEL_REFERENCE_CATEGORY


class Minimal(ModelReferenceBackend):
    """Implements only the mandatory methods; records staleness and write calls."""

    def __init__(self, mode: ReplicateMode = ReplicateMode.REPLICA) -> None:
        super().__init__(mode)
        self.events: list[str] = []
        self.writes: list[tuple[Any, ...]] = []

    def fetch_category(
        self, category: MODEL_REFERENCE_CATEGORY, *, force_refresh: bool = False
    ) -> dict[str, Any] | None:
        return None

    def fetch_all_categories(
        self, *, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        return dict.fromkeys(MODEL_REFERENCE_CATEGORY)

    async def fetch_category_async(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        *,
        httpx_client: httpx.AsyncClient | None = None,
        force_refresh: bool = False,
    ) -> dict[str, Any] | None:
        return None

    async def fetch_all_categories_async(
        self, *, httpx_client: httpx.AsyncClient | None = None, force_refresh: bool = False
    ) -> dict[MODEL_REFERENCE_CATEGORY, dict[str, Any] | None]:
        return dict.fromkeys(MODEL_REFERENCE_CATEGORY)

    def needs_refresh(self, category: MODEL_REFERENCE_CATEGORY) -> bool:
        return False

    def _mark_stale_impl(self, category: MODEL_REFERENCE_CATEGORY) -> None:
        self.events.append(f"impl:{category.value}")

    def get_category_file_path(self, category: MODEL_REFERENCE_CATEGORY) -> Path | None:
        return None

    def get_all_category_file_paths(self) -> dict[MODEL_REFERENCE_CATEGORY, Path | None]:
        return dict.fromkeys(MODEL_REFERENCE_CATEGORY)

    def get_legacy_json(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> dict[str, Any] | None:
        return None

    def get_legacy_json_string(
        self, category: MODEL_REFERENCE_CATEGORY, redownload: bool = False
    ) -> str | None:
        return None


class Writer(Minimal):
    """A backend that opts into v2 and legacy writes and records what it is asked to write."""

    def supports_writes(self) -> bool:
        return True

    def supports_legacy_writes(self) -> bool:
        return True

    def update_model(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_dict: dict[str, Any],
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.writes.append(("v2", category, model_name, record_dict, logical_user_id, request_id))

    def update_model_legacy(
        self,
        category: MODEL_REFERENCE_CATEGORY,
        model_name: str,
        record_dict: dict[str, Any],
        *,
        logical_user_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.writes.append(("v1", category, model_name, record_dict, logical_user_id, request_id))


class Record(pydantic.BaseModel):
    """A record with defaults, to show that unset fields are not written."""

    name: str
    nsfw: bool = False
    baseline: str | None = None


def _metadata(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "category": "blip",
        "last_updated": 10,
        "initialization_time": 1,
        "last_successful_operation": 9,
        "backend_type": "FileSystemBackend",
    }
    return base | overrides


class TestPackageExports:
    def test_all_names_importable(self) -> None:
        """The package exports the backend contract names through `__all__`."""
        for name in ("ModelReferenceBackend", "ReplicaBackendBase", "ReplicateMode"):
            assert name in backends_pkg.__all__
            assert hasattr(backends_pkg, name)
        assert "CategoryMetadata" in backends_pkg.__all__


class TestReplicateMode:
    def test_values(self) -> None:
        """The two modes are a StrEnum whose values are their upper-case names."""
        assert [m.value for m in ReplicateMode] == ["PRIMARY", "REPLICA"]
        assert ReplicateMode("REPLICA") is ReplicateMode.REPLICA
        assert ReplicateMode.PRIMARY == "PRIMARY"

    def test_default_mode_is_replica(self) -> None:
        """A backend built without a mode is a REPLICA, reported by `get_replicate_mode`."""
        assert Minimal().get_replicate_mode() is ReplicateMode.REPLICA
        assert Minimal(ReplicateMode.PRIMARY).get_replicate_mode() is ReplicateMode.PRIMARY
        assert Minimal(ReplicateMode.PRIMARY).replicate_mode is ReplicateMode.PRIMARY


class TestCategoryMetadata:
    def test_defaults(self) -> None:
        """Counters default to 0, the optional fields to None and the schema to 1.0.0."""
        meta = CategoryMetadata.model_validate(_metadata())
        assert (meta.total_creates, meta.total_updates, meta.total_deletes) == (0, 0, 0)
        assert (meta.total_models, meta.error_count) == (0, 0)
        assert meta.last_operation_type is None
        assert meta.last_operation_model is None
        assert meta.metadata_schema_version == "1.0.0"

    def test_extra_fields_ignored(self) -> None:
        """Fields a newer PRIMARY adds are dropped rather than rejected."""
        meta = CategoryMetadata.model_validate(_metadata(future_field=1))
        assert "future_field" not in meta.model_dump()

    @pytest.mark.parametrize("field", ["total_creates", "total_updates", "total_deletes"])
    def test_negative_counter_rejected(self, field: str) -> None:
        """Operation counters cannot be negative."""
        with pytest.raises(pydantic.ValidationError):
            CategoryMetadata.model_validate(_metadata(**{field: -1}))

    def test_negative_total_models_rejected(self) -> None:
        """The model count cannot be negative."""
        with pytest.raises(pydantic.ValidationError):
            CategoryMetadata.model_validate(_metadata(total_models=-1))

    def test_operation_type_literal(self) -> None:
        """Only create, update and delete are valid operation types."""
        meta = CategoryMetadata.model_validate(_metadata(last_operation_type="delete"))
        assert meta.last_operation_type == "delete"
        with pytest.raises(pydantic.ValidationError):
            CategoryMetadata.model_validate(_metadata(last_operation_type="rename"))

    def test_required_fields(self) -> None:
        """Category, timestamps and backend type must be present."""
        with pytest.raises(pydantic.ValidationError):
            CategoryMetadata.model_validate({"category": "blip"})


class TestAbstractContract:
    def test_cannot_instantiate_base(self) -> None:
        """The base class is abstract."""
        with pytest.raises(TypeError):
            ModelReferenceBackend()  # type: ignore[abstract]

    def test_abstract_method_set(self) -> None:
        """Exactly the read methods plus the staleness hooks must be implemented by subclasses."""
        assert ModelReferenceBackend.__abstractmethods__ == {
            "fetch_category",
            "fetch_all_categories",
            "fetch_category_async",
            "fetch_all_categories_async",
            "get_category_file_path",
            "get_all_category_file_paths",
            "get_legacy_json",
            "get_legacy_json_string",
            "needs_refresh",
            "_mark_stale_impl",
        }


class TestOptionalCapabilities:
    @pytest.mark.parametrize(
        "probe",
        [
            "supports_writes",
            "supports_legacy_writes",
            "supports_cache_warming",
            "supports_health_checks",
            "supports_statistics",
            "supports_metadata",
            "support_any_writes",
        ],
    )
    def test_probes_false_by_default(self, probe: str) -> None:
        """Every capability probe answers False unless a subclass opts in."""
        assert getattr(Minimal(), probe)() is False

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("update_model", (C.blip, "m", {})),
            ("delete_model", (C.blip, "m")),
            ("update_model_legacy", (C.blip, "m", {})),
            ("delete_model_legacy", (C.blip, "m")),
            ("update_model_from_base_model", (C.blip, "m", Record(name="m"))),
            ("update_model_legacy_from_base_model", (C.blip, "m", Record(name="m"))),
            ("warm_cache", ()),
            ("health_check", ()),
            ("get_statistics", ()),
            ("get_metadata", (C.blip,)),
            ("get_legacy_metadata", (C.blip,)),
            ("get_all_metadata", ()),
            ("get_all_legacy_metadata", ()),
        ],
    )
    def test_sync_operations_raise(self, method: str, args: tuple[Any, ...]) -> None:
        """Optional synchronous operations raise NotImplementedError naming the class."""
        with pytest.raises(NotImplementedError, match="Minimal"):
            getattr(Minimal(), method)(*args)

    @pytest.mark.parametrize(
        ("method", "args"),
        [
            ("warm_cache_async", ()),
            ("get_metadata_async", (C.blip,)),
            ("get_legacy_metadata_async", (C.blip,)),
            ("get_all_metadata_async", ()),
            ("get_all_legacy_metadata_async", ()),
        ],
    )
    async def test_async_operations_raise(self, method: str, args: tuple[Any, ...]) -> None:
        """Optional coroutine operations raise NotImplementedError when awaited."""
        with pytest.raises(NotImplementedError):
            await getattr(Minimal(), method)(*args)

    def test_support_any_writes_follows_probes(self) -> None:
        """`support_any_writes` is True once either write probe is True."""

        class LegacyOnly(Minimal):
            def supports_legacy_writes(self) -> bool:
                return True

        assert LegacyOnly().support_any_writes() is True
        assert Writer().support_any_writes() is True


class TestWriteFromBaseModel:
    def test_dumps_only_set_fields(self) -> None:
        """With writes supported, the record is sent as `model_dump(exclude_unset=True)`."""
        writer = Writer()
        writer.update_model_from_base_model(
            C.lora, "m", Record(name="m", nsfw=True), logical_user_id="u1", request_id="r1"
        )
        assert writer.writes == [("v2", C.lora, "m", {"name": "m", "nsfw": True}, "u1", "r1")]

    def test_legacy_dumps_only_set_fields(self) -> None:
        """With legacy writes supported, the legacy variant goes through `update_model_legacy`."""
        writer = Writer()
        writer.update_model_legacy_from_base_model(C.blip, "m", Record(name="m"))
        assert writer.writes == [("v1", C.blip, "m", {"name": "m"}, None, None)]

    def test_refused_without_write_support(self) -> None:
        """Without `supports_writes`, `update_model` is never reached."""

        class Sneaky(Writer):
            def supports_writes(self) -> bool:
                return False

        sneaky = Sneaky()
        with pytest.raises(NotImplementedError):
            sneaky.update_model_from_base_model(C.blip, "m", Record(name="m"))
        assert sneaky.writes == []


class TestInvalidation:
    def test_mark_stale_runs_impl_then_callbacks_in_order(self) -> None:
        """`mark_stale` records staleness first, then calls listeners in registration order."""
        backend = Minimal()
        backend.register_invalidation_callback(lambda c: backend.events.append(f"a:{c.value}"))
        backend.register_invalidation_callback(lambda c: backend.events.append(f"b:{c.value}"))
        backend.mark_stale(C.esrgan)
        assert backend.events == ["impl:esrgan", "a:esrgan", "b:esrgan"]

    def test_raising_callback_logged_and_others_called(self) -> None:
        """A listener that raises is logged at error level and does not stop later listeners."""
        backend = Minimal()
        seen: list[MODEL_REFERENCE_CATEGORY] = []

        def broken(category: MODEL_REFERENCE_CATEGORY) -> None:
            raise RuntimeError("boom")

        backend.register_invalidation_callback(broken)
        backend.register_invalidation_callback(seen.append)
        with capture_logs() as logs:
            backend.mark_stale(C.clip)
        assert seen == [C.clip]
        [entry] = [e for e in logs if e["event"] == "invalidation_callback_failed"]
        assert entry["log_level"] == "error"
        assert entry["category"] == "clip"
        assert "broken" in entry["callback"]

    def test_notify_without_callbacks(self) -> None:
        """Notifying with no listener registered is a no-op."""
        backend = Minimal()
        backend._notify_invalidation(C.ti)
        assert backend.events == []

    def test_callback_registered_during_notification_waits(self) -> None:
        """A listener registered while notifying is called from the next invalidation on."""
        backend = Minimal()
        late: list[MODEL_REFERENCE_CATEGORY] = []
        backend.register_invalidation_callback(
            lambda c: backend.register_invalidation_callback(late.append)
        )
        backend.mark_stale(C.blip)
        assert late == []
        backend.mark_stale(C.clip)
        assert late == [C.clip]
