"""`make chaos`: SIGKILL syncs at random moments and check every file (tests/harness/chaos.py).

    python -m scripts.chaos --kills 200          # `make chaos`
    python -m scripts.chaos --kills 30 --categories esrgan,blip,clip,codeformer

Exit status 0 when there was no violation, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from horde_replica_sync.categories import parse_categories
from tests.harness.chaos import DEFAULT_CATEGORIES, ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (200)")
    parser.add_argument("--categories", type=parse_categories, default=DEFAULT_CATEGORIES)
    parser.add_argument("--min-records", type=int, default=200)
    parser.add_argument("--max-records", type=int, default=2000)
    parser.add_argument("--run-share", type=float, default=0.25, help="share of `run` kills")
    parser.add_argument("--seed", type=int, help="replay a session")
    parser.add_argument("--workdir", type=Path, help="keep the replica and logs here")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        kills=args.kills,
        categories=args.categories,
        min_records=args.min_records,
        max_records=args.max_records,
        run_mode_share=args.run_share,
        seed=args.seed,
        workdir=args.workdir,
        verbose=args.verbose,
    )
    result = run_chaos(config)
    sys.stdout.write(result.summary() + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
