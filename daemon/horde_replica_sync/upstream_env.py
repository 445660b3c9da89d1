"""Upstream `horde-model-reference`'s own variables, honoured as aliases of our settings.

A worker's environment file configures upstream's reader with `HORDE_MODEL_REFERENCE_*`
variables (upstream's `HordeModelReferenceSettings`: that prefix, nested fields joined by `__`,
names case-insensitive). The same file can configure the daemon beside it: each variable below
supplies the matching setting, below our own `HORDE_REPLICA_*` variables and flags and above the
TOML file and the defaults.

| upstream variable | our setting |
| --- | --- |
| `HORDE_MODEL_REFERENCE_PRIMARY_API_URL` | `primary_url` (empty: `use_primary = false`) |
| `HORDE_MODEL_REFERENCE_PRIMARY_API_TIMEOUT` | `request_timeout_seconds` |
| `HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK` | `github_fallback` |
| `HORDE_MODEL_REFERENCE_{IMAGE,TEXT}_GITHUB_REPO__OWNER` | `github_owner` (both repositories) |
| `HORDE_MODEL_REFERENCE_{IMAGE,TEXT}_GITHUB_REPO__BRANCH` | `github_branch` (both repositories) |

We read both legacy repositories from one owner and branch, so the image and the text variable
must agree (an unset one counts as upstream's default, `Haidra-Org` / `main`); when they do not,
loading fails naming both, unless one of our own settings supplies the value.

Pure: reads the environment mapping it is given, nothing else (no I/O, no network imports).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from horde_replica_sync.categories import GITHUB_BRANCH, GITHUB_OWNER
from horde_replica_sync.errors import ConfigError

UPSTREAM_PREFIX: Final = "HORDE_MODEL_REFERENCE_"
PRIMARY_API_URL: Final = "HORDE_MODEL_REFERENCE_PRIMARY_API_URL"
PRIMARY_API_TIMEOUT: Final = "HORDE_MODEL_REFERENCE_PRIMARY_API_TIMEOUT"
ENABLE_GITHUB_FALLBACK: Final = "HORDE_MODEL_REFERENCE_ENABLE_GITHUB_FALLBACK"
IMAGE_OWNER: Final = "HORDE_MODEL_REFERENCE_IMAGE_GITHUB_REPO__OWNER"
TEXT_OWNER: Final = "HORDE_MODEL_REFERENCE_TEXT_GITHUB_REPO__OWNER"
IMAGE_BRANCH: Final = "HORDE_MODEL_REFERENCE_IMAGE_GITHUB_REPO__BRANCH"
TEXT_BRANCH: Final = "HORDE_MODEL_REFERENCE_TEXT_GITHUB_REPO__BRANCH"

# Our setting -> the upstream variables that can supply it.
ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "primary_url": (PRIMARY_API_URL,),
    "use_primary": (PRIMARY_API_URL,),
    "request_timeout_seconds": (PRIMARY_API_TIMEOUT,),
    "github_fallback": (ENABLE_GITHUB_FALLBACK,),
    "github_owner": (IMAGE_OWNER, TEXT_OWNER),
    "github_branch": (IMAGE_BRANCH, TEXT_BRANCH),
}
UPSTREAM_VARIABLES: Final = tuple(dict.fromkeys(v for names in ALIASES.values() for v in names))
_REPO_PAIRS: Final = {
    "github_owner": (IMAGE_OWNER, TEXT_OWNER, GITHUB_OWNER),
    "github_branch": (IMAGE_BRANCH, TEXT_BRANCH, GITHUB_BRANCH),
}


@dataclass(frozen=True, slots=True)
class UpstreamValue:
    """A value for one of our settings and the words saying which variable supplied it."""

    value: Any
    origin: str


def upstream_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The upstream variables we honour that are set, by canonical (upper-case) name."""
    wanted = {name.lower(): name for name in UPSTREAM_VARIABLES}
    found: dict[str, str] = {}
    for name, value in environ.items():
        canonical = wanted.get(name.lower())
        if canonical is not None and (canonical not in found or name == canonical):
            found[canonical] = value
    return found


def upstream_values(
    environ: Mapping[str, str] | None = None, overridden: Collection[str] = ()
) -> dict[str, UpstreamValue]:
    """What the upstream variables supply, per setting; settings in `overridden` are skipped.

    Raises `ConfigError` when the image and text repository variables disagree about a setting
    we hold once for both.
    """
    found = upstream_variables(os.environ if environ is None else environ)
    values: dict[str, UpstreamValue] = {}
    if PRIMARY_API_URL in found:
        url = found[PRIMARY_API_URL]
        if url:
            values["primary_url"] = UpstreamValue(url, f"env {PRIMARY_API_URL}")
        elif "primary_url" not in overridden:  # empty: GitHub only, as upstream
            values["use_primary"] = UpstreamValue(
                False, f"env {PRIMARY_API_URL} (empty: GitHub only)"
            )
    if PRIMARY_API_TIMEOUT in found:
        values["request_timeout_seconds"] = UpstreamValue(
            found[PRIMARY_API_TIMEOUT], f"env {PRIMARY_API_TIMEOUT}"
        )
    if ENABLE_GITHUB_FALLBACK in found:
        values["github_fallback"] = UpstreamValue(
            found[ENABLE_GITHUB_FALLBACK], f"env {ENABLE_GITHUB_FALLBACK}"
        )
    for setting, (image, text, default) in _REPO_PAIRS.items():
        if setting in overridden or (image not in found and text not in found):
            continue
        image_value, text_value = found.get(image, default), found.get(text, default)
        if image_value != text_value:
            msg = (
                f"invalid setting {setting} (env {image}, env {text}): horde-replica-sync reads "
                f"both legacy repositories with one {setting}, but the image repository's is "
                f"{image_value!r}{'' if image in found else ' (unset: the default)'} and the text "
                f"repository's {text_value!r}{'' if text in found else ' (unset: the default)'}; "
                f"set both to the same value, or set HORDE_REPLICA_{setting.upper()}"
            )
            raise ConfigError(msg)
        names = " and ".join(f"env {name}" for name in (image, text) if name in found)
        values[setting] = UpstreamValue(image_value, names)
    return {k: v for k, v in values.items() if k not in overridden}


def upstream_origin(
    setting: str, environ: Mapping[str, str] | None = None, overridden: Collection[str] = ()
) -> str | None:
    """Which upstream variable supplies `setting` (`env HORDE_MODEL_REFERENCE_…`), if any."""
    try:
        supplied = upstream_values(environ, overridden)
    except ConfigError:
        return None
    value = supplied.get(setting)
    return None if value is None else value.origin


class UpstreamEnvSettingsSource(PydanticBaseSettingsSource):
    """A settings source for the upstream aliases; place it after our own env source."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` builds the whole mapping at once."""
        value = upstream_values().get(field_name)
        return (None if value is None else value.value), field_name, False

    def __call__(self) -> dict[str, Any]:
        """The values the upstream variables supply that no higher source already set."""
        supplied = upstream_values(overridden=set(self.current_state))
        return {setting: value.value for setting, value in supplied.items()}
