"""Tests of `horde_replica_sync.redact` and of the places URLs leave through it."""

from __future__ import annotations

import pytest

from horde_replica_sync.config import load_settings
from horde_replica_sync.errors import ConfigError, SourceUnavailable
from horde_replica_sync.redact import redact_url


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
