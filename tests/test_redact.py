"""Tests of `horde_replica_sync.redact` and of the places URLs leave through it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from horde_replica_sync.config import load_settings
from horde_replica_sync.errors import ConfigError, SourceUnavailable
from horde_replica_sync.redact import redact_url
from tests import processes


class TestRedactUrl:
    """Userinfo and query values never survive; the rest of the URL does."""

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("https://models.aihorde.net/api", "https://models.aihorde.net/api"),
            ("https://u:pw@host/api/x", "https://***@host/api/x"),
            ("https://TOKEN@host:8443/api", "https://***@host:8443/api"),
            ("http://u:p@ss@host/", "http://***@host/"),  # an unescaped @ in the password
            ("http://proxy:3128/?token=abc&x", "http://proxy:3128/?token=***&x=***"),
            ("https://host/api#frag", "https://host/api"),
            ("user:pw@proxy.local:3128", "***@proxy.local:3128"),  # a proxy without scheme
            ("http://[::1", "***(unparsable URL)"),
            ("https://***@host/api", "https://***@host/api"),  # idempotent
            (  # our own content keys are stamps and nonces: shown, the rest is not
                "https://u:pw@host/api/v2/esrgan?last_updated=17&fresh=ab12&token=t",
                "https://***@host/api/v2/esrgan?last_updated=17&fresh=ab12&token=***",
            ),
        ],
    )
    def test_table(self, url: str, shown: str) -> None:
        """Each form is shown without its secrets."""
        assert redact_url(url) == shown

    @pytest.mark.parametrize(
        "url",
        [
            "https://user:pa/SECRET@host/api",  # "/" ends the authority for a parser...
            "https://user:pa?SECRET@host/api",  # ...and so do "?" and "#": what looks like
            "https://user:pa#SECRET@host/api",  # path, query or fragment is the password
            "https://SECRET/x@host/api",
            "http://u:SECRET/x@proxy.local:3128",
        ],
    )
    def test_a_password_with_an_unescaped_delimiter_is_hidden(self, url: str) -> None:
        """A careless password ("/", "?" or "#" not percent-encoded) is still a password."""
        shown = redact_url(url)
        assert "SECRET" not in shown and ":pa" not in shown, shown
        assert shown.startswith(url.split("://")[0] + "://***@"), shown

    def test_source_error_redacts(self) -> None:
        """A SourceError's `url` and message never carry the password."""
        error = SourceUnavailable("https://u:pw@host/api/x", "HTTP 500")
        assert error.url == "https://***@host/api/x"
        assert str(error) == "https://***@host/api/x: HTTP 500"


class TestSettingsUrls:
    """Settings keep the real URL for requests and show only the redacted one."""

    def test_json_dump_is_redacted(self) -> None:
        """The JSON dump (logged, printed) hides the userinfo; the attribute keeps it."""
        settings = load_settings(primary_url="https://u:pw@host/api")
        assert settings.primary_url == "https://u:pw@host/api"
        assert settings.model_dump(mode="json")["primary_url"] == "https://***@host/api"

    @pytest.mark.parametrize("url", ["https://host/api?token=t0k", "https://host/api#t0k"])
    def test_query_and_fragment_rejected(self, url: str) -> None:
        """A query or fragment in a base URL is a ConfigError that does not show it."""
        with pytest.raises(ConfigError) as info:
            load_settings(primary_url=url)
        assert "primary_url" in str(info.value) and "--primary-url" in str(info.value)
        assert "t0k" not in str(info.value)

    @pytest.mark.parametrize(
        "url",
        [
            "https://user:pa/SECRET@host/api",
            "https://user:SECRET@host:99999/api",
            "https://user:SECRET@host:port/api",
        ],
    )
    def test_an_unusable_authority_is_refused_without_its_password(self, url: str) -> None:
        """No request could be made with it (httpx: "Invalid port"), so it exits 78 at load,
        naming the setting and how to write it, never the password."""
        with pytest.raises(ConfigError) as info:
            load_settings(primary_url=url)
        message = str(info.value)
        assert "primary_url" in message and "percent-encode" in message, message
        assert "SECRET" not in message, message

    def test_invalid_url_message_is_redacted(self) -> None:
        """Even a URL refused for another reason is shown without its password."""
        with pytest.raises(ConfigError) as info:
            load_settings(github_url="ftp://u:pw@host")
        assert "pw" not in str(info.value) and "ftp://***@host" in str(info.value)


