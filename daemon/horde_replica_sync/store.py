"""The replica directory and the state file: the only code that writes either.

Layout (the contract with upstream readers, design.md):

    <replica>/<v2 file>                  e.g. stable_diffusion.json, text_generation.json
    <replica>/legacy/<legacy file>       e.g. legacy/stable_diffusion.json, legacy/db.json
    <replica>/.horde-replica-sync.lock   one writer per replica (flock)
    <state dir>/state.json               our bookkeeping (state.py)

Every write is atomic: a temp file in the target's own directory, written, flushed and
fsynced, renamed over the target, then the directory fsynced. Readers see the old file or
the new one, never a mix. A file whose bytes did not change is not touched, so readers that
reload on mtime stay quiet.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from horde_replica_sync.categories import LEGACY_DIR
from horde_replica_sync.errors import LockHeldError, StoreError
from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState

log = structlog.get_logger(__name__)

TEMP_SUFFIX: Final = ".hrs-tmp"
LOCK_FILE: Final = ".horde-replica-sync.lock"
STATE_FILE: Final = "state.json"
FILE_MODE: Final = 0o644  # readers usually run as another user


def sha256_hex(content: bytes) -> str:
    """The hex sha256 digest of `content`."""
    return hashlib.sha256(content).hexdigest()


class ReplicaStore:
    """Reads and atomically publishes the replica's files and the state file."""

    def __init__(self, replica_dir: Path, state_dir: Path) -> None:
        self.replica_dir = replica_dir
        self.state_dir = state_dir

    @property
    def state_path(self) -> Path:
        """The state file."""
        return self.state_dir / STATE_FILE

    def path(self, relpath: str) -> Path:
        """The absolute path of a replica file."""
        return self.replica_dir / relpath

    def read(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath`, or None when it is missing or unreadable."""
        try:
            return self.path(relpath).read_bytes()
        except OSError:
            return None

    def publish(self, relpath: str, content: bytes) -> bool:
        """Atomically make `relpath` hold `content`; return False when it already did."""
        if self.read(relpath) == content:
            return False
        self.write(relpath, content)
        return True

    def write(self, relpath: str, content: bytes) -> None:
        """Atomically replace `relpath` with `content`."""
        _write_atomic(self.path(relpath), content)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the replica's exclusive lock; raise `LockHeldError` if another process has it."""
        lock_path = self.replica_dir / LOCK_FILE
        try:
            self.replica_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            msg = f"cannot open the lock file {lock_path}: {exc.strerror}"
            raise StoreError(msg) from exc
        try:
            _take_lock(fd, lock_path)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files a killed process left behind; return what was removed."""
        removed = []
        for directory in (self.replica_dir, self.replica_dir / LEGACY_DIR, self.state_dir):
            for stale in directory.glob(f".*{TEMP_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
                    removed.append(stale)
        return removed

    def load_state(self) -> ReplicaState:
        """The saved state; an empty one when it is missing, unreadable or of another schema."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return ReplicaState()
        except OSError as exc:
            log.warning("state.unreadable", path=str(self.state_path), error=exc.strerror)
            return ReplicaState()
        try:
            state = ReplicaState.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("state.invalid", path=str(self.state_path), error=str(exc.errors()[0]))
            return ReplicaState()
        if state.schema_version != SCHEMA_VERSION:
            log.warning("state.other_schema", found=state.schema_version, expected=SCHEMA_VERSION)
            return ReplicaState()
        return state

    def save_state(self, state: ReplicaState, *, durable: bool = True) -> None:
        """Atomically write `state` (after the data it describes).

        `durable=False` skips the fsyncs: for a state that only records confirmations, whose
        loss in a crash costs one re-verification, not a wrong replica.
        """
        content = state.model_dump_json(indent=2).encode() + b"\n"
        _write_atomic(self.state_path, content, durable=durable)


def _take_lock(fd: int, lock_path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        msg = (
            f"{lock_path.parent} is already being synced by another horde-replica-sync "
            f"(pid {holder}); refusing to race it"
        )
        raise LockHeldError(msg) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _write_atomic(target: Path, content: bytes, *, durable: bool = True) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
        )
    except OSError as exc:
        msg = f"cannot write {target}: {exc.strerror}"
        raise StoreError(msg) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            if durable:
                os.fsync(handle.fileno())
        Path(temp).replace(target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            Path(temp).unlink()
        if isinstance(exc, OSError):
            msg = f"cannot write {target}: {exc.strerror}"
            raise StoreError(msg) from exc
        raise
    if durable:
        _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable: without it a crash can resurrect the old file.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        msg = f"cannot fsync directory {directory}: {exc.strerror}"
        raise StoreError(msg) from exc
