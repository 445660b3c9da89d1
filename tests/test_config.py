"""Tests of settings loading and validation in `horde_replica_sync.config`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from horde_replica_sync import cli
from horde_replica_sync.catalogs import Catalog
from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY
from horde_replica_sync.config import (
    DEFAULT_PRIMARY_URL,
    ENV_PREFIX,
    FLAGS,
    Settings,
    find_config_file,
    load_settings,
    provenance,
)
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.upstream_env import UPSTREAM_PREFIX
from tests.processes import run_cli

C = MODEL_REFERENCE_CATEGORY


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every HORDE_REPLICA_*, HORDE_MODEL_REFERENCE_* and AIWORKER_CACHE_HOME variable."""
    for name in list(os.environ):
        if name.upper().startswith((ENV_PREFIX, UPSTREAM_PREFIX)):
            monkeypatch.delenv(name)
    monkeypatch.delenv("AIWORKER_CACHE_HOME", raising=False)


# Path.home() falls back to the passwd entry: pretend there is none (a container's UID).
_NO_HOME_PROBE = """
import pathlib, sys
from horde_replica_sync import cli
def no_home():
    raise RuntimeError("Could not determine home directory.")
pathlib.Path.home = staticmethod(no_home)
sys.exit(cli.main(["check-config"]))
"""


def write_toml(tmp_path: Path, text: str) -> Path:
    """Write `text` to a TOML file in `tmp_path` and return its path."""
    path = tmp_path / "horde-replica-sync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(config_file: Path | None = None, **overrides: Any) -> str:
    """Load settings that must fail and return the ConfigError message."""
    with pytest.raises(ConfigError) as info:
        load_settings(config_file, **overrides)
    return str(info.value)


