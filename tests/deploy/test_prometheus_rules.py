"""promtool accepts the alert rules, their unit tests pass, and the scrape config is valid."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Final

import pytest

from tests.deploy.conftest import CONFIG_DIR, require_tool

ALERTS: Final = CONFIG_DIR / "alerts.yml"
ALERTS_TEST: Final = CONFIG_DIR / "alerts_test.yml"
PROMETHEUS_EXAMPLE: Final = CONFIG_DIR / "prometheus.example.yml"
DASHBOARD: Final = CONFIG_DIR / "grafana-dashboard.json"
JOB: Final = "horde-replica-sync"
REQUIRED_ALERTS: Final = frozenset(
    {
        "HordeReplicaStale",
        "HordeReplicaSyncDown",
        "HordeReplicaSyncAbsent",
        "HordeReplicaSyncFailing",
        "HordeReplicaOnGithubFallback",
        "HordeReplicaRateLimited",
        "HordeReplicaPayloadRefused",
    }
)


def promtool(*args: str, cwd: Path = CONFIG_DIR) -> str:
    """Run promtool; fail with its output unless it exits 0."""
    result = subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=cwd,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def alert_blocks() -> dict[str, str]:
    """Each alert's YAML block in alerts.yml, by alert name."""
    text = ALERTS.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alert: (\w+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def alert_tests() -> dict[str, set[bool]]:
    """For each alert name in alerts_test.yml: which outcomes are tested (True = firing)."""
    lines = ALERTS_TEST.read_text(encoding="utf-8").splitlines()
    outcomes: dict[str, set[bool]] = {}
    for i, line in enumerate(lines):
        match = re.fullmatch(r"\s*alertname: (\w+)", line)
        if match:
            expected = lines[i + 1].strip()
            assert expected.startswith("exp_alerts:"), f"line {i + 2}: {expected}"
            outcomes.setdefault(match.group(1), set()).add(expected != "exp_alerts: []")
    return outcomes


class TestAlertRules:
    """config/alerts.yml is valid, complete, documented and unit-tested."""

    def test_promtool_check_rules(self) -> None:
        """`promtool check rules` accepts the file."""
        output = promtool("check", "rules", str(ALERTS))
        assert f"SUCCESS: {len(alert_blocks())} rules found" in output

    def test_promtool_unit_tests(self) -> None:
        """`promtool test rules config/alerts_test.yml` passes."""
        assert "SUCCESS" in promtool("test", "rules", str(ALERTS_TEST))

    def test_every_alert_is_tested_firing_and_silent(self) -> None:
        """Each alert has a case where it fires and one where it must not."""
        tested = alert_tests()
        for name in alert_blocks():
            assert tested.get(name) == {True, False}, f"{name}: tested outcomes {tested.get(name)}"

    def test_every_alert_is_documented(self) -> None:
        """The required alerts exist, each with a severity and summary/description/runbook."""
        blocks = alert_blocks()
        assert set(blocks) >= REQUIRED_ALERTS
        for name, block in blocks.items():
            for needle in ("severity:", "summary:", "description:", "runbook:"):
                assert needle in block, f"{name} has no {needle}"
            assert f'job="{JOB}"' in block, f"{name} does not select job={JOB}"
            assert "docs/runbook.md" in block and name in block, (
                f"{name}: runbook does not point home"
            )


class TestScrapeConfig:
    """config/prometheus.example.yml is valid and loads the rules by relative path."""

    @pytest.mark.parametrize("cwd", ["config", "root"])
    def test_promtool_check_config(self, cwd: str) -> None:
        """`promtool check config` passes from any directory (rule_files are file-relative)."""
        directory = CONFIG_DIR if cwd == "config" else CONFIG_DIR.parent
        output = promtool("check", "config", str(PROMETHEUS_EXAMPLE), cwd=directory)
        assert "SUCCESS: 1 rule files found" in output
        assert f"Checking {ALERTS}" in output or "Checking alerts.yml" in output

    def test_job_name_matches_the_alerts(self) -> None:
        """The scrape job is the one the alerts select."""
        text = PROMETHEUS_EXAMPLE.read_text(encoding="utf-8")
        assert re.search(rf"^\s*- job_name: {JOB}\s*$", text, re.MULTILINE)


class TestDashboard:
    """config/grafana-dashboard.json is valid JSON whose queries are valid PromQL."""

    def test_queries_parse(self, tmp_path: Path) -> None:
        """Every panel's expression passes `promtool check rules` as a recording rule."""
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        exprs = [
            target["expr"]
            for panel in dashboard["panels"]
            for target in panel.get("targets", [])
            if "expr" in target
        ]
        assert exprs
        # Grafana's variables, replaced by what they stand for at query time.
        substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
        rules = ["groups:", "  - name: dashboard", "    rules:"]
        for i, expr in enumerate(exprs):
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unknown variable in {expr!r}"
            rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
        path = tmp_path / "dashboard-rules.yml"
        path.write_text("\n".join(rules) + "\n", encoding="utf-8")
        assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", str(path))