def test_a_traceback_quoting_a_url_loses_its_userinfo() -> None:
    """Behind redact_url: any log line (a traceback too) is scrubbed of `://user:pw@`."""
    import io
    import json

    import structlog

    from horde_replica_sync import logs

    stream = io.StringIO()
    logs.configure(stream=stream, json=True)
    try:
        raise RuntimeError("cannot reach http://bob:hunter2@proxy.test:3128/")
    except RuntimeError:
        structlog.get_logger("test").exception("daemon.unexpected_error", note="u:pw@x")
    finally:
        structlog.reset_defaults()
    line = json.loads(stream.getvalue())
    assert "hunter2" not in stream.getvalue()
    assert "http://***@proxy.test:3128/" in line["exception"]
    assert line["note"] == "u:pw@x"  # no scheme: not a URL, left alone


def test_a_traceback_quoting_a_careless_password_loses_it() -> None:
    """A "/" in the password used to end the scrubbed userinfo before the password did."""
    from horde_replica_sync import logs

    event = {"exception": "InvalidURL: cannot use http://u:SECRET/x@proxy.test:3128 'now'"}
    scrubbed = logs._scrub_userinfo(None, "error", event)["exception"]
    assert scrubbed == "InvalidURL: cannot use http://***@proxy.test:3128 'now'"


def isolated_cli(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, with only `variables` among the proxy and our settings."""
    names = ("HORDE_", "AIWORKER_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(names)}
    env.update(variables, XDG_CONFIG_HOME=str(tmp_path / "no-config"))
    return processes.run_cli(*args, env=env, cwd=tmp_path)


class TestCarelessPasswordsInProcesses:
    """A password with an unescaped "/" in the settings or a proxy variable: exit 78, a
    message naming where it was, and the password nowhere (stdout, stderr, files)."""

    def test_upstream_primary_url_alias(self, tmp_path: Path) -> None:
        """check-config --json used to print it whole (the parser saw no userinfo)."""
        url = "https://user:pa/SECRET@models.test/api"
        result = isolated_cli(
            tmp_path, "check-config", "--json", HORDE_MODEL_REFERENCE_PRIMARY_API_URL=url
        )
        assert result.returncode == 78, result.stdout + result.stderr
        assert "HORDE_MODEL_REFERENCE_PRIMARY_API_URL" in result.stderr
        assert "SECRET" not in result.stdout + result.stderr

    @pytest.mark.parametrize(
        ("proxy", "advice"),
        [
            ("http://u:SECRET/x@127.0.0.1:9", "percent-encode"),
            ("ftp://u:SECRET@127.0.0.1:9", "http://"),
            ("socks5://u:SECRET@127.0.0.1:9", "socksio"),
        ],
        ids=["unescaped-slash", "ftp", "socks-without-socksio"],
    )
    def test_https_proxy(self, tmp_path: Path, proxy: str, advice: str) -> None:
        """httpx refused the proxy (InvalidURL "Invalid port: 'SECRET'", an unknown scheme,
        ImportError for SOCKS) in an unexpected_error traceback, exit 1; now the variable is
        named with what to do, and the run never starts."""
        replica = tmp_path / "r"
        result = isolated_cli(
            tmp_path,
            *("sync", "--once", "--no-fallback", "--categories", "esrgan"),
            *("--primary-url", "http://127.0.0.1:9/api", "--replica-dir", str(replica)),
            HTTPS_PROXY=proxy,
            HTTP_PROXY=proxy,
        )
        assert result.returncode == 78, result.stdout + result.stderr
        assert "HTTP_PROXY" in result.stderr and advice in result.stderr
        assert "SECRET" not in result.stdout + result.stderr
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
        assert leaked == []
