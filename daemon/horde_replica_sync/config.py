"""Settings: defaults < TOML file (`--config`) < upstream's `HORDE_MODEL_REFERENCE_*`
variables (`upstream_env.py`) < our environment (`HORDE_REPLICA_*`) < flags.

Everything is validated once, up front; a broken setting is a `ConfigError` whose message
names the key, its environment variable and the rule, and the CLI exits 78 before any I/O.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import ssl
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from horde_replica_sync.catalogs import ALL_NAMES, Name, parse_names
from horde_replica_sync.categories import (
    GITHUB_BRANCH,
    GITHUB_OWNER,
    GITHUB_URL,
)
from horde_replica_sync.errors import ConfigError
from horde_replica_sync.redact import ENCODING_ADVICE, redact_url
from horde_replica_sync.upstream_env import UpstreamEnvSettingsSource, upstream_origin

ENV_PREFIX: Final = "HORDE_REPLICA_"
DEFAULT_PRIMARY_URL: Final = "https://models.aihorde.net/api"
MIB: Final = 1024 * 1024
DAY: Final = 86400


def default_replica_dir() -> Path:
    """`$AIWORKER_CACHE_HOME/horde_model_reference`, upstream's default (`./models` if unset)."""
    return Path(os.environ.get("AIWORKER_CACHE_HOME") or "./models") / "horde_model_reference"


def _bracketed_ipv6(host: str, value: str) -> None:
    """An IPv6 host must be `[ADDRESS]`: without brackets `::1:9464` could be a port or not."""
    inner = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        inner = ""
    if not inner or host != f"[{inner}]":
        msg = f"an IPv6 address goes in brackets, e.g. [::1]:9464, got {value!r}"
        raise ValueError(msg)


