"""`python -m horde_replica_sync` is the console script."""

from __future__ import annotations

from horde_replica_sync.cli import main

raise SystemExit(main())
