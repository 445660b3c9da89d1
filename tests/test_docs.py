"""The operator's documents stay true: generated parts current, every repository path real."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from scripts import config_doc
from tests.environment import ROOT

DOCUMENTS: Final = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_DIRS: Final = ("daemon", "tests", "scripts", "config", "systemd", "docs", "image", ".ci")
# A repository path: starts with one of REPO_DIRS (not inside a longer path such as
# /etc/horde-replica-sync/config.toml or ../shared/...), or a bare Python module name.
_PATH: Final = re.compile(
    rf"(?<![\w/.~$-])(?:(?:{'|'.join(re.escape(d) for d in REPO_DIRS)})/[\w./-]*[\w/]"
    r"|[a-z_]\w*\.py\b)"
)
_TOP_FILES: Final = ("Makefile", "Dockerfile", "CHANGELOG.md", "pyproject.toml", ".dockerignore")


def named_paths(text: str) -> set[str]:
    """The repository paths a document names (placeholders such as `<x>` or `…` excluded)."""
    return {m.group(0).rstrip("/.") for m in _PATH.finditer(text)}


def exists(path: str) -> bool:
    """A path relative to the root (or to tests/, as test tables name them), or a bare module
    name found anywhere in the repository."""
    if "/" in path:
        return (ROOT / path).exists() or (ROOT / "tests" / path).exists()
    return any(ROOT.glob(f"daemon/**/{path}")) or any(ROOT.glob(f"[ts]*/**/{path}"))


class TestDocuments:
    """README.md and docs/*.md."""

    def test_configuration_md_is_generated_from_settings(self) -> None:
        """docs/configuration.md's table is what `make docs` writes now."""
        assert config_doc.main(["--check"]) == 0, "run `make docs`"

    @pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
    def test_every_repository_path_exists(self, document: Path) -> None:
        """Each repository path a document names exists (no drift after a move)."""
        text = document.read_text(encoding="utf-8")
        missing = sorted(p for p in named_paths(text) if not exists(p))
        assert not missing, f"{document.name} names paths that do not exist: {missing}"
        for name in _TOP_FILES:
            assert name not in text or (ROOT / name).exists(), name

    def test_the_check_has_teeth(self) -> None:
        """A wrong path is caught; replica paths and system paths are not repository paths."""
        text = (
            "see `systemd/horde-replica-sync.service.d/worker-cache-home.conf.example` and"
            " `daemon/horde_replica_sync/nope.py`, `daemon/test_daemon.py`,"
            " /etc/horde-replica-sync/config.toml, legacy/db.json, ../shared/peer/README.md"
        )
        found = named_paths(text)
        assert found == {
            "systemd/horde-replica-sync.service.d/worker-cache-home.conf.example",
            "daemon/horde_replica_sync/nope.py",
            "daemon/test_daemon.py",
        }
        assert [p for p in sorted(found) if exists(p)] == ["daemon/test_daemon.py"]

    def test_every_module_is_on_the_code_map(self) -> None:
        """docs/architecture.md names every module of the package (the code map is complete)."""
        text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
        package = ROOT / "daemon" / "horde_replica_sync"
        for module in package.glob("*.py"):
            if module.name != "__init__.py":
                assert f"`{module.name}`" in text, module.name
        for sub in (p for p in package.iterdir() if (p / "__init__.py").exists()):
            assert f"`{sub.name}/`" in text, sub.name

    def test_readme_is_the_operators_page(self) -> None:
        """At most 250 lines, and it still shows `make run` and `make test`."""
        text = (ROOT / "README.md").read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 250
        assert "make run" in text and "make test" in text