class Settings(BaseSettings):
    """Every knob of the daemon, with the documented defaults."""

    # Every number is finite (no inf/NaN) and within a stated range: an absurd value exits 78
    # instead of crashing later (OverflowError) or leaving a daemon that never syncs.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", allow_inf_nan=False
    )

    primary_url: str = DEFAULT_PRIMARY_URL
    github_url: str = GITHUB_URL
    use_primary: bool = True
    github_fallback: bool = True
    github_owner: str = Field(GITHUB_OWNER, min_length=1)
    github_branch: str = Field(GITHUB_BRANCH, min_length=1)
    replica_dir: Path = Field(default_factory=default_replica_dir)
    state_dir: Path | None = None
    # The 15 categories and the PRIMARY's 3 side catalogs (catalogs.py), by name.
    categories: Annotated[tuple[Name, ...], NoDecode] = ALL_NAMES
    request_timeout_seconds: float = Field(10.0, gt=0, le=600)
    request_deadline_seconds: float = Field(120.0, gt=0, le=3600)
    run_timeout_seconds: float = Field(300.0, gt=0, le=DAY)
    max_body_bytes: int = Field(64 * MIB, ge=1024, le=1024 * MIB)
    max_concurrency: int = Field(4, ge=1, le=64)
    retry_attempts: int = Field(3, ge=1, le=20)
    retry_initial_seconds: float = Field(0.5, ge=0, le=600)
    retry_max_seconds: float = Field(10.0, ge=0, le=3600)
    max_shrink_fraction: float = Field(0.5, ge=0, le=1)
    cache_ttl_seconds: int = Field(3600, ge=1, le=30 * DAY)
    interval_seconds: float = Field(60.0, ge=1, le=DAY)
    init_interval_seconds: float = Field(10.0, ge=1, le=3600)
    interval_jitter_seconds: float = Field(6.0, ge=0, le=3600)
    misfire_grace_seconds: float = Field(30.0, ge=1, le=DAY)
    max_staleness_seconds: float = Field(7200.0, ge=1, le=30 * DAY)
    shutdown_timeout_seconds: float = Field(10.0, gt=0, le=300)
    metrics_addr: str = "127.0.0.1:9464"
    ca_bundle: Path | None = None  # PEM file of extra CAs, trusted besides the system store
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    on_change_command: str | None = None
    on_change_timeout_seconds: float = Field(30.0, gt=0, le=3600)

    @field_validator("*", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any, info: ValidationInfo) -> Any:
        numeric = info.field_name is not None and cls.model_fields[info.field_name].annotation in (
            int,
            float,
        )
        if numeric and isinstance(value, bool):  # TOML `true` would otherwise become 1
            msg = f"must be a number, not the boolean {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("primary_url", "github_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"must be an http(s) URL with a host, got {redact_url(value)!r}"
            raise ValueError(msg)
        if not _usable_authority(value):  # httpx would refuse it at the first request
            msg = f"has a user, password or port no request can use, got {redact_url(value)!r}: "
            raise ValueError(msg + ENCODING_ADVICE)
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            # Paths are appended to the base, so a query would end up in the middle of them.
            msg = (
                f"must have no query string or fragment, got {redact_url(value)!r} "
                "(credentials go in the URL's userinfo: https://user:password@host/...)"
            )
            raise ValueError(msg)
        return value.rstrip("/")

    @field_serializer("primary_url", "github_url", when_used="json")
    def _shown_url(self, value: str) -> str:
        # JSON dumps are what gets logged and printed (daemon.starting, check-config).
        return redact_url(value)

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # `HORDE_REPLICA_CA_BUNDLE=` means none

    @field_validator("ca_bundle")
    @classmethod
    def _pem_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ssl.SSLError) as exc:
                msg = f"must be a readable PEM file of CA certificates: {value}: {exc}"
                raise ValueError(msg) from None
        return value

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
            msg = f"must be HOST:PORT with a port from 0 to 65535, got {value!r}"
            raise ValueError(msg)
        if host.startswith("[") or host.endswith("]") or ":" in host:
            _bracketed_ipv6(host, value)
        return value

    @field_validator("on_change_command")
    @classmethod
    def _command_line(cls, value: str | None) -> str | None:
        if value is not None:
            _split_command(value)
        return value

    @field_serializer("on_change_command", when_used="json")
    def _program_only(self, value: str | None) -> str | None:
        """Logged and printed as its program only: arguments may carry a token."""
        if value is None:
            return None
        program, *arguments = shlex.split(value)
        return f"{program} (+{len(arguments)} arguments, not shown)" if arguments else program

    @property
    def on_change_argv(self) -> tuple[str, ...] | None:
        """The on-change command as the argv it runs with (no shell), or None."""
        return None if self.on_change_command is None else _split_command(self.on_change_command)

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        """`metrics_addr` split into host and port (IPv6 brackets removed)."""
        host, _, port = self.metrics_addr.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @field_validator("categories", mode="before")
    @classmethod
    def _category_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_names(value)
        if isinstance(value, list | tuple):
            return parse_names(",".join(str(v) for v in value))
        return value

    @model_validator(mode="after")
    def _some_source(self) -> Settings:
        if not self.use_primary and not self.github_fallback:
            msg = (
                "use_primary (env HORDE_REPLICA_USE_PRIMARY, flag --no-primary) and "
                "github_fallback (env HORDE_REPLICA_GITHUB_FALLBACK, flag --no-fallback) "
                "are both off: there is nothing to sync from"
            )
            raise ValueError(msg)
        return self

    @property
    def effective_state_dir(self) -> Path:
        """The state directory: `state_dir`, else a dot-directory inside the replica."""
        return self.state_dir or self.replica_dir / ".horde-replica-sync"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init) beat our environment, then upstream's variables, then the TOML file."""
        upstream = UpstreamEnvSettingsSource(settings_cls)
        return (init_settings, env_settings, upstream, TomlConfigSettingsSource(settings_cls))


def _usable_authority(url: str) -> bool:
    """Whether the port is a number in range, and no `@` was left outside the authority."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- the property is the check: it raises on a bad port
    except ValueError:
        return False
    return "@" in parts.netloc or "@" not in url.partition("//")[2]


FLAGS: Final = {
    "primary_url": "--primary-url",
    "github_url": "--github-url",
    "use_primary": "--no-primary",
    "github_fallback": "--no-fallback",
    "replica_dir": "--replica-dir",
    "state_dir": "--state-dir",
    "categories": "--categories",
    "interval_seconds": "--interval",
    "metrics_addr": "--metrics-addr",
    "on_change_command": "--on-change",
}


def _split_command(value: str) -> tuple[str, ...]:
    """`value` split into words as a shell would, without running one (`sh -c '…'` for that)."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:  # e.g. "No closing quotation"
        msg = f"cannot be split into a command and its arguments: {exc}"
        raise ValueError(msg) from exc
    if not argv:
        msg = "is empty: give a command (no shell; write sh -c '...' for one), or leave it unset"
        raise ValueError(msg)
    return argv


