"""The Dockerfile, read statically: lint, image shape, build context, pinned dependencies.

The image itself is built and run for real by `make image-test` (tests/image/).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import distribution
from pathlib import Path
from typing import Final

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from horde_replica_sync.config import ENV_PREFIX, Settings, load_settings
from tests.deploy.conftest import (
    CONFIG_DIR,
    ROOT,
    require_tool,
)

DOCKERFILE: Final = ROOT / "Dockerfile"
DOCKERIGNORE: Final = ROOT / ".dockerignore"
RUNTIME_LOCK: Final = CONFIG_DIR / "requirements.lock"
BUILD_LOCK: Final = CONFIG_DIR / "build-requirements.lock"
IMAGE_VENV_BIN: Final = "/opt/horde-replica-sync/bin"
IMAGE_DATA: Final = "/data"
PROJECT: Final = "horde-replica-sync"


@dataclass
class Stage:
    """One build stage: its base, name and instructions (keyword, arguments) in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction."""
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        """The arguments of the single `keyword` instruction."""
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword}, got {found}"
        return found[0]

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with this stage's ENV instructions applied ($VAR and ${VAR} expanded)."""
        env = dict(base)
        for args in self.all("ENV"):
            for assignment in shlex.split(args):
                name, sep, value = assignment.partition("=")
                assert sep, f"ENV in legacy `ENV key value` form: {args!r}"
                env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        return env


@dataclass
class Dockerfile:
    """The Dockerfile's global ARGs and its stages."""

    args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        """Parse instructions: continuation lines joined, comments dropped, ARGs resolved."""
        logical: list[str] = []
        pending = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            stripped = raw.strip()
            if stripped.startswith("#") or (not stripped and not pending):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            logical.append(pending + stripped)
            pending = ""
        assert not pending, "dangling line continuation"
        args: dict[str, str] = {}
        stages: list[Stage] = []
        for line in logical:
            keyword, _, rest = line.partition(" ")
            keyword, rest = keyword.upper(), rest.strip()
            if keyword == "FROM":
                image, _, name = rest.partition(" AS ")
                image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], image.strip())
                stages.append(Stage(image, name.strip() or None))
            elif not stages:
                assert keyword == "ARG", f"{keyword} before the first FROM"
                name, _, default = rest.partition("=")
                args[name] = default
            else:
                stages[-1].instructions.append((keyword, rest))
        return cls(args, stages)

    @property
    def final(self) -> Stage:
        """The stage that becomes the image."""
        return self.stages[-1]


def healthcheck() -> tuple[list[str], float]:
    """The HEALTHCHECK's exec-form command and its --timeout in seconds."""
    spec = Dockerfile.read(DOCKERFILE).final.one("HEALTHCHECK")
    match = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(\[.*\])", spec)
    assert match, f"HEALTHCHECK must be `[options] CMD [exec form]`: {spec!r}"
    options = dict(option.lstrip("-").split("=", 1) for option in match.group(1).split())
    timeout = options.get("timeout", "30s")
    assert timeout.endswith("s"), timeout
    command: list[str] = json.loads(match.group(2))
    return command, float(timeout[:-1])


def read_lock(path: Path) -> dict[str, Version]:
    """A lock file's `name==version` lines."""
    pins: dict[str, Version] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: not pinned: {line}"
        pins[canonicalize_name(requirement.name)] = Version(specs[0].version)
    return pins


def runtime_closure() -> dict[str, str]:
    """Every runtime dependency of the project (recursively), with its installed version."""
    found: dict[str, str] = {}
    todo = [PROJECT]
    while todo:
        for raw in distribution(todo.pop()).requires or []:
            requirement = Requirement(raw)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = canonicalize_name(requirement.name)
            if name not in found:
                found[name] = distribution(requirement.name).version
                todo.append(requirement.name)
    return found


