"""`make bench`: horde-replica-sync against the real upstream PRIMARY and upstream's own client.

The measurements live in tests/harness/bench.py, the table and document in
tests/harness/bench_report.py. Prints the table and notes, writes docs/bench.md; a missed
target is not an error (exit 0).

    python -m scripts.bench                      # `make bench`
    python -m scripts.bench --doc /tmp/bench.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.environment import ROOT
from tests.harness.bench import log, run_bench
from tests.harness.bench_report import environment, report, write_document


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "bench.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hrs-bench-") as tmp:
        results = report(run_bench(Path(tmp)))
    seconds = time.monotonic() - started
    sys.stdout.write(f"{results.table()}\n\n")
    for note in results.notes:
        sys.stdout.write(f"- {note}\n")
    sys.stdout.write(f"missed targets: {', '.join(results.missed) or 'none'}; {seconds:.0f} s\n")
    write_document(results, environment(), seconds, args.doc)
    log(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
