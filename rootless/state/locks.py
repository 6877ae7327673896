"""File locks with flock(2): shared or exclusive, optionally with a timeout.

flock locks belong to an open file description and vanish when the last descriptor for it is
closed, so an rl process that is killed (even with SIGKILL) never leaves a stale lock behind.
An exclusive holder writes its pid into the lock file, so whoever times out waiting can say who
holds the lock.  The contents are informational only: the lock is the flock, never the file.

Locks are not re-entrant: two ``FileLock`` objects on one path in one process exclude each other
(each opens its own file description), which is what threads need, and a process that takes the
same lock twice waits for itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from rootless.errors import StorageError

DEFAULT_TIMEOUT = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid an exclusive holder recorded in the lock file, when that process still exists."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 and _pid_alive(pid) else None


class FileLock:
    """An flock on ``path`` (created 0644 if missing).  Use as a context manager.

    ``timeout=None`` waits forever, ``0`` tries once; a timeout raises StorageError naming the lock
    file and, when recorded, the pid that holds it.  ``what`` names the protected thing in messages.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        shared: bool = False,
        timeout: float | None = DEFAULT_TIMEOUT,
        what: str = "",
        create: bool = True,
        record_pid: bool = True,
    ) -> None:
        self.path = Path(path)
        self.shared = shared
        self.timeout = timeout
        self.what = what
        self.create = create  # False: a missing lock file raises FileNotFoundError
        self.record_pid = record_pid and not shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if self.create else 0)
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            if not self.create:
                raise
            raise StorageError(
                f"cannot open lock file {self.path}: its directory does not exist",
                "check the storage directory",
            ) from None
        except OSError as e:
            raise StorageError(
                f"cannot open lock file {self.path}: {e.strerror}",
                "check that the storage directory exists and is writable by you",
            ) from None

    def try_acquire(self) -> bool:
        """Take the lock if it is free right now; True when taken."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        fd = self._open()
        op = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, op)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise StorageError(f"cannot lock {self.path}: {e.strerror}") from None
        self._took(fd)
        return True

    def acquire(self) -> FileLock:
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        fd = self._open()
        kind = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if self.timeout is None:
                fcntl.flock(fd, kind)
            else:
                self._poll(fd, kind, self.timeout)
        except BaseException:
            os.close(fd)
            raise
        self._took(fd)
        return self

    def _poll(self, fd: int, kind: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise StorageError(f"cannot lock {self.path}: {e.strerror}") from None
            now = time.monotonic()
            if now >= deadline:
                raise self._timeout_error()
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.1)

    def _timeout_error(self) -> StorageError:
        pid = recorded_holder(self.path)
        who = f"held by pid {pid}" if pid is not None else "held by another process"
        what = f" ({self.what})" if self.what else ""
        return StorageError(
            f"timed out after {self.timeout:g}s waiting for lock {self.path}{what}: {who}",
            "wait for the other rl command to finish, or stop it" + (f" (kill {pid})" if pid else ""),
        )

    def _took(self, fd: int) -> None:
        self._fd = fd
        if self.record_pid:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # the pid is a courtesy for error messages; the lock itself is held

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.record_pid:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)


def exclusive(path: str | os.PathLike[str], timeout: float | None = DEFAULT_TIMEOUT, what: str = "") -> FileLock:
    """``with exclusive(p): ...`` holds an exclusive lock on ``p``."""
    return FileLock(path, shared=False, timeout=timeout, what=what)


def shared(path: str | os.PathLike[str], timeout: float | None = DEFAULT_TIMEOUT, what: str = "") -> FileLock:
    """``with shared(p): ...`` holds a shared lock on ``p``."""
    return FileLock(path, shared=True, timeout=timeout, what=what)
