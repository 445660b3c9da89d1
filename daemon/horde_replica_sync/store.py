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

Writes go through a descriptor of the replica directory opened once, at lock time: the temp
file is created, renamed and fsynced relative to it (openat, renameat), so a swap of the path
between the check that it still names our directory and the rename cannot redirect a write. A
directory moved or replaced while we run is never written (its path is checked before each
write); one deleted (or deleted and re-created empty) is re-created and re-locked, and the next
run publishes every file again. No file larger than `max_body_bytes` is read: it is not ours.

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
import secrets
import stat
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from horde_replica_sync.categories import LEGACY_DIR
from horde_replica_sync.config import DEFAULT_MAX_BODY_BYTES
from horde_replica_sync.errors import LockHeldError, ReplicaUnusable, StoreError
from horde_replica_sync.state import SCHEMA_VERSION, ReplicaState

log = structlog.get_logger(__name__)

TEMP_SUFFIX: Final = ".hrs-tmp"
LOCK_FILE: Final = ".horde-replica-sync.lock"
STATE_FILE: Final = "state.json"
FILE_MODE: Final = 0o644  # readers usually run as another user
TEMP_ATTEMPTS: Final = 100
READ_CHUNK_BYTES: Final = 1024 * 1024
_READ_OPEN: Final = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_OPEN: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TEMP_OPEN: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIR: Final = frozenset({errno.ELOOP, errno.ENOTDIR})
_LOCK_OPEN: Final = (
    os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
)
"""Held read-only (flock needs no more), so the daemon never holds a file of the replica's file
system open for writing between runs: that would make a `mount -o remount,ro` of it busy."""
_PID_OPEN: Final = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PERMANENT_ERRNOS: Final = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
)
"""Opening the lock failed in a way only an operator can fix: restarting cannot help."""


