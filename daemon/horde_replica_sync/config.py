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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
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
DEFAULT_MAX_BODY_BYTES: Final = 64 * MIB
EMPTY_PATH: Final = (
    "is empty (what an unset ${VAR} in a compose or environment file gives): give a path, "
    "or leave the setting out"
)


REPLICA_NAME: Final = "horde_model_reference"


def default_cache_home(environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """Where the replica's parent is by default, and the rule that chose it (for humans).

    `$AIWORKER_CACHE_HOME` as upstream; without it the user's cache directory
    (`$XDG_CACHE_HOME`, else `~/.cache`), never the working directory: upstream 8.6.2 falls
    back to `./models`, which would make `status` run elsewhere look at another replica.
    """
    env = os.environ if environ is None else environ
    if env.get("AIWORKER_CACHE_HOME"):
        return Path(env["AIWORKER_CACHE_HOME"]), "$AIWORKER_CACHE_HOME"
    xdg = env.get("XDG_CACHE_HOME", "")
    if Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg), "$XDG_CACHE_HOME"
    try:
        home = Path.home()
    except RuntimeError as exc:  # no $HOME and no passwd entry
        msg = (
            f"invalid setting {describe_setting('replica_dir')}: no AIWORKER_CACHE_HOME and no "
            f"home directory for ~/.cache ({exc}); set one of them"
        )
        raise ConfigError(msg) from exc
    return home / ".cache", "~/.cache"


def default_replica_dir() -> Path:
    """`$AIWORKER_CACHE_HOME/horde_model_reference`, else
    `${XDG_CACHE_HOME:-~/.cache}/horde_model_reference` (never the working directory)."""
    return default_cache_home()[0] / REPLICA_NAME


