"""config/config.example.toml and config/env.example document every setting at its default."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest

from horde_replica_sync.config import ENV_PREFIX, Settings, load_settings
from tests.deploy.conftest import CONFIG_DIR

TOML_EXAMPLE: Final = CONFIG_DIR / "config.example.toml"
ENV_EXAMPLE: Final = CONFIG_DIR / "env.example"
# No environment-independent default (replica_dir follows AIWORKER_CACHE_HOME) or none at all
# (state_dir, ca_bundle, on_change_command): documented, but commented out.
COMMENTED_OUT: Final = frozenset({"replica_dir", "state_dir", "ca_bundle", "on_change_command"})
NOT_SETTINGS: Final = frozenset({"HORDE_REPLICA_CONFIG"})  # where the TOML file is


@pytest.fixture(name="clean_environ")
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No HORDE_REPLICA_* or AIWORKER_CACHE_HOME from the outside; a fixed replica dir."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name == "AIWORKER_CACHE_HOME":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AIWORKER_CACHE_HOME", str(tmp_path))
    return tmp_path


def defaults() -> dict[str, Any]:
    """Every setting's default, as JSON-ish values (call it with a clean environment)."""
    return load_settings(None).model_dump(mode="json")


class TestTomlExample:
    """The TOML example loads, names every setting, and changes nothing."""

    def test_every_setting_is_documented(self) -> None:
        """Each Settings field is a key, or a commented-out `# key = ...` line."""
        text = TOML_EXAMPLE.read_text(encoding="utf-8")
        keys = set(tomllib.loads(text))
        assert keys == set(Settings.model_fields) - COMMENTED_OUT
        for name in COMMENTED_OUT:
            assert re.search(rf"^# {name} = ", text, re.MULTILINE), f"{name} is not documented"

    @pytest.mark.usefixtures("clean_environ")
    def test_values_are_the_defaults(self) -> None:
        """load_settings(example) equals the defaults, field by field."""
        loaded = load_settings(TOML_EXAMPLE).model_dump(mode="json")
        expected = defaults()
        different = {k: (loaded[k], expected[k]) for k in expected if loaded[k] != expected[k]}
        assert different == {}

    @pytest.mark.usefixtures("clean_environ")
    def test_commented_values_load(self, tmp_path: Path) -> None:
        """The commented-out lines are valid TOML and valid settings once uncommented."""
        text = TOML_EXAMPLE.read_text(encoding="utf-8")
        for name in COMMENTED_OUT:
            text = re.sub(rf"^# ({name} = )", r"\1", text, flags=re.MULTILINE)
        uncommented = tmp_path / "uncommented.toml"
        # Top-level keys must precede tables; the example has none, so order is free.
        uncommented.write_text(text, encoding="utf-8")
        settings = load_settings(uncommented)
        assert settings.replica_dir.is_absolute()
        assert settings.state_dir is not None and settings.state_dir.is_absolute()


def env_example_lines() -> dict[str, str]:
    """The example's variables, commented out or not: NAME -> value."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return found


class TestEnvExample:
    """env.example has a HORDE_REPLICA_* line per setting, each value the default."""

    def test_every_setting_has_a_variable(self) -> None:
        """One variable per Settings field, and no unknown HORDE_REPLICA_* name."""
        names = {n for n in env_example_lines() if n.startswith(ENV_PREFIX)} - NOT_SETTINGS
        expected = {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}
        assert names == expected

    def test_format_suits_systemd_and_docker(self) -> None:
        """Plain KEY=value lines: no quotes, no trailing comments, no `export`."""
        for name, value in env_example_lines().items():
            assert not value.startswith(("'", '"')), name
            assert " #" not in value and not value.endswith(" "), name

    def test_values_are_the_defaults(
        self, monkeypatch: pytest.MonkeyPatch, clean_environ: Path
    ) -> None:
        """Set through the environment, the example's values are the defaults."""
        expected = defaults()
        for name, value in env_example_lines().items():
            if name.startswith(ENV_PREFIX) and name not in NOT_SETTINGS:
                key = name.removeprefix(ENV_PREFIX).lower()
                if key not in COMMENTED_OUT:
                    monkeypatch.setenv(name, value)
        loaded = load_settings(None).model_dump(mode="json")
        assert {k: (loaded[k], expected[k]) for k in expected if loaded[k] != expected[k]} == {}
