"""The network edge against real servers on 127.0.0.1: secrets, compression, TLS, proxies.

Each test runs the real CLI (or daemon) as a child process, or a real sync in-process, and
reads everything the process printed, logged and stored.
"""

from __future__ import annotations

import gzip
import json
import signal
import ssl
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import trustme

from horde_replica_sync.categories import MODEL_REFERENCE_CATEGORY as C
from horde_replica_sync.categories import Layer
from horde_replica_sync.config import load_settings
from horde_replica_sync.errors import ConfigError, ErrorKind
from tests.environment import clean_env, free_port
from tests.faults.conftest import SyncFn
from tests.faultserver import FaultServer, Reply, metadata, running, script_primary, v2_path
from tests.processes import DaemonProcess, run_cli

USER, PASSWORD = "worker-7", "s3cr3t-Pa55"
ONE = "esrgan"
MIB = 1024 * 1024


def with_userinfo(url: str) -> str:
    """`url` with our test user and password in it."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{USER}:{PASSWORD}@{rest}"


def everything_under(directory: Path) -> str:
    """The text of every file under `directory` (state, data), for secret scans."""
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(directory.rglob("*")) if p.is_file()
    )


def layer_state(replica: Path, category: str, layer: str = "v2") -> dict[str, Any]:
    """One layer's record in the replica's state.json."""
    state = json.loads((replica / ".horde-replica-sync" / "state.json").read_text())
    entry: dict[str, Any] = state["categories"][category][layer]
    return entry


class TestCredentialsInUrls:
    """Credentials in `primary_url` are used for requests and never shown anywhere."""

    def test_used_for_requests_and_redacted_everywhere(self, tmp_path: Path) -> None:
        """Basic auth reaches the server; no output, log line, dump or file holds the secret."""
        replica = tmp_path / "replica"
        with running(basic_auth=(USER, PASSWORD)) as server:
            script_primary(server)
            server.script(v2_path(C.blip), Reply(500))  # retries, a failed layer, last_error
            env = clean_env(
                HORDE_REPLICA_PRIMARY_URL=with_userinfo(f"{server.url}/api"),
                HORDE_REPLICA_REPLICA_DIR=str(replica),
                HORDE_REPLICA_CATEGORIES=f"{ONE},blip",
                HORDE_REPLICA_GITHUB_FALLBACK="false",
                HORDE_REPLICA_RETRY_INITIAL_SECONDS="0.01",
                HORDE_REPLICA_RETRY_MAX_SECONDS="0.02",
            )
            commands = (["sync", "--once"], ["status"], ["status", "--json"], ["check-config"])
            shown = [run_cli(*args, env=env) for args in (*commands, ["check-config", "--json"])]
            daemon_log = self._daemon_log(env, tmp_path)
            assert server.requests, "the server saw no request"
            assert all(
                r.headers.get("authorization") == server.authorization for r in server.requests
            )
        assert shown[0].returncode == 75, shown[0].stderr  # blip failed, esrgan synced
        assert layer_state(replica, ONE)["last_outcome"] == "ok"  # the server let us in
        assert "blip" in layer_state(replica, "blip")["last_error"]
        texts = [p.stdout + p.stderr for p in shown] + [daemon_log, everything_under(replica)]
        for text in texts:
            assert PASSWORD not in text
            assert f"{USER}:" not in text
        assert "***@127.0.0.1" in shown[0].stdout + shown[0].stderr
        assert "http.retry_scheduled" in shown[0].stderr  # the retry lines were checked too
        config = json.loads(shown[-1].stdout)
        assert config["primary_url"]["value"].startswith("http://***@127.0.0.1:")

    @staticmethod
    def _daemon_log(env: dict[str, str], tmp_path: Path) -> str:
        """The daemon's whole log across start, a reload (SIGHUP) and stop."""
        config = tmp_path / "config.toml"
        config.write_text("interval_seconds = 3600\n")
        daemon = DaemonProcess([], {**env, "HORDE_REPLICA_CONFIG": str(config)})
        try:
            daemon.wait_for("sync.run_done")
            config.write_text("interval_seconds = 1800\n")
            daemon.signal(signal.SIGHUP)
            daemon.wait_for("config.reloaded")
            assert daemon.stop() == 0
        finally:
            daemon.close()
        events = {e["event"] for e in daemon.events}
        assert {"daemon.starting", "config.reloaded", "daemon.stopped"} <= events
        return "".join(daemon.raw)

    @pytest.mark.parametrize(
        ("variable", "url"),
        [
            ("HORDE_REPLICA_PRIMARY_URL", "http://127.0.0.1:9/api?token=tok3n-123"),
            ("HORDE_REPLICA_GITHUB_URL", "http://127.0.0.1:9/raw#tok3n-123"),
        ],
    )
    def test_query_or_fragment_rejected(self, variable: str, url: str) -> None:
        """A query string or fragment in a base URL exits 78 naming it, the token unshown."""
        result = run_cli("check-config", env=clean_env(**{variable: url}))
        assert result.returncode == 78, result.stdout
        assert variable.removeprefix("HORDE_REPLICA_").lower() in result.stderr
        assert "tok3n-123" not in result.stdout + result.stderr


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of `inflated` zero bytes (about 1 KB per MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(MIB)
    parts = [packer.compress(block) for _ in range(inflated // MIB)]
    return b"".join([*parts, packer.flush()])


# Runs in a small launcher: Linux counts the parent's resident set in a child's ru_maxrss
# when the child is spawned with vfork (as subprocess does) and then execs.
_MEASURE: Final = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=sys.stderr)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_kib(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, int]:
    """Run `argv` to the end; its exit code and peak resident memory (KiB, from wait4)."""
    with log.open("w") as stderr:
        measured = subprocess.run(
            [sys.executable, "-c", _MEASURE, *argv],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=120,
            check=True,
        )
    code, peak = measured.stdout.split()
    return int(code), int(peak)


class TestCompressedBodies:
    """Decompression is bounded while it streams: a gzip bomb costs about the cap."""

    def test_gzip_bomb_is_cut_at_the_cap(self, tmp_path: Path) -> None:
        """A 1 MB gzip bomb (1 GiB inflated) with a 1 MiB cap: OVERSIZE, small peak RSS."""
        replica = tmp_path / "replica"
        bomb = gzip_bomb(1024 * MIB)
        with running() as server:
            script_primary(server)
            env = clean_env(
                HORDE_REPLICA_PRIMARY_URL=f"{server.url}/api",
                HORDE_REPLICA_REPLICA_DIR=str(replica),
                HORDE_REPLICA_CATEGORIES=ONE,
                HORDE_REPLICA_GITHUB_FALLBACK="false",
                HORDE_REPLICA_MAX_BODY_BYTES=str(MIB),
            )
            argv = [sys.executable, "-m", "horde_replica_sync", "sync", "--once"]
            code, baseline = peak_rss_kib(argv, env, tmp_path / "good.log")
            assert code == 0, (tmp_path / "good.log").read_text()
            published = (replica / "esrgan.json").read_bytes()
            for family in ("v1", "v2"):
                path = f"/api/model_references/{family}/metadata/metadata"
                server.script(path, Reply(body=metadata(2000)))
            server.script(v2_path(C.esrgan), Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
            code, peak = peak_rss_kib(argv, env, tmp_path / "bomb.log")
        log = (tmp_path / "bomb.log").read_text()
        print(
            f"gzip bomb of {len(bomb)} bytes, 1 MiB cap: peak RSS {peak / 1024:.1f} MiB "
            f"(a good sync: {baseline / 1024:.1f} MiB)"
        )
        assert code == 75, log
        assert (replica / "esrgan.json").read_bytes() == published
        error = layer_state(replica, ONE)["last_error"]
        assert v2_path(C.esrgan) in error and f"{MIB}-byte cap" in error, error
        assert peak < 80 * 1024, f"peak RSS {peak} KiB"

    async def test_gzip_body_is_decoded(self, server: FaultServer, sync: SyncFn) -> None:
        """A gzip-encoded body within the cap is decoded and published."""
        script_primary(server)
        plain = server_body(server, v2_path(C.esrgan))
        server.script(
            v2_path(C.esrgan),
            Reply(body=gzip.compress(plain), headers={"Content-Encoding": "gzip"}),
        )
        report = await sync(categories=ONE)
        assert report.ok, report.failed
        assert all(r.headers.get("accept-encoding") == "gzip, deflate" for r in server.requests)


def server_body(server: FaultServer, path: str) -> bytes:
    """The body `server` would send for `path` now (without recording a request)."""
    return server._routes[path][0].body


@pytest.fixture(name="ca", scope="module")
def _ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(name="tls_server")
def _tls_server(ca: trustme.CA) -> Iterator[FaultServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with running(tls=context) as server:
        script_primary(server)
        yield server


class TestTls:
    """The system store is trusted, `ca_bundle` adds to it, and a TLS failure says what to do."""

    async def test_unknown_ca_is_a_tls_error(self, tls_server: FaultServer, sync: SyncFn) -> None:
        """A certificate from a CA nobody trusts fails with kind tls and names ca_bundle."""
        report = await sync(
            primary_url=f"{tls_server.url}/api", categories=ONE, github_fallback=False
        )
        (result,) = [r for r in report.results if r.layer is Layer.V2]
        assert result.error_kind is ErrorKind.TLS, result.error
        assert result.error is not None
        assert "certificate verify failed" in result.error
        assert "ca_bundle" in result.error and "system" in result.error

    async def test_ca_bundle_is_trusted(
        self, tls_server: FaultServer, sync: SyncFn, ca: trustme.CA, tmp_path: Path
    ) -> None:
        """With the CA in `ca_bundle` the same server syncs."""
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        report = await sync(
            primary_url=f"{tls_server.url}/api",
            categories=ONE,
            github_fallback=False,
            ca_bundle=bundle,
        )
        assert report.ok, report.failed

    @pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "invalid"])
    def test_bad_ca_bundle_exits_78(self, tmp_path: Path, content: bytes | None) -> None:
        """A missing or unparsable CA bundle is a configuration error naming the setting."""
        bundle = tmp_path / "ca.pem"
        if content is not None:
            bundle.write_bytes(content)
        result = run_cli("check-config", env=clean_env(HORDE_REPLICA_CA_BUNDLE=str(bundle)))
        assert result.returncode == 78, result.stdout
        assert "ca_bundle" in result.stderr and "HORDE_REPLICA_CA_BUNDLE" in result.stderr

    def test_empty_ca_bundle_is_a_config_error(self) -> None:
        """`HORDE_REPLICA_CA_BUNDLE=` (an unset compose `${VAR}`) is neither `.` nor silently
        "no extra CA": a configuration error naming the setting (issue 20 item 6)."""
        with pytest.raises(ConfigError, match=r"ca_bundle .*is empty"):
            load_settings(ca_bundle="")


class TestProxies:
    """A proxy that is down is named (redacted) in the error."""

    @pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
    async def test_dead_proxy_is_named(
        self, server: FaultServer, sync: SyncFn, monkeypatch: pytest.MonkeyPatch, variable: str
    ) -> None:
        """Connection errors through a proxy name it, without its password."""
        script_primary(server)
        proxy = f"http://puser:{PASSWORD}@127.0.0.1:{free_port()}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        monkeypatch.setenv(variable, proxy)
        report = await sync(categories=ONE, github_fallback=False, retry_attempts=1)
        assert not report.ok
        errors = [r.error or "" for r in report.failed] + [report.primary_error or ""]
        assert any("via proxy http://***@127.0.0.1:" in e for e in errors), errors
        assert not any(PASSWORD in e for e in errors)
        assert server.count() == 0  # everything went to the (dead) proxy
