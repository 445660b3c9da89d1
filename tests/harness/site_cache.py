"""The site cache: real nginx running config/nginx-site-cache.example.conf, and its access log.

The example is rendered by replacing its three "(per site)" values (workers' user, listen
address, PRIMARY origin) and nothing else, so what runs is the file operators copy. nginx runs
in the foreground (`daemon off` is in the file) as this process's child, in its own prefix
directory (pid, logs, temp and cache paths are relative to it), and is stopped by its PID.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.environment import ROOT, free_port

EXAMPLE: Final = ROOT / "config" / "nginx-site-cache.example.conf"
NGINX_CANDIDATES: Final = ("/usr/sbin/nginx",)
START_TIMEOUT_SECONDS: Final = 10.0
METADATA_CACHE_SECONDS: Final = 5.0  # proxy_cache_valid of the metadata location
# nginx keeps cache time in whole seconds: an entry valid for 5 s is served for 5 to 6 s.
METADATA_MAX_AGE_SECONDS: Final = METADATA_CACHE_SECONDS + 1
# The example's per-site values, each with how many times it occurs there.
EXAMPLE_USER: Final = ("user www-data;", 1)
EXAMPLE_LISTEN: Final = ("listen 127.0.0.1:8080;", 1)
EXAMPLE_PRIMARY: Final = ("proxy_pass https://models.aihorde.net;", 5)

# The example's log_format `site_cache`.
_ACCESS_LINE: Final = re.compile(
    r'^(?P<client>\S+) \[(?P<time>[^]]+)\] "(?P<method>\S+) (?P<target>\S+) [^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) cache=(?P<cache>\S+) upstream=(?P<upstream>\S+) "
)
_NO_PROXY_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def nginx_binary() -> str:
    """nginx's path (PATH, then /usr/sbin); fail, never skip, when it is missing."""
    found = shutil.which("nginx") or next(
        (p for p in NGINX_CANDIDATES if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail("nginx is missing: `make tools` installs Debian's nginx package")
    return found


def render(example: str, *, user: str, listen: str, primary_origin: str) -> str:
    """The example with its per-site values replaced; fails if one is not there as expected."""
    replacements = (
        (EXAMPLE_USER, f"user {user};"),
        (EXAMPLE_LISTEN, f"listen {listen};"),
        (EXAMPLE_PRIMARY, f"proxy_pass {primary_origin};"),
    )
    for (old, expected), new in replacements:
        found = example.count(old)
        if found != expected:
            msg = f"{EXAMPLE.name}: expected {old!r} {expected}x, found {found}x"
            raise AssertionError(msg)
        example = example.replace(old, new)
    return example


@dataclass(frozen=True, slots=True)
class AccessLine:
    """One request the site cache answered."""

    method: str
    target: str  # path and query, as the client sent it
    status: int
    body_bytes: int
    cache: str  # $upstream_cache_status: HIT, MISS, EXPIRED, BYPASS, ... or "-"
    upstream: str  # "-" when the PRIMARY was not asked

    @property
    def path(self) -> str:
        """The target without its query."""
        return self.target.partition("?")[0]

    @property
    def reached_primary(self) -> bool:
        """Whether nginx asked the PRIMARY for this one."""
        return self.upstream != "-"


class SiteCache:
    """nginx with the rendered example in `prefix`, in front of `primary_origin`."""

    def __init__(
        self, prefix: Path, primary_origin: str, *, edits: tuple[tuple[str, str], ...] = ()
    ) -> None:
        """`edits`: (old, new) replacements after rendering, for a deliberately wrong cache;
        each `old` must occur in the example exactly once."""
        self.prefix = prefix
        self.port = free_port()
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        conf = render(
            EXAMPLE.read_text(encoding="utf-8"),
            user=getpass.getuser(),
            listen=f"127.0.0.1:{self.port}",
            primary_origin=primary_origin,
        )
        for old, new in edits:
            assert conf.count(old) == 1, f"{EXAMPLE.name}: {old!r} is not there once"
            conf = conf.replace(old, new)
        self.conf.write_text(conf, encoding="utf-8")
        argv = [nginx_binary(), "-p", str(prefix), "-c", str(self.conf)]
        self.out = (prefix / "nginx.out").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT)
        self._wait_ready()

    @property
    def url(self) -> str:
        """The API base daemons use (`primary_url`)."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def access_log(self) -> Path:
        """The example's access log (relative to the prefix)."""
        return self.prefix / "access.log"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"nginx exited {self.proc.returncode}:\n{self.diagnostics()}")
            try:
                with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{self.port}/", timeout=1):
                    pass
            except urllib.error.HTTPError:
                return  # `location /` answers 404: it is listening
            except OSError:
                time.sleep(0.05)
                continue
            return
        pytest.fail(f"nginx did not listen within {START_TIMEOUT_SECONDS} s:\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        """nginx's output and error log, for failure messages."""
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def log_size(self) -> int:
        """The access log's length now: pass it to `lines(since=...)` later."""
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def lines(self, since: int = 0) -> list[AccessLine]:
        """The access log's requests from byte offset `since` on."""
        with self.access_log.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        found = []
        for raw in text.splitlines():
            match = _ACCESS_LINE.match(raw)
            if match is None:
                msg = f"unexpected access log line: {raw!r}"
                raise AssertionError(msg)
            found.append(
                AccessLine(
                    match["method"],
                    match["target"],
                    int(match["status"]),
                    int(match["bytes"]),
                    match["cache"],
                    match["upstream"],
                )
            )
        return found

    def stop(self) -> None:
        """SIGTERM (fast shutdown) by PID, wait, close the output file."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.out.close()