class _Anchor:
    """The replica directory this process locked: a descriptor of it, and of its lock file.

    Every write goes through `directory()`, relative to the descriptor (openat, renameat,
    fsync), so a swap of the path between the check and the rename cannot redirect it.
    """

    def __init__(self, path: Path, dir_fd: int, lock_fd: int) -> None:
        self.path = path
        self.dir_fd = dir_fd
        self.lock_fd = lock_fd

    def directory(self) -> int:
        """The descriptor to write through, once `path` is checked to still name it.

        Raises `StoreError` when the directory was moved or replaced (by a symlink, another
        directory) while we ran: a write would land outside what readers load, past the lock.
        A directory deleted under us (its link count 0: nothing of ours is left anywhere) is
        re-created and re-locked instead, unless something not ours took its place.
        """
        held = os.fstat(self.dir_fd)
        if _identity(self.path) == (held.st_dev, held.st_ino):
            return self.dir_fd
        if held.st_nlink == 0:
            self._recreate()
            return self.dir_fd
        msg = (
            f"the replica directory {self.path} is no longer the directory this process "
            "locked (moved or replaced while it ran); nothing written there: put it back or "
            "restart the daemon"
        )
        raise StoreError(msg)

    def _recreate(self) -> None:
        _check_adoptable(self.path)
        _make_replica_dir(self.path)
        try:
            dir_fd = os.open(self.path, _DIR_OPEN | os.O_NOFOLLOW)  # a symlink put there now
        except OSError as exc:
            msg = f"cannot re-create the deleted replica directory {self.path}: {exc.strerror}"
            raise StoreError(msg) from exc
        try:
            lock_fd = _lock(dir_fd, self.path)
        except BaseException as exc:
            os.close(dir_fd)
            if isinstance(exc, LockHeldError):  # another daemon took the new directory
                raise StoreError(str(exc)) from exc
            raise
        old = (self.dir_fd, self.lock_fd)
        self.dir_fd, self.lock_fd = dir_fd, lock_fd
        for fd in old:
            os.close(fd)
        log.warning(
            "store.replica_dir_recreated",
            path=str(self.path),
            cause="the replica directory was deleted while the daemon ran",
            action="re-created and re-locked; every missing file is published again",
        )

    def close(self) -> None:
        """Release the lock (closing its descriptor) and the directory."""
        for fd in (self.lock_fd, self.dir_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


_HELD: Final[dict[Path, _Anchor]] = {}
"""The replica directories this process holds locked: every store of that directory (the
engine has its own) writes through the same anchor."""


def _lock_key(replica_dir: Path) -> Path:
    return replica_dir.absolute()  # not resolve(): that would follow a swapped-in symlink


def sha256_hex(content: bytes) -> str:
    """The hex sha256 digest of `content`."""
    return hashlib.sha256(content).hexdigest()


class ReplicaStore:
    """Reads and atomically publishes the replica's files and the state file.

    No file larger than `max_file_bytes` (the settings' `max_body_bytes`) is read or written:
    a larger file at a published path is not ours (it reads as missing, and is replaced).
    """

    def __init__(
        self, replica_dir: Path, state_dir: Path, *, max_file_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self.replica_dir = replica_dir
        self.state_dir = state_dir
        self.max_file_bytes = max_file_bytes

    @property
    def state_path(self) -> Path:
        """The state file."""
        return self.state_dir / STATE_FILE

    def path(self, relpath: str) -> Path:
        """The absolute path of a replica file."""
        return self.replica_dir / relpath

    def read(self, relpath: str) -> bytes | None:
        """The published bytes of `relpath`; None when missing, unreadable, larger than
        `max_file_bytes` or not a regular file (which `write` then refuses, naming it)."""
        return _read_regular(self.path(relpath), self.max_file_bytes)

    def digest(self, relpath: str) -> str | None:
        """The sha256 of what `read` would return, streamed: never more than a chunk held."""
        return _digest_regular(self.path(relpath), self.max_file_bytes)

    def holds(self, relpath: str, content: bytes) -> bool:
        """Whether `relpath` is exactly `content`, compared a chunk at a time."""
        return _holds(self.path(relpath), self.max_file_bytes, content)

    def write(self, relpath: str, content: bytes) -> None:
        """Atomically replace `relpath` with `content`."""
        if len(content) > self.max_file_bytes:  # it could never be read back
            msg = (
                f"cannot write {self.path(relpath)}: {len(content)} bytes, more than "
                f"max_body_bytes ({self.max_file_bytes}) allows a published file"
            )
            raise StoreError(msg)
        with self._directory() as base:
            _write_relative(base, relpath, content, shown=self.path(relpath), durable=True)

    def _anchor(self) -> _Anchor | None:
        return _HELD.get(_lock_key(self.replica_dir))

    @contextlib.contextmanager
    def _directory(self) -> Iterator[int]:
        """A descriptor of the replica directory to write through: the locked one, checked
        (see `_Anchor.directory`); when this process holds no lock (a dry run, a test), the
        directory the path names now."""
        anchor = self._anchor()
        if anchor is not None:
            yield anchor.directory()
            return
        with _opened_directory(self.replica_dir) as fd:
            yield fd

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the replica's exclusive lock; raise `LockHeldError` if another process has it."""
        _make_replica_dir(self.replica_dir)
        try:
            # The configured path may lead through a symlink (the operator's choice); what it
            # names now is the directory held from here on.
            dir_fd = os.open(self.replica_dir, _DIR_OPEN)
        except OSError as exc:
            msg = f"cannot open the replica directory {self.replica_dir}: {exc.strerror}"
            raise _lock_error(exc, msg) from exc
        try:
            lock_fd = _lock(dir_fd, self.replica_dir)
        except BaseException:
            os.close(dir_fd)
            raise
        anchor = _Anchor(self.replica_dir, dir_fd, lock_fd)
        try:
            _check_writable(self.replica_dir)
            _HELD[_lock_key(self.replica_dir)] = anchor
            yield
        finally:
            _HELD.pop(_lock_key(self.replica_dir), None)
            anchor.close()  # closing the lock's descriptor releases the flock

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
        content = state.model_dump_json(indent=2).encode() + b"\n"
        inside = _relative_inside(self.state_path, self.replica_dir)
        if inside is not None:  # the default: written through the replica's descriptor
            with self._directory() as base:
                _write_relative(base, inside, content, shown=self.state_path, durable=durable)
            return
        anchor = self._anchor()
        if anchor is not None:  # the state describes the replica: not saved past a swap of it
            anchor.directory()
        with _opened_directory(self.state_dir) as base:
            _write_relative(base, STATE_FILE, content, shown=self.state_path, durable=durable)


def _make_replica_dir(replica_dir: Path) -> None:
    try:
        replica_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        msg = f"the replica directory {replica_dir} exists and is not a directory"
        raise ReplicaUnusable(msg) from None
    except OSError as exc:
        msg = f"cannot create the replica directory {replica_dir}: {exc.strerror}"
        raise _lock_error(exc, msg) from exc


def _lock(dir_fd: int, replica_dir: Path) -> int:
    """The lock file in the directory `dir_fd`, opened, checked ours and locked."""
    lock_path = replica_dir / LOCK_FILE
    fd = _open_lock(dir_fd, lock_path)
    try:
        _check_lock_file(fd, lock_path)
        _take_lock(fd, lock_path)
        _record_pid(dir_fd, fd, lock_path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` names now (following symlinks), None if nothing."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _check_adoptable(path: Path) -> None:
    """Raise unless `path` is free to re-create the deleted replica at: missing, or an empty
    directory of this user (what `rm -rf` and `mkdir` leave). A symlink, a file or a directory
    that holds something is not ours to adopt."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"cannot re-create the deleted replica directory {path}: {exc.strerror}"
        raise StoreError(msg) from exc
    why = None
    if not stat.S_ISDIR(info.st_mode):
        why = f"is now {_kind(info.st_mode) if stat.S_ISLNK(info.st_mode) else 'a file'}"
    elif info.st_uid != os.geteuid():
        why = f"is now a directory of another user (uid {info.st_uid})"
    elif any(True for _ in path.iterdir()):
        why = "is now a directory that is not empty"
    if why is not None:
        msg = (
            f"the replica directory was deleted while the daemon ran, and {path} {why}: "
            "not ours to write through; nothing written there (remove it, or restart the daemon)"
        )
        raise StoreError(msg)


def _open_lock(dir_fd: int, lock_path: Path) -> int:
    try:
        return os.open(LOCK_FILE, _LOCK_OPEN, FILE_MODE, dir_fd=dir_fd)
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


def _record_pid(dir_fd: int, locked: int, lock_path: Path) -> None:
    """Write our pid into the lock file we hold, through a second, short-lived descriptor
    that must be the same file (no swap since it was checked)."""
    try:
        fd = os.open(LOCK_FILE, _PID_OPEN, dir_fd=dir_fd)
    except OSError as exc:
        msg = f"cannot open the lock file {lock_path}: {exc.strerror}"
        raise _lock_error(exc, msg) from exc
    try:
        held, opened = os.fstat(locked), os.fstat(fd)
        if (held.st_dev, held.st_ino) != (opened.st_dev, opened.st_ino):
            msg = f"the lock file {lock_path} was replaced while it was taken; retry"
            raise StoreError(msg)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    finally:
        os.close(fd)


def _read_regular(path: Path, limit: int = DEFAULT_MAX_BODY_BYTES) -> bytes | None:
    """The bytes of `path` if it is (or links to) a regular file no larger than `limit`."""
    try:
        return b"".join(_chunks(path, limit))
    except _NotOurs:
        return None


def _digest_regular(path: Path, limit: int) -> str | None:
    """The sha256 of what `_read_regular` would return, never holding more than a chunk."""
    digest = hashlib.sha256()
    try:
        for chunk in _chunks(path, limit):
            digest.update(chunk)
    except _NotOurs:
        return None
    return digest.hexdigest()


def _holds(path: Path, limit: int, content: bytes) -> bool:
    """Whether `_read_regular` would return exactly `content`, compared a chunk at a time."""
    view, offset = memoryview(content), 0
    with contextlib.closing(_chunks(path, limit)) as chunks:  # closes the file on a mismatch
        try:
            for chunk in chunks:
                if view[offset : offset + len(chunk)] != chunk:
                    return False
                offset += len(chunk)
        except _NotOurs:
            return False
    return offset == len(content)


class _NotOurs(Exception):
    """The file at a published path is not one we could have published, or is unreadable."""


def _chunks(path: Path, limit: int) -> Generator[bytes, None, None]:
    """The bytes of `path` a chunk at a time; raises `_NotOurs` unless it is (or links to) a
    regular file no larger than `limit` that does not grow while it is read.

    `stat` first, so a FIFO or device is never even opened (opening one can block or act);
    then the opened file is checked again, so a swap in between changes nothing.
    """
    try:
        if not _is_regular(path.stat(), limit):
            raise _NotOurs
        fd = os.open(path, _READ_OPEN)
    except OSError as exc:
        raise _NotOurs from exc
    try:
        info = os.fstat(fd)
        if not _is_regular(info, limit):
            raise _NotOurs
        left = info.st_size + 1  # a byte more than it should hold: one that grew is not ours
        while chunk := os.read(fd, min(READ_CHUNK_BYTES, left)):
            left -= len(chunk)
            if left == 0:
                raise _NotOurs
            yield chunk
    except OSError as exc:
        raise _NotOurs from exc
    finally:
        os.close(fd)


def _is_regular(info: os.stat_result, limit: int) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_size <= limit


def _refuse_foreign_target(parent: int, name: str, shown: Path) -> None:
    """Raise when `name` in `parent` is not a regular file (or a link to one): not ours to
    replace.

    The rename would replace it without opening it, so this guards no race; it turns an
    operator's mistake into an error naming the path instead of a silent deletion.
    """
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            pointed = os.stat(name, dir_fd=parent)
            if not stat.S_ISREG(pointed.st_mode):
                kind = f"a symlink to {_kind(pointed.st_mode)}"
                msg = f"{shown} is {kind}, not a regular file; refusing to replace it"
                raise StoreError(msg)
            return
    except OSError:
        return  # missing, or a dangling link: nothing of anyone's is lost by replacing it
    if not stat.S_ISREG(info.st_mode):
        msg = f"{shown} is {_kind(info.st_mode)}, not a regular file; refusing to replace it"
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


def _relative_inside(path: Path, directory: Path) -> str | None:
    """`path` relative to `directory` (as written, no symlink followed), None if outside."""
    try:
        relative = path.absolute().relative_to(directory.absolute())
    except ValueError:
        return None
    return None if ".." in relative.parts else relative.as_posix()


@contextlib.contextmanager
def _opened_directory(directory: Path) -> Iterator[int]:
    """A descriptor of `directory` (created if missing), for a write by a process that holds
    no lock on it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, _DIR_OPEN)
    except OSError as exc:
        msg = f"cannot write in {directory}: {exc.strerror}"
        raise StoreError(msg) from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _write_relative(base: int, relpath: str, content: bytes, *, shown: Path, durable: bool) -> None:
    """Atomically make `relpath` under the directory `base` hold `content`.

    Every step is relative to a descriptor: the subdirectories (`legacy/`, the state's) are
    opened `O_NOFOLLOW` (created if missing), never a symlink; the temp file is created and
    renamed in the target's own directory, which is then fsynced.
    """
    *parents, name = relpath.split("/")
    parent = _open_subdirectories(base, parents, shown)
    try:
        _refuse_foreign_target(parent, name, shown)
        _write_atomic(parent, name, content, shown=shown, durable=durable)
    finally:
        os.close(parent)


def _open_subdirectories(base: int, parts: list[str], shown: Path) -> int:
    fd, part = os.dup(base), ""
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)  # the umask decides, as mkdir(1)
            sub = os.open(part, _DIR_OPEN | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
    except OSError as exc:
        os.close(fd)
        why = "is a symlink or not a directory" if exc.errno in _NOT_A_DIR else exc.strerror
        msg = f"cannot write {shown}: its directory {part} {why}; refusing to write through it"
        raise StoreError(msg) from exc
    return fd


def _create_temp(parent: int, name: str, shown: Path) -> tuple[int, str]:
    """A new, hidden temp file beside `name` (so globbing readers skip it), and its name."""
    for _ in range(TEMP_ATTEMPTS):
        temp = f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            return os.open(temp, _TEMP_OPEN, 0o600, dir_fd=parent), temp
        except FileExistsError:
            continue
        except OSError as exc:
            msg = f"cannot write {shown}: {exc.strerror}"
            raise StoreError(msg) from exc
    msg = f"cannot write {shown}: no free temp file name"
    raise StoreError(msg)


def _write_atomic(
    parent: int, name: str, content: bytes, *, shown: Path, durable: bool = True
) -> None:
    fd, temp = _create_temp(parent, name, shown)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            if durable:
                os.fsync(handle.fileno())
        os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=parent)
        if isinstance(exc, OSError):
            msg = f"cannot write {shown}: {exc.strerror}"
            raise StoreError(msg) from exc
        raise
    if durable:
        try:  # makes the rename itself durable: without it a crash can resurrect the old file
            os.fsync(parent)
        except OSError as exc:
            msg = f"cannot fsync the directory of {shown}: {exc.strerror}"
            raise StoreError(msg) from exc