class TestDefaults:
    """With no file, environment or flags, the documented defaults apply."""

    def test_source_urls(self) -> None:
        """The PRIMARY is models.aihorde.net/api and GitHub is raw.githubusercontent.com."""
        settings = load_settings()
        assert settings.primary_url == DEFAULT_PRIMARY_URL == "https://models.aihorde.net/api"
        assert settings.github_url == "https://raw.githubusercontent.com"
        assert settings.use_primary is True
        assert settings.github_fallback is True
        assert settings.github_owner == "Haidra-Org"
        assert settings.github_branch == "main"

    def test_all_categories(self) -> None:
        """Every category is synced by default, in upstream order, then the three catalogs."""
        assert load_settings().categories == (*MODEL_REFERENCE_CATEGORY, *Catalog)

    def test_the_example_selects_the_defaults(self) -> None:
        """A copy of the shipped example mirrors what the defaults mirror, catalogs included."""
        example = Path(__file__).parents[1] / "config" / "config.example.toml"
        assert load_settings(example).categories == load_settings().categories

    def test_catalogs_are_selected_by_name(self) -> None:
        """A catalog is selected in the same setting as the categories, after them."""
        settings = load_settings(categories="licensing,esrgan,baselines")
        assert settings.categories == (C.esrgan, Catalog.baselines, Catalog.licensing)

    def test_limits(self) -> None:
        """Numeric knobs have their documented defaults."""
        settings = load_settings()
        assert settings.request_timeout_seconds == 10.0
        assert settings.run_timeout_seconds == 300.0
        assert settings.max_body_bytes == 64 * 1024 * 1024
        assert settings.max_concurrency == 4
        assert settings.retry_attempts == 3
        assert settings.retry_initial_seconds == 0.5
        assert settings.retry_max_seconds == 10.0
        assert settings.max_shrink_fraction == 0.5
        assert settings.cache_ttl_seconds == 3600

    def test_replica_dir_from_aiworker_cache_home(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The replica dir defaults to $AIWORKER_CACHE_HOME/horde_model_reference."""
        monkeypatch.setenv("AIWORKER_CACHE_HOME", str(tmp_path))
        assert load_settings().replica_dir == tmp_path / "horde_model_reference"

    def test_replica_dir_without_aiworker_cache_home(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Without AIWORKER_CACHE_HOME the replica is ~/.cache/horde_model_reference, whatever
        the working directory (never ./models)."""
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.chdir(tmp_path)
        expected = tmp_path / ".cache" / "horde_model_reference"
        assert load_settings().replica_dir == expected

    def test_replica_dir_with_empty_aiworker_cache_home(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An empty AIWORKER_CACHE_HOME counts as unset; XDG_CACHE_HOME is honoured."""
        monkeypatch.setenv("AIWORKER_CACHE_HOME", "")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert load_settings().replica_dir == tmp_path / "horde_model_reference"

    def test_relative_xdg_cache_home_is_ignored(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A relative XDG_CACHE_HOME is invalid (XDG spec): ~/.cache, not the working dir."""
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("XDG_CACHE_HOME", "cache")
        assert load_settings().replica_dir == tmp_path / ".cache" / "horde_model_reference"

    def test_no_home_for_the_default_exits_78(self, tmp_path: Path) -> None:
        """No AIWORKER_CACHE_HOME and no home directory: a config error naming replica_dir."""
        env = {"PATH": os.environ["PATH"], "HOME": "", "XDG_CONFIG_HOME": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-c", _NO_HOME_PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 78, result.stderr
        assert "replica_dir" in result.stderr and "AIWORKER_CACHE_HOME" in result.stderr

    def test_effective_state_dir_default(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Without state_dir, the state lives in a dot-directory inside the replica."""
        monkeypatch.setenv("AIWORKER_CACHE_HOME", str(tmp_path))
        settings = load_settings()
        assert settings.state_dir is None
        assert settings.effective_state_dir.parent == settings.replica_dir
        assert settings.effective_state_dir.name.startswith(".")

    def test_effective_state_dir_explicit(self, tmp_path: Path) -> None:
        """An explicit state_dir is used as is."""
        settings = load_settings(state_dir=tmp_path / "state")
        assert settings.effective_state_dir == tmp_path / "state"

    def test_settings_are_frozen(self) -> None:
        """Loaded settings cannot be changed afterwards."""
        settings = load_settings()
        with pytest.raises(ValueError, match="frozen"):
            settings.max_concurrency = 8


class TestPrecedence:
    """TOML file < environment < overrides (flags)."""

    def test_toml_beats_default(self, tmp_path: Path) -> None:
        """A TOML value replaces the default."""
        path = write_toml(tmp_path, 'primary_url = "http://toml.test/api"\nmax_concurrency = 2\n')
        settings = load_settings(path)
        assert settings.primary_url == "http://toml.test/api"
        assert settings.max_concurrency == 2

    def test_env_beats_toml(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """An environment variable beats the TOML file."""
        path = write_toml(tmp_path, 'primary_url = "http://toml.test/api"\nmax_concurrency = 2\n')
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "http://env.test/api")
        settings = load_settings(path)
        assert settings.primary_url == "http://env.test/api"
        assert settings.max_concurrency == 2

    def test_override_beats_env_and_toml(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An override (flag) beats both the environment and the TOML file."""
        path = write_toml(tmp_path, 'primary_url = "http://toml.test/api"\n')
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "http://env.test/api")
        settings = load_settings(path, primary_url="http://flag.test/api")
        assert settings.primary_url == "http://flag.test/api"

    def test_env_without_toml(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Environment variables apply with no config file."""
        monkeypatch.setenv("HORDE_REPLICA_MAX_CONCURRENCY", "7")
        monkeypatch.setenv("HORDE_REPLICA_GITHUB_FALLBACK", "false")
        settings = load_settings()
        assert settings.max_concurrency == 7
        assert settings.github_fallback is False

    def test_trailing_slash_stripped(self) -> None:
        """A trailing slash on a source URL is removed."""
        assert load_settings(primary_url="http://p.test/api/").primary_url == "http://p.test/api"

    def test_toml_paths(self, tmp_path: Path) -> None:
        """replica_dir and state_dir can be set in the TOML file."""
        path = write_toml(
            tmp_path, f'replica_dir = "{tmp_path / "r"}"\nstate_dir = "{tmp_path / "s"}"\n'
        )
        settings = load_settings(path)
        assert settings.replica_dir == tmp_path / "r"
        assert settings.effective_state_dir == tmp_path / "s"


class TestCategories:
    """Category lists from every source are parsed into upstream order."""

    def test_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """HORDE_REPLICA_CATEGORIES="esrgan, blip" gives (blip, esrgan)."""
        monkeypatch.setenv("HORDE_REPLICA_CATEGORIES", "esrgan, blip")
        assert load_settings().categories == (C.blip, C.esrgan)

    def test_from_toml_list(self, tmp_path: Path) -> None:
        """A TOML array of names is parsed and ordered."""
        path = write_toml(tmp_path, 'categories = ["ti", "clip", "ti"]\n')
        assert load_settings(path).categories == (C.clip, C.ti)

    def test_from_override_string(self) -> None:
        """An override string (the --categories flag) is parsed and ordered."""
        settings = load_settings(categories="text_generation,image_generation")
        assert settings.categories == (C.image_generation, C.text_generation)

    def test_is_tuple_of_enum(self) -> None:
        """Parsed categories are a tuple of enum members."""
        categories = load_settings(categories="blip").categories
        assert isinstance(categories, tuple)
        assert all(isinstance(c, MODEL_REFERENCE_CATEGORY) for c in categories)


class TestInvalid:
    """A broken setting raises ConfigError naming the key, its env var and its flag."""

    @pytest.mark.parametrize(
        ("overrides", "key"),
        [
            pytest.param({"primary_url": "ftp://x"}, "primary_url", id="primary-ftp"),
            pytest.param({"primary_url": "http://"}, "primary_url", id="primary-no-host"),
            pytest.param({"github_url": "raw.githubusercontent.com"}, "github_url", id="github"),
            pytest.param({"categories": "nope"}, "categories", id="categories-unknown"),
            pytest.param({"categories": ""}, "categories", id="categories-empty"),
            pytest.param({"max_concurrency": 0}, "max_concurrency", id="concurrency-zero"),
            pytest.param({"max_concurrency": 65}, "max_concurrency", id="concurrency-high"),
            pytest.param({"max_shrink_fraction": 1.5}, "max_shrink_fraction", id="shrink"),
            pytest.param({"max_body_bytes": 10}, "max_body_bytes", id="body-cap"),
            pytest.param({"retry_attempts": 0}, "retry_attempts", id="attempts"),
            pytest.param({"request_timeout_seconds": 0}, "request_timeout_seconds", id="timeout"),
            pytest.param({"github_owner": ""}, "github_owner", id="owner"),
        ],
    )
    def test_override(self, overrides: dict[str, Any], key: str) -> None:
        """An invalid override names the key, HORDE_REPLICA_<KEY> and the flag if any."""
        message = config_error(**overrides)
        assert key in message
        assert f"HORDE_REPLICA_{key.upper()}" in message
        if key in FLAGS:
            assert FLAGS[key].name in message

    def test_primary_url_message(self) -> None:
        """The primary_url error names its flag and the offending value."""
        message = config_error(primary_url="ftp://x")
        assert "--primary-url" in message
        assert "ftp://x" in message

    def test_unknown_category_named(self) -> None:
        """The categories error names the unknown category and the --categories flag."""
        message = config_error(categories="blip,nope")
        assert "'nope'" in message
        assert "--categories" in message

    def test_invalid_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An invalid environment value is reported like an override."""
        monkeypatch.setenv("HORDE_REPLICA_MAX_CONCURRENCY", "0")
        message = config_error()
        assert "max_concurrency" in message
        assert "HORDE_REPLICA_MAX_CONCURRENCY" in message

    def test_invalid_env_categories(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unknown category in the environment names the category and the key."""
        monkeypatch.setenv("HORDE_REPLICA_CATEGORIES", "esrgan,nope")
        message = config_error()
        assert "'nope'" in message
        assert "HORDE_REPLICA_CATEGORIES" in message

    def test_invalid_toml_value(self, tmp_path: Path) -> None:
        """An invalid value in the TOML file names the key."""
        message = config_error(write_toml(tmp_path, "max_concurrency = 0\n"))
        assert "max_concurrency" in message

    def test_no_source(self) -> None:
        """Turning off both sources names both keys, their env vars and their flags."""
        message = config_error(use_primary=False, github_fallback=False)
        for key in ("use_primary", "github_fallback"):
            assert key in message
            assert f"HORDE_REPLICA_{key.upper()}" in message
            assert FLAGS[key].name in message

    def test_one_source_is_enough(self) -> None:
        """Either source alone is a valid configuration."""
        assert load_settings(use_primary=False).github_fallback is True
        assert load_settings(github_fallback=False).use_primary is True

    def test_several_errors_one_line_each(self) -> None:
        """Each broken setting gets its own line."""
        message = config_error(max_concurrency=0, retry_attempts=0)
        lines = message.splitlines()
        assert len(lines) == 2
        assert any("max_concurrency" in line for line in lines)
        assert any("retry_attempts" in line for line in lines)


class TestConfigFile:
    """Problems with the TOML file itself are ConfigErrors naming the file."""

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing config file raises ConfigError naming its path."""
        path = tmp_path / "absent.toml"
        assert str(path) in config_error(path)

    def test_directory(self, tmp_path: Path) -> None:
        """A directory given as the config file raises ConfigError naming its path."""
        assert str(tmp_path) in config_error(tmp_path)

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("primary_url = \n", id="missing-value"),
            pytest.param("[unterminated\n", id="bad-table"),
            pytest.param('primary_url = "a"\nprimary_url = "b"\n', id="duplicate-key"),
        ],
    )
    def test_invalid_toml(self, tmp_path: Path, text: str) -> None:
        """A file that is not valid TOML raises ConfigError naming its path."""
        path = write_toml(tmp_path, text)
        message = config_error(path)
        assert str(path) in message
        assert "TOML" in message

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A TOML file that is not UTF-8 raises ConfigError naming its path."""
        path = tmp_path / "latin1.toml"
        path.write_bytes('github_owner = "é"\n'.encode("latin-1"))
        assert str(path) in config_error(path)

    def test_unknown_key(self, tmp_path: Path) -> None:
        """An unknown key in the TOML file raises ConfigError naming the key."""
        path = write_toml(tmp_path, 'primary_url = "http://p.test"\nprimry_url = "x"\n')
        assert "primry_url" in config_error(path)

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty TOML file gives the defaults."""
        settings = load_settings(write_toml(tmp_path, ""))
        assert settings.model_dump() == load_settings().model_dump()

    def test_file_does_not_leak(self, tmp_path: Path) -> None:
        """Loading with a TOML file does not change the settings of a later plain load."""
        load_settings(write_toml(tmp_path, "max_concurrency = 2\n"))
        assert load_settings().max_concurrency == 4
        assert Settings.model_config.get("toml_file") is None


URL = "HORDE_MODEL_REFERENCE_PRIMARY_API_URL"
TIMEOUT = "HORDE_MODEL_REFERENCE_PRIMARY_API_TIMEOUT"
FALLBACK = "HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK"
IMAGE_OWNER = "HORDE_MODEL_REFERENCE_IMAGE_GITHUB_REPO__OWNER"
TEXT_OWNER = "HORDE_MODEL_REFERENCE_TEXT_GITHUB_REPO__OWNER"
IMAGE_BRANCH = "HORDE_MODEL_REFERENCE_IMAGE_GITHUB_REPO__BRANCH"
TEXT_BRANCH = "HORDE_MODEL_REFERENCE_TEXT_GITHUB_REPO__BRANCH"


class TestUpstreamAliases:
    """Upstream's own HORDE_MODEL_REFERENCE_* variables configure the matching settings."""

    @pytest.mark.parametrize(
        ("variables", "key", "value"),
        [
            pytest.param(
                {URL: "http://up.test/api/"}, "primary_url", "http://up.test/api", id="url"
            ),
            pytest.param({TIMEOUT: "3"}, "request_timeout_seconds", 3.0, id="timeout"),
            pytest.param({FALLBACK: "false"}, "github_fallback", False, id="fallback"),
            pytest.param({IMAGE_OWNER: "me", TEXT_OWNER: "me"}, "github_owner", "me", id="owner"),
            pytest.param(
                {IMAGE_BRANCH: "dev", TEXT_BRANCH: "dev"}, "github_branch", "dev", id="branch"
            ),
            pytest.param(
                {IMAGE_OWNER: "Haidra-Org"}, "github_owner", "Haidra-Org", id="one-default"
            ),
        ],
    )
    def test_alias_sets_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], key: str, value: Any
    ) -> None:
        """Each upstream variable supplies its setting, and provenance names it."""
        for name, raw in variables.items():
            monkeypatch.setenv(name, raw)
        assert getattr(load_settings(), key) == value
        origin = provenance(None, {})[key]
        assert all(f"env {name}" in origin for name in variables), origin

    def test_lower_case_names_count(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Upstream's names are case-insensitive, so ours are too."""
        monkeypatch.setenv(TIMEOUT.lower(), "4")
        assert load_settings().request_timeout_seconds == 4.0

    def test_empty_primary_url_means_github_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An empty HORDE_MODEL_REFERENCE_PRIMARY_API_URL turns the PRIMARY off, as upstream."""
        monkeypatch.setenv(URL, "")
        settings = load_settings()
        assert settings.use_primary is False
        assert settings.github_fallback is True
        assert settings.primary_url == DEFAULT_PRIMARY_URL
        assert provenance(None, {})["use_primary"] == f"env {URL} (empty: GitHub only)"

    def test_empty_primary_url_yields_to_our_primary_url(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Our own primary_url (env or flag) means a PRIMARY is wanted: the empty alias is moot."""
        monkeypatch.setenv(URL, "")
        assert load_settings(primary_url="http://flag.test/api").use_primary is True
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "http://env.test/api")
        settings = load_settings()
        assert settings.use_primary is True
        assert provenance(None, {})["use_primary"] == "default"

    def test_ours_beat_upstream(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """HORDE_REPLICA_* variables and flags beat the upstream variables."""
        monkeypatch.setenv(URL, "http://up.test/api")
        monkeypatch.setenv(TIMEOUT, "3")
        monkeypatch.setenv(FALLBACK, "false")
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "http://env.test/api")
        monkeypatch.setenv("HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS", "5")
        settings = load_settings(github_fallback=True)
        assert settings.primary_url == "http://env.test/api"
        assert settings.request_timeout_seconds == 5.0
        assert settings.github_fallback is True
        origins = provenance(None, {"github_fallback": True})
        assert origins["primary_url"] == "env HORDE_REPLICA_PRIMARY_URL"
        assert origins["request_timeout_seconds"] == "env HORDE_REPLICA_REQUEST_TIMEOUT_SECONDS"
        assert origins["github_fallback"] == "flag --no-fallback"

    def test_upstream_beats_toml_and_defaults(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An upstream variable beats the TOML file; settings it does not name keep the file's."""
        path = write_toml(tmp_path, 'primary_url = "http://toml.test/api"\nmax_concurrency = 2\n')
        monkeypatch.setenv(URL, "http://up.test/api")
        settings = load_settings(path)
        assert settings.primary_url == "http://up.test/api"
        assert settings.max_concurrency == 2
        origins = provenance(path, {})
        assert origins["primary_url"] == f"env {URL}"
        assert origins["max_concurrency"] == f"file {path}"

    def test_example_toml_does_not_hide_upstream(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The shipped example lists every key; the upstream variables still apply over it."""
        example = Path(__file__).parents[1] / "config" / "config.example.toml"
        monkeypatch.setenv(URL, "http://up.test/api")
        monkeypatch.setenv(FALLBACK, "false")
        settings = load_settings(example)
        assert settings.primary_url == "http://up.test/api"
        assert settings.github_fallback is False

    @pytest.mark.parametrize(
        ("variable", "raw", "key"),
        [
            pytest.param(URL, "ftp://x", "primary_url", id="url-scheme"),
            pytest.param(URL, "models.aihorde.net/api", "primary_url", id="url-no-scheme"),
            pytest.param(TIMEOUT, "abc", "request_timeout_seconds", id="timeout-text"),
            pytest.param(TIMEOUT, "0", "request_timeout_seconds", id="timeout-zero"),
            pytest.param(TIMEOUT, "601", "request_timeout_seconds", id="timeout-high"),
            pytest.param(FALLBACK, "maybe", "github_fallback", id="fallback"),
        ],
    )
    def test_invalid_value_names_the_upstream_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, key: str
    ) -> None:
        """A value invalid for us is a ConfigError naming the upstream variable and our key."""
        monkeypatch.setenv(variable, raw)
        message = config_error()
        assert f"invalid setting {key} (from env {variable}" in message
        assert f"HORDE_REPLICA_{key.upper()}" in message

    def test_overridden_invalid_upstream_value_is_harmless(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An invalid upstream value that ours override never reaches validation."""
        monkeypatch.setenv(URL, "ftp://x")
        monkeypatch.setenv("HORDE_REPLICA_PRIMARY_URL", "http://env.test/api")
        assert load_settings().primary_url == "http://env.test/api"

    def test_invalid_flag_is_not_blamed_on_upstream(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """When a flag supplies the broken value, the message does not name the upstream one."""
        monkeypatch.setenv(URL, "http://up.test/api")
        message = config_error(primary_url="ftp://x")
        assert URL not in message
        assert "--primary-url" in message

    @pytest.mark.parametrize(
        ("variables", "key", "pair", "named"),
        [
            pytest.param(
                {IMAGE_OWNER: "a", TEXT_OWNER: "b"},
                "github_owner",
                (IMAGE_OWNER, TEXT_OWNER),
                "'a' and the text repository's 'b'",
                id="owners-differ",
            ),
            pytest.param(
                {IMAGE_OWNER: "fork"},
                "github_owner",
                (IMAGE_OWNER, TEXT_OWNER),
                "'Haidra-Org' (unset: the default)",
                id="text-owner-unset",
            ),
            pytest.param(
                {TEXT_BRANCH: "dev"},
                "github_branch",
                (IMAGE_BRANCH, TEXT_BRANCH),
                "'main' (unset: the default)",
                id="image-branch-unset",
            ),
        ],
    )
    def test_repositories_must_agree(
        self,
        monkeypatch: pytest.MonkeyPatch,
        variables: dict[str, str],
        key: str,
        pair: tuple[str, str],
        named: str,
    ) -> None:
        """One owner/branch serves both repositories: image and text variables must agree."""
        for name, raw in variables.items():
            monkeypatch.setenv(name, raw)
        message = config_error()
        assert f"invalid setting {key} (env {pair[0]}, env {pair[1]})" in message
        assert named in message
        assert f"HORDE_REPLICA_{key.upper()}" in message

    def test_disagreement_overridden_by_ours(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Our own github_owner settles it: the disagreeing upstream pair is not consulted."""
        monkeypatch.setenv(IMAGE_OWNER, "a")
        monkeypatch.setenv(TEXT_OWNER, "b")
        monkeypatch.setenv("HORDE_REPLICA_GITHUB_OWNER", "ours")
        assert load_settings().github_owner == "ours"
        assert provenance(None, {})["github_owner"] == "env HORDE_REPLICA_GITHUB_OWNER"

    def test_no_source_names_the_upstream_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Empty URL + fallback off: nothing to sync from, and the message says who said so."""
        monkeypatch.setenv(URL, "")
        monkeypatch.setenv(FALLBACK, "0")
        message = config_error()
        assert "nothing to sync from" in message
        assert f"use_primary from env {URL}" in message
        assert f"github_fallback from env {FALLBACK}" in message

    def test_other_upstream_variables_are_ignored(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Upstream variables that have no counterpart here change nothing."""
        defaults = load_settings().model_dump()
        monkeypatch.setenv("HORDE_MODEL_REFERENCE_OFFLINE", "true")
        monkeypatch.setenv("HORDE_MODEL_REFERENCE_AUDIT__ENABLED", "false")
        monkeypatch.setenv("HORDE_MODEL_REFERENCE_CACHE_TTL_SECONDS", "1")
        assert load_settings().model_dump() == defaults
        assert set(provenance(None, {}).values()) == {"default"}


def check_config(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`horde-replica-sync check-config ARGS` in its own process (no config file found)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HORDE_", "AIWORKER_"))}
    env.update(variables, XDG_CONFIG_HOME="/nonexistent-config-dir")
    return run_cli("check-config", *args, env=env)


class TestCheckConfigCommand:
    """`check-config` shows which name supplied a value; an invalid upstream value exits 78."""

    def test_shows_the_upstream_variable(self) -> None:
        """The JSON output names the upstream variable as the source of the value."""
        result = check_config("--json", **{URL: "http://up.test/api"})
        assert result.returncode == cli.EXIT_OK, result.stderr
        shown = json.loads(result.stdout)
        assert shown["primary_url"] == {"value": "http://up.test/api", "from": f"env {URL}"}
        assert shown["max_concurrency"]["from"] == "default"

    def test_invalid_upstream_value_exits_78(self) -> None:
        """Exit 78, the message naming the upstream variable."""
        result = check_config(**{TIMEOUT: "-1"})
        assert result.returncode == cli.EXIT_CONFIG
        assert f"from env {TIMEOUT}" in result.stderr

    def test_lower_case_variables_are_named_as_set(self) -> None:
        """`horde_replica_interval_seconds` sets the value (names are case-insensitive), and
        check-config names that variable, not "default"."""
        result = check_config("--json", horde_replica_interval_seconds="90")
        assert result.returncode == cli.EXIT_OK, result.stderr
        shown = json.loads(result.stdout)
        assert shown["interval_seconds"] == {
            "value": 90.0,
            "from": "env horde_replica_interval_seconds",
        }

    def test_use_primary_origin_agrees_with_its_value(self) -> None:
        """An empty upstream URL beside our own lower-case primary_url: the PRIMARY is used, and
        check-config does not say "empty: GitHub only" beside `true`."""
        result = check_config(
            "--json", **{URL: "", "horde_replica_primary_url": "http://ours.test/api"}
        )
        assert result.returncode == cli.EXIT_OK, result.stderr
        shown = json.loads(result.stdout)
        assert shown["use_primary"] == {"value": True, "from": "default"}
        assert shown["primary_url"] == {
            "value": "http://ours.test/api",
            "from": "env horde_replica_primary_url",
        }


class TestBounds:
    """Every number is finite, in its stated range, and never a boolean: else exit 78 early."""

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("interval_seconds", float("inf")),
            ("interval_seconds", 1e300),
            ("interval_seconds", True),
            ("init_interval_seconds", float("inf")),
            ("misfire_grace_seconds", float("inf")),
            ("interval_jitter_seconds", 1e300),
            ("run_timeout_seconds", float("nan")),
            ("cache_ttl_seconds", True),
            ("max_staleness_seconds", float("-inf")),
        ],
    )
    def test_absurd_number_is_a_config_error(self, key: str, value: Any) -> None:
        """inf, NaN, 1e300 and booleans name the setting instead of crashing later."""
        message = config_error(**{key: value})
        assert key in message and f"HORDE_REPLICA_{key.upper()}" in message

    def test_toml_boolean_is_not_a_number(self, tmp_path: Path) -> None:
        """`interval_seconds = true` in the file used to become 1.0 s silently."""
        message = config_error(write_toml(tmp_path, "interval_seconds = true\n"))
        assert "interval_seconds" in message and "boolean" in message

    def test_unreadable_home_is_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A config search that cannot read $HOME raises ConfigError naming the way out."""
        monkeypatch.delenv("HORDE_REPLICA_CONFIG", raising=False)
        monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
        home = tmp_path / "home"
        home.mkdir()

        def unreadable(self: Path) -> bool:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "home", lambda: home)
        monkeypatch.setattr(Path, "is_file", unreadable)
        with pytest.raises(ConfigError, match="--config"):
            find_config_file(None)
