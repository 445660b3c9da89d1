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

Whoever can write the replica directory must not steer what the daemon's user opens: the lock
is never followed through a symlink nor truncated unless it is our regular file; a target that
is not a regular file (FIFO, device, directory, or a symlink to one) is never opened, so it
cannot hang a run or feed it endless bytes, and is never replaced. A symlink to a regular file
is read through for the comparison (bounded by the file's size) and, when the bytes differ,
replaced by a regular file of ours: the rename replaces the link, never what it points to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from horde_replica_sync.categories import LEGACY_DIR
from horde_replica_sync.errors import LockHeldError, ReplicaUnusable, StoreError
from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState

log = structlog.get_logger(__name__)

TEMP_SUFFIX: Final = ".hrs-tmp"
LOCK_FILE: Final = ".horde-replica-sync.lock"
STATE_FILE: Final = "state.json"
FILE_MODE: Final = 0o644  # readers usually run as another user
MAX_READ_BYTES: Final = 2 * 1024 * 1024 * 1024
"""Larger files are not ours: twice `max_body_bytes`' ceiling, as a converted v2 file can grow."""
_READ_OPEN: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LOCK_OPEN: Final = (
    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
)
_PERMANENT_ERRNOS: Final = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
)
"""Opening the lock failed in a way only an operator can fix: restarting cannot help."""


_HELD_LOCKS: Final[dict[Path, tuple[int, int]]] = {}
"""(device, inode) of each lock file this process holds, by replica directory: every store of
that directory (the engine has its own) checks against it before writing."""


def _lock_key(replica_dir: Path) -> Path:
    return replica_dir.absolute()  # not resolve(): that would follow a swapped-in symlink


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
        """The published bytes of `relpath`; None when missing, unreadable or not a regular
        file (which `write` then refuses, naming it)."""
        return _read_regular(self.path(relpath))

    def publish(self, relpath: str, content: bytes) -> bool:
        """Atomically make `relpath` hold `content`; return False when it already did."""
        if self.read(relpath) == content:
            return False
        self.write(relpath, content)
        return True

    def write(self, relpath: str, content: bytes) -> None:
        """Atomically replace `relpath` with `content`."""
        self._check_still_locked()
        _write_atomic(self.path(relpath), content)

    def _check_still_locked(self) -> None:
        """Raise when `replica_dir` no longer holds the lock file we locked: the directory was
        moved or replaced (by a symlink, another directory) while we ran, and a write would
        land outside the replica, past the lock. A check, not a guard against a racing swap."""
        held = _HELD_LOCKS.get(_lock_key(self.replica_dir))
        if held is None:  # not locked by this process (a dry run, a test): nothing to compare
            return
        try:
            info = (self.replica_dir / LOCK_FILE).lstat()
            found: tuple[int, int] | None = (info.st_dev, info.st_ino)
        except OSError:
            found = None
        if found != held:
            msg = (
                f"the replica directory {self.replica_dir} is no longer the directory this "
                "process locked (moved or replaced while it ran); nothing written there: "
                "put it back or restart the daemon"
            )
            raise StoreError(msg)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the replica's exclusive lock; raise `LockHeldError` if another process has it."""
        lock_path = self.replica_dir / LOCK_FILE
        _make_replica_dir(self.replica_dir)
        fd = _open_lock(lock_path)
        try:
            _check_lock_file(fd, lock_path)
            _take_lock(fd, lock_path)
            _check_writable(self.replica_dir)
            info = os.fstat(fd)
            _HELD_LOCKS[_lock_key(self.replica_dir)] = (info.st_dev, info.st_ino)
            yield
        finally:
            _HELD_LOCKS.pop(_lock_key(self.replica_dir), None)
            os.close(fd)  # closing releases the flock

    def remove_stale_temps(self) -> list[Path]:
        """Delete temp files a killed process left behind; return what was removed."""
        removed = []
        for directory in (self.replica_dir, self.replica_dir / LEGACY_DIR, self.state_dir):
            for stale in directory.glob(f".*{TEMP_SUFFIX}"):
                # A directory by that name is not ours (we make files): left alone.
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    stale.unlink()
                    removed.append(stale)
        return removed

    def load_state(self) -> ReplicaState:
        """The saved state; an empty one when it is missing, unreadable or of another schema."""
        if not self.state_path.exists() and not self.state_path.is_symlink():
            return ReplicaState()
        raw = _read_regular(self.state_path)
        if raw is None:  # `save_state` names what is in the way
            log.warning("state.unreadable", path=str(self.state_path))
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
        self._check_still_locked()  # the state describes the replica (and is inside it, by default)
        content = state.model_dump_json(indent=2).encode() + b"\n"
        _write_atomic(self.state_path, content, durable=durable)