def split_host_port(value: str) -> tuple[str, int]:
    """A `metrics_addr` (`HOST:PORT`, an IPv6 host in brackets) as host and port; ValueError
    saying the rule when it is not one."""
    host, _, port = value.rpartition(":")
    if not host or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"must be HOST:PORT with a port from 0 to 65535, got {value!r}"
        raise ValueError(msg)
    if host.startswith("[") or host.endswith("]") or ":" in host:
        _bracketed_ipv6(host, value)
    return host.removeprefix("[").removesuffix("]"), int(port)


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
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        use_attribute_docstrings=True,  # each field's docstring: docs/configuration.md
    )

    primary_url: str = DEFAULT_PRIMARY_URL
    """PRIMARY API base, including `/api`; a user:password in it is sent as basic auth, never
    shown."""
    github_url: str = GITHUB_URL
    """Raw GitHub base; a proxy or mirror laid out the same way works."""
    use_primary: bool = True
    """`false`: GitHub only (`--no-primary`)."""
    github_fallback: bool = True
    """Fall back to GitHub when the PRIMARY is unavailable (never on a 404)."""
    github_owner: str = Field(GITHUB_OWNER, min_length=1)
    """Owner of both legacy repositories."""
    github_branch: str = Field(GITHUB_BRANCH, min_length=1)
    """Branch of both legacy repositories."""
    replica_dir: Path = Field(default_factory=default_replica_dir)
    """The directory readers load (restart to change)."""
    state_dir: Path | None = None
    """Where `state.json` lives; unset: `<replica_dir>/.horde-replica-sync` (restart to
    change)."""
    categories: Annotated[tuple[Name, ...], NoDecode] = ALL_NAMES
    """Comma-separated categories and the PRIMARY's side catalogs (`baselines`,
    `text_guidance`, `licensing`) to sync."""
    request_timeout_seconds: float = Field(10.0, gt=0, le=600)
    """Per HTTP request: connecting, and each wait for more bytes."""
    request_deadline_seconds: float = Field(120.0, gt=0, le=3600)
    """The longest one request may take in all (connect, headers, body)."""
    run_timeout_seconds: float = Field(300.0, gt=0, le=DAY)
    """Bound on one whole run, change detection included; a run cut short fails
    (`run_timeout`)."""
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, le=1024 * MIB)
    """Bodies are abandoned past this many decoded bytes, while streaming."""
    max_concurrency: int = Field(4, ge=1, le=64)
    """Fetches in flight at once."""
    retry_attempts: int = Field(3, ge=1, le=20)
    """Tries per request (capped exponential backoff with full jitter, `Retry-After`
    honoured)."""
    retry_initial_seconds: float = Field(0.5, ge=0, le=600)
    """First backoff."""
    retry_max_seconds: float = Field(10.0, ge=0, le=3600)
    """Backoff cap."""
    max_shrink_fraction: float = Field(0.5, ge=0, le=1)
    """Refuse a payload that drops more than this fraction of a category's records."""
    cache_ttl_seconds: int = Field(3600, ge=1, le=30 * DAY)
    """A category is re-downloaded and re-verified at least this often, even if the metadata
    says nothing changed."""
    interval_seconds: float = Field(60.0, ge=1, le=DAY)
    """Period between runs."""
    init_interval_seconds: float = Field(10.0, ge=1, le=3600)
    """Period until the first successful run."""
    interval_jitter_seconds: float = Field(6.0, ge=0, le=3600)
    """Random delay added to each tick, so a fleet never polls in step."""
    misfire_grace_seconds: float = Field(30.0, ge=1, le=DAY)
    """A tick late by less than this still runs."""
    max_staleness_seconds: float = Field(7200.0, ge=1, le=30 * DAY)
    """`/readyz`, `status` and the staleness metric call a layer stale after this long without
    confirmation (keep the alert `HordeReplicaStale` equal)."""
    shutdown_timeout_seconds: float = Field(10.0, gt=0, le=300)
    """Bound on finishing the run in flight at SIGTERM."""
    metrics_addr: str = "127.0.0.1:9464"
    """`/metrics`, `/healthz`, `/readyz` as `HOST:PORT`; an IPv6 host in brackets (restart to
    change)."""
    ca_bundle: Path | None = None
    """PEM file of extra CAs trusted besides the system store."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug`, `info`, `warning` or `error`."""
    on_change_command: str | None = None
    """Command run after a sync published changes, and once at start; split like a shell
    would, run without one."""
    on_change_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    """The hook's whole process group is killed past this."""

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

    @field_validator("replica_dir", "state_dir", "ca_bundle", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # Path("") is Path("."): an unset compose `${VAR}` would silently mean the working
        # directory. An explicit "." still does.
        if isinstance(value, str) and not value.strip():
            raise ValueError(EMPTY_PATH)
        return value

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
        split_host_port(value)
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
        return split_host_port(self.metrics_addr)

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
                f"{describe_setting('use_primary')} and {describe_setting('github_fallback')} "
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


@dataclass(frozen=True, slots=True)
class Flag:
    """The command-line flag that sets one setting (a flag beats every other source)."""

    name: str
    help: str
    metavar: str | None = None
    type: Callable[[str], Any] = str  # paths stay strings until validated: Path("") is "."
    turns_off: bool = False  # `--no-…`: sets a boolean setting to false, takes no value
    daemon: bool = False  # only `run` takes it (and `check-config`, to show what run would use)


# Every flag that sets a setting, in the order `--help` lists them; cli.py builds the parser
# and its overrides from this, and error messages name the flag from it.
FLAGS: Final[Mapping[str, Flag]] = MappingProxyType(
    {
        "primary_url": Flag("--primary-url", "PRIMARY API base, including /api"),
        "github_url": Flag("--github-url", "raw GitHub base URL (a proxy or mirror works)"),
        "github_fallback": Flag("--no-fallback", "PRIMARY only, no GitHub", turns_off=True),
        "use_primary": Flag("--no-primary", "GitHub only", turns_off=True),
        "replica_dir": Flag("--replica-dir", "the replica directory readers load"),
        "state_dir": Flag("--state-dir", "where state.json lives"),
        "categories": Flag(
            "--categories", "comma-separated categories and catalogs (default: all)"
        ),
        "interval_seconds": Flag(
            "--interval",
            f"sync period ({Settings.model_fields['interval_seconds'].default:g})",
            metavar="SECONDS",
            type=float,
            daemon=True,
        ),
        "metrics_addr": Flag(
            "--metrics-addr",
            f"metrics/health ({Settings.model_fields['metrics_addr'].default})",
            metavar="HOST:PORT",
            daemon=True,
        ),
        "on_change_command": Flag(
            "--on-change",
            "command to run after a sync published changes (no shell)",
            metavar="CMD",
            daemon=True,
        ),
    }
)


def describe_setting(key: str, *, variable: str | None = None, upstream: str | None = None) -> str:
    """`key (env HORDE_REPLICA_KEY, flag --key)`: a setting as messages name it, with where
    an operator sets it. `variable`: our variable as spelled in the environment; `upstream`:
    the upstream variable that supplied the value, named first."""
    where = [f"env {variable or ENV_PREFIX + key.upper()}"]
    if upstream:
        where.insert(0, f"from {upstream}")
    if key in FLAGS:
        where.append(f"flag {FLAGS[key].name}")
    return f"{key} ({', '.join(where)})"


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


def find_config_file(explicit: str | Path | None) -> Path | None:
    """`--config`, else `$HORDE_REPLICA_CONFIG` (must exist), else the first file that exists.

    Either given empty is an error, not "none": it is what an unset `${VAR}` becomes.
    """
    if explicit is not None:
        if not str(explicit).strip():
            msg = f"the config file (flag --config) {EMPTY_PATH}"
            raise ConfigError(msg)
        return Path(explicit)
    if "HORDE_REPLICA_CONFIG" in os.environ and not os.environ["HORDE_REPLICA_CONFIG"].strip():
        msg = f"the config file (env HORDE_REPLICA_CONFIG) {EMPTY_PATH}"
        raise ConfigError(msg)
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
            origins[key] = f"flag {FLAGS[key].name if key in FLAGS else key}"
        elif variable := our_variable(key):
            origins[key] = f"env {variable}"
        elif upstream := upstream_origin(key, overridden=ours):
            origins[key] = upstream
        elif key in from_file:
            origins[key] = f"file {config_file}"
        else:
            origins[key] = "default"
    return origins


def resolved_paths(
    settings: Settings, config_file: Path | None, origins: dict[str, str]
) -> dict[str, str]:
    """The replica, state file and config file this command uses, each with why (for humans:
    `status`, `check-config` and `sync` print them, so nobody reads the wrong replica)."""
    replica_origin = origins["replica_dir"]
    if replica_origin == "default":
        rule = default_cache_home()[1]
        unset = "" if rule == "$AIWORKER_CACHE_HOME" else "; AIWORKER_CACHE_HOME unset"
        replica_origin = f"default: {rule}/{REPLICA_NAME}{unset}"
    state_origin = origins["state_dir"]
    if state_origin == "default":
        state_origin = "default: inside the replica"
    if config_file is not None:
        config = str(config_file.absolute())
    else:
        searched = ", ".join(str(path) for path in config_search_path())
        config = f"none (searched {searched})"
    return {
        "replica": f"{settings.replica_dir.absolute()} ({replica_origin})",
        "state": f"{settings.effective_state_dir.absolute() / 'state.json'} ({state_origin})",
        "config": config,
    }


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; raise `ConfigError` naming the offending key."""
    settings_cls = Settings if config_file is None else _with_toml_file(config_file)
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc, overrides)) from exc


def our_variable(key: str) -> str | None:
    """The name of our variable for setting `key` as it is set in the environment: names are
    case-insensitive, as pydantic-settings reads them (the upper-case spelling first)."""
    wanted = f"{ENV_PREFIX}{key.upper()}"
    if wanted in os.environ:
        return wanted
    return next((name for name in os.environ if name.upper() == wanted), None)


def _set_by_us(overrides: dict[str, Any]) -> set[str]:
    """The settings a flag or one of our own variables sets (upstream's cannot change them)."""
    ours = {key for key in Settings.model_fields if our_variable(key)}
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
        upstream = None if key in ours else upstream_origin(key, overridden=ours)
        setting = describe_setting(key, variable=our_variable(key), upstream=upstream)
        lines.append(f"invalid setting {setting}: {error['msg'].removeprefix('Value error, ')}")
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