class TestDockerfileLint:
    """hadolint has nothing to say about the Dockerfile."""

    def test_hadolint_is_clean(self) -> None:
        """`hadolint Dockerfile` exits 0 without findings."""
        hadolint = require_tool("hadolint")
        result = subprocess.run(
            [hadolint, str(DOCKERFILE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == ""


class TestImageShape:
    """A multi-stage build whose final stage is a non-root daemon with a volume and probes."""

    def test_multi_stage_without_build_tools_in_the_image(self) -> None:
        """The wheel is built in a named builder; the image only copies the venv from it."""
        dockerfile = Dockerfile.read(DOCKERFILE)
        assert len(dockerfile.stages) >= 2
        builder, final = dockerfile.stages[0], dockerfile.final
        assert builder.name is not None
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", final.base), final.base
        assert builder.base == final.base
        assert any("pip wheel" in run for run in builder.all("RUN"))
        for run in final.all("RUN"):
            assert not re.search(r"pip |apt-get|apk |gcc|build-essential", run), run
        venv = Path(IMAGE_VENV_BIN).parent
        assert final.all("COPY") == [f"--from={builder.name} {venv} {venv}"]

    def test_non_root_user(self) -> None:
        """The image runs as a fixed numeric, non-root UID and GID."""
        user = Dockerfile.read(DOCKERFILE).final.one("USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) >= 1000, user
        assert gid.isdigit() and int(gid) >= 1000, user

    def test_volume_is_the_replica_dir(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The settings the image's ENV yields put the replica on the VOLUME, metrics on 9464."""
        final = Dockerfile.read(DOCKERFILE).final
        volumes = json.loads(final.one("VOLUME"))
        env = final.env({})
        assert env["AIWORKER_CACHE_HOME"] == IMAGE_DATA
        for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith(ENV_PREFIX) or name == "AIWORKER_CACHE_HOME":
                monkeypatch.setenv(name, value)
        settings = load_settings(None)
        assert volumes == [str(settings.replica_dir)] == [f"{IMAGE_DATA}/horde_model_reference"]
        assert settings.metrics_host_port == ("0.0.0.0", 9464)
        assert final.one("EXPOSE") == "9464"
        assert final.one("WORKDIR") == IMAGE_DATA

    def test_exec_form_entrypoint_and_signals(self) -> None:
        """ENTRYPOINT/CMD in exec form (the daemon is PID 1), SIGTERM to stop, /healthz probe."""
        final = Dockerfile.read(DOCKERFILE).final
        assert json.loads(final.one("ENTRYPOINT")) == [PROJECT]
        assert json.loads(final.one("CMD")) == ["run"]
        assert final.one("STOPSIGNAL") == "SIGTERM"
        command, timeout = healthcheck()
        assert command == ["python", "-m", "horde_replica_sync.healthcheck"]  # /healthz
        assert timeout <= 10

    def test_extra_ca_is_a_build_secret_of_the_builder_only(self) -> None:
        """The optional CA bundle is a secret mount in the builder; the image never sees it."""
        dockerfile = Dockerfile.read(DOCKERFILE)
        mounts = [
            (stage.name, run)
            for stage in dockerfile.stages
            for run in stage.all("RUN")
            if run.startswith("--mount=")
        ]
        assert len(mounts) == 1, mounts
        stage, run = mounts[0]
        assert stage == dockerfile.stages[0].name
        assert run.startswith("--mount=type=secret,id=extra_ca ")
        assert "PIP_CERT=/tmp/ca-bundle.pem" in run
        assert run.endswith("rm -f /tmp/ca-bundle.pem")  # not even in the builder's layer
        for instruction in dockerfile.final.instructions:
            assert "extra_ca" not in instruction[1] and "ca-bundle" not in instruction[1]

    def test_image_env_names_real_settings(self) -> None:
        """Every HORDE_REPLICA_* variable the image sets is a setting."""
        for name in Dockerfile.read(DOCKERFILE).final.env({}):
            if name.startswith(ENV_PREFIX):
                assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name


def dockerignore_excludes(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


class TestBuildContext:
    """The build context holds what the Dockerfile copies, and nothing else of note."""

    def test_copied_sources_are_in_the_context(self) -> None:
        """Every COPY source survives .dockerignore; the venv, tests and .git do not."""
        patterns = [
            line.strip()
            for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        sources: list[str] = []
        for stage in Dockerfile.read(DOCKERFILE).stages:
            for args in stage.all("COPY"):
                if args.startswith("--from="):
                    continue
                sources.extend(shlex.split(args)[:-1])
        assert sources
        for source in sources:
            path = ROOT / source
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"COPY source {source} does not exist"
            for file in files:
                if "__pycache__" in file.parts:
                    continue
                relpath = file.relative_to(ROOT).as_posix()
                assert not dockerignore_excludes(relpath, patterns), f"{relpath} is ignored"
        for unwanted in (".venv/bin/python", "tests/conftest.py", ".git/HEAD", "models/x.json"):
            assert dockerignore_excludes(unwanted, patterns), f"{unwanted} is in the context"
        assert dockerignore_excludes("daemon/horde_replica_sync/__pycache__/cli.pyc", patterns)

    def test_runtime_lock_pins_every_dependency(self) -> None:
        """config/requirements.lock pins exactly the runtime closure, within pyproject's ranges."""
        pins = read_lock(RUNTIME_LOCK)
        closure = runtime_closure()
        paste = "\n".join(f"{name}=={version}" for name, version in sorted(closure.items()))
        assert set(pins) == set(closure), f"regenerate {RUNTIME_LOCK.name} with:\n{paste}"
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        for raw in project["project"]["dependencies"]:
            requirement = Requirement(raw)
            pinned = pins[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(pinned), f"{pinned} outside {requirement}"

    def test_build_lock_pins_the_build_backend(self) -> None:
        """config/build-requirements.lock pins a backend pyproject's [build-system] accepts."""
        pins = read_lock(BUILD_LOCK)
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        for raw in project["build-system"]["requires"]:
            requirement = Requirement(raw)
            pinned = pins[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(pinned), f"{pinned} outside {requirement}"
        assert not set(pins) & {canonicalize_name(PROJECT)}