def config_search_path(environ: dict[str, str] | None = None) -> list[Path]:
    """Where a config file is looked for when `--config` is not given, first match wins."""
    env = dict(os.environ) if environ is None else environ
    paths = []
    if env.get("HORDE_REPLICA_CONFIG"):
        paths.append(Path(env["HORDE_REPLICA_CONFIG"]))
    config_home = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths.append(Path(config_home) / "horde-replica-sync" / "config.toml")
    paths.append(Path("/etc/horde-replica-sync/config.toml"))
    return paths


def find_config_file(explicit: Path | None) -> Path | None:
    """`--config`, else `$HORDE_REPLICA_CONFIG` (must exist), else the first file that exists."""
    if explicit is not None:
        return explicit
    try:
        candidates = config_search_path()
        if os.environ.get("HORDE_REPLICA_CONFIG"):
            return candidates[0]
        return next((path for path in candidates if path.is_file()), None)
    except (OSError, RuntimeError) as exc:  # an unreadable $HOME, or none at all
        msg = (
            f"cannot look for a config file ({exc}); name one with --config or "
            "HORDE_REPLICA_CONFIG, or set XDG_CONFIG_HOME"
        )
        raise ConfigError(msg) from exc


def provenance(config_file: Path | None, overrides: dict[str, Any]) -> dict[str, str]:
    """Where each setting's value came from: flag, env, the config file, or default."""
    from_file: dict[str, Any] = {}
    if config_file is not None:
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
            from_file = tomllib.loads(config_file.read_text(encoding="utf-8"))
    origins = {}
    ours = _set_by_us(overrides)
    for key in Settings.model_fields:
        if key in overrides:
            origins[key] = f"flag {FLAGS.get(key, key)}"
        elif f"{ENV_PREFIX}{key.upper()}" in os.environ:
            origins[key] = f"env {ENV_PREFIX}{key.upper()}"
        elif upstream := upstream_origin(key, overridden=ours):
            origins[key] = upstream
        elif key in from_file:
            origins[key] = f"file {config_file}"
        else:
            origins[key] = "default"
    return origins


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise `ConfigError` naming the offending key."""
    settings_cls = Settings if config_file is None else _with_toml_file(config_file)
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc, overrides)) from exc


def _set_by_us(overrides: dict[str, Any]) -> set[str]:
    """The settings a flag or one of our own variables sets (upstream's cannot change them)."""
    ours = {key for key in Settings.model_fields if f"{ENV_PREFIX}{key.upper()}" in os.environ}
    return ours | set(overrides)


def describe_settings_error(exc: ValidationError, overrides: dict[str, Any] | None = None) -> str:
    """One line per broken setting: key, env var (upstream's, if it supplied the value), flag
    and rule."""
    ours = _set_by_us(overrides or {})
    lines = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else "settings"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {key} (not one of: {', '.join(Settings.model_fields)})")
            continue
        if key == "settings":
            supplied_by = [
                f"{name} from {origin}"
                for name in Settings.model_fields
                if (origin := upstream_origin(name, overridden=ours))
            ]
            supplied = f" ({'; '.join(supplied_by)})" if supplied_by else ""
            lines.append(
                f"invalid settings: {error['msg'].removeprefix('Value error, ')}{supplied}"
            )
            continue
        where = [f"env {ENV_PREFIX}{key.upper()}"]
        if key not in ours and (upstream := upstream_origin(key, overridden=ours)):
            where.insert(0, f"from {upstream}")
        if key in FLAGS:
            where.append(f"flag {FLAGS[key]}")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"invalid setting {key} ({', '.join(where)}): {message}")
    return "\n".join(lines)


def _with_toml_file(path: Path) -> type[Settings]:
    try:
        with path.open("rb") as handle:
            tomllib.load(handle)
    except OSError as exc:
        msg = f"cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from exc
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {path} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"config file {path} is not UTF-8 (byte {exc.start})"
        raise ConfigError(msg) from exc
    config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})
    return type("Settings", (Settings,), {"model_config": config})
