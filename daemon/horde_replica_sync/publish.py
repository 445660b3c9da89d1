"""The two publishers: the replica store, and the dry run's comparison that writes nothing."""

from __future__ import annotations

from horde_replica_sync.clock import SYSTEM, Clock
from horde_replica_sync.state import ReplicaState
from horde_replica_sync.store import ReplicaStore


class StorePublisher:
    """Publishes into the replica directory through the store (atomic, only changed bytes)."""

    def __init__(self, store: ReplicaStore, *, clock: Clock = SYSTEM) -> None:
        self._store = store
        self._clock = clock

    def read(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath`."""
        return self._store.read(relpath)

    def digest(self, relpath: str) -> str | None:
        """The sha256 of the published bytes of `relpath`, streamed."""
        return self._store.digest(relpath)

    def holds(self, relpath: str, content: bytes) -> bool:
        """Whether `relpath` is exactly `content`, compared a chunk at a time."""
        return self._store.holds(relpath, content)

    def publish(self, relpath: str, content: bytes, *, unchanged: bool) -> bool:
        """Write `content` unless the file is `unchanged`."""
        if unchanged:
            return False
        self._store.write(relpath, content)
        return True

    def save_state(self, state: ReplicaState, *, durable: bool) -> None:
        """Write the state file, its stamps as wall dates (see clock.py)."""
        step = self._clock.wall_step()
        self._store.save_state(state.shifted(step) if step else state, durable=durable)


class ComparingPublisher(StorePublisher):
    """A dry run: says what would change, writes neither data nor state."""

    def publish(self, relpath: str, content: bytes, *, unchanged: bool) -> bool:
        """Whether publishing would change `relpath`."""
        return not unchanged

    def save_state(self, state: ReplicaState, *, durable: bool) -> None:
        """Nothing is saved in a dry run."""
