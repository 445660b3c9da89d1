"""`python -m horde_replica_sync` is the console script (signals held from its first line)."""

from __future__ import annotations

from horde_replica_sync.early import main

raise SystemExit(main())
