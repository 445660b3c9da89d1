"""Crash consistency in CI: a short run of the `make chaos` harness (tests/harness/chaos.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness.chaos import CI_CATEGORIES, ChaosConfig, run_chaos

CI_KILLS = 30


class TestChaos:
    """SIGKILLed syncs never leave a torn, mixed or unserved file, and the next run recovers."""

    def test_thirty_kills_without_a_violation(self, tmp_path: Path) -> None:
        """30 SIGKILLs at random moments: no violation, and most kills hit a run in flight."""
        started = time.monotonic()
        result = run_chaos(
            ChaosConfig(
                kills=CI_KILLS,
                categories=CI_CATEGORIES,
                min_records=200,
                max_records=1000,
                workdir=tmp_path / "chaos",
            )
        )
        print(f"\n{result.summary()}")
        assert result.ok, result.summary()
        assert result.kills == CI_KILLS
        assert result.recoveries == CI_KILLS
        assert result.reader_reads > 1000, "the reader must have read the replica throughout"
        assert result.temp_files_cleaned == result.temp_files_after_kill
        print(f"chaos CI variant: {time.monotonic() - started:.1f} s")
