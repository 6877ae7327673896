"""Crash-safe file writes: a reader sees the old contents or the new ones, never a mix.

The data goes to a temporary file in the same directory, is fsynced, renamed over the target,
and the directory is fsynced so the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from rootless.errors import StorageError

_MISSING: Any = object()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so renames and creations in it are durable; errors are ignored."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically."""
    target = Path(path)
    # os.urandom(4).hex() is secrets.token_hex(4), without secrets' import (hmac, OpenSSL: ~3 ms)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise StorageError(f"cannot write {target}: {e.strerror}", "check the permissions of its directory") from None
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {target}: {e.strerror}", "check free space and permissions") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(target.parent)


def dumps_json(obj: Any, pretty: bool = True) -> bytes:
    if pretty:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def atomic_write_json(path: str | os.PathLike[str], obj: Any, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically."""
    atomic_write_bytes(path, dumps_json(obj), mode=mode, durable=durable)


def read_json(path: str | os.PathLike[str], default: Any = _MISSING, what: str = "") -> Any:
    """The JSON in ``path``; ``default`` when it does not exist (StorageError when no default).

    A file that is not valid JSON is reported as corrupt with the file named.
    """
    label = what or "file"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise StorageError(f"cannot read {label} {path}: it does not exist") from None
    except OSError as e:
        raise StorageError(f"cannot read {label} {path}: {e.strerror}", "check its permissions") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StorageError(
            f"{label} {path} is corrupt: {reason}",
            "it was damaged by a crash or an edit; repair the store or remove the file",
        ) from None