def _make_replica_dir(replica_dir: Path) -> None:
    try:
        replica_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        msg = f"the replica directory {replica_dir} exists and is not a directory"
        raise ReplicaUnusable(msg) from None
    except OSError as exc:
        msg = f"cannot create the replica directory {replica_dir}: {exc.strerror}"
        raise _lock_error(exc, msg) from exc


def _open_lock(lock_path: Path) -> int:
    try:
        return os.open(lock_path, _LOCK_OPEN, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            msg = f"the lock file {lock_path} is a symlink; refusing to follow it (remove it)"
            raise ReplicaUnusable(msg) from exc
        raise _lock_error(exc, f"cannot open the lock file {lock_path}: {exc.strerror}") from exc


def _lock_error(exc: OSError, msg: str) -> StoreError:
    return ReplicaUnusable(msg) if exc.errno in _PERMANENT_ERRNOS else StoreError(msg)


def _check_lock_file(fd: int, lock_path: Path) -> None:
    # Before anything is written to it: a FIFO, a device or another file's hard link is not
    # ours to truncate.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        msg = f"the lock file {lock_path} is {_kind(info.st_mode)}, not a regular file (remove it)"
        raise ReplicaUnusable(msg)
    if info.st_nlink != 1:
        msg = (
            f"the lock file {lock_path} has {info.st_nlink} hard links, so it may be another "
            "file; refusing to truncate it (remove it)"
        )
        raise ReplicaUnusable(msg)


def _check_writable(replica_dir: Path) -> None:
    # Every publish would fail one by one: say it once, as a fault restarting cannot fix.
    if not os.access(replica_dir, os.W_OK | os.X_OK):
        msg = f"the replica directory {replica_dir} is not writable by this user"
        raise ReplicaUnusable(msg)


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


def _read_regular(path: Path) -> bytes | None:
    """The bytes of `path` if it is (or links to) a regular file no larger than the cap.

    `stat` first, so a FIFO or device is never even opened (opening one can block or act);
    then the opened file is checked again, so a swap in between changes nothing.
    """
    try:
        if not _is_regular(path.stat()):
            return None
        fd = os.open(path, _READ_OPEN)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not _is_regular(info):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            content = handle.read(info.st_size + 1)
        return None if len(content) > info.st_size else content  # grew under us: not ours
    except OSError:
        return None
    finally:
        os.close(fd)


def _is_regular(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_size <= MAX_READ_BYTES


def _refuse_foreign_target(target: Path) -> None:
    """Raise when `target` is not a regular file (or a link to one): not ours to replace.

    The rename would replace it without opening it, so this guards no race; it turns an
    operator's mistake into an error naming the path instead of a silent deletion.
    """
    try:
        info = target.lstat()
        if stat.S_ISLNK(info.st_mode):
            pointed = target.stat()
            if not stat.S_ISREG(pointed.st_mode):
                kind = f"a symlink to {_kind(pointed.st_mode)}"
                msg = f"{target} is {kind}, not a regular file; refusing to replace it"
                raise StoreError(msg)
            return
    except OSError:
        return  # missing, or a dangling link: nothing of anyone's is lost by replacing it
    if not stat.S_ISREG(info.st_mode):
        msg = f"{target} is {_kind(info.st_mode)}, not a regular file; refusing to replace it"
        raise StoreError(msg)


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _write_atomic(target: Path, content: bytes, *, durable: bool = True) -> None:
    _refuse_foreign_target(target)
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
