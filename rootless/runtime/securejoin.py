"""Join a path inside a container root the way the container would see it.

Symlinks are resolved component by component against ``root``, never against the host's /, so an
image whose /etc is a symlink to "/../../home" still yields a path below ``root``.
"""

from __future__ import annotations

import errno
import os

MAX_SYMLINKS = 40


def secure_join(root: str, unsafe: str) -> str:
    """The host path for container path ``unsafe`` under ``root``; missing components are kept as is."""
    root = os.path.abspath(root)
    pending = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
                resolved.append(part)
                continue
            raise
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, f"too many levels of symbolic links resolving {unsafe!r}")
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return os.path.join(root, *resolved)
