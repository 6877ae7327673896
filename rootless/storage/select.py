"""Choosing a storage driver: native overlay in the user namespace, else fuse-overlayfs, else vfs."""

from __future__ import annotations

import os
import platform
import shutil

DRIVERS = ("overlay", "fuse-overlayfs", "vfs")


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = release or platform.release()
    parts = release.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (0, 0)


def fuse_usable() -> bool:
    return shutil.which("fuse-overlayfs") is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)


def candidates(release: str | None = None) -> list[tuple[str, str | None]]:
    """Each driver with the reason it cannot be used here (None when it may be)."""
    result: list[tuple[str, str | None]] = []
    if kernel_version(release) >= (5, 11):
        result.append(("overlay", None))
    else:
        result.append(("overlay", "kernel older than 5.11 has no overlay in user namespaces"))
    if shutil.which("fuse-overlayfs") is None:
        result.append(("fuse-overlayfs", "fuse-overlayfs is not installed"))
    elif not os.access("/dev/fuse", os.R_OK | os.W_OK):
        result.append(("fuse-overlayfs", "/dev/fuse is not usable by this user"))
    else:
        result.append(("fuse-overlayfs", None))
    result.append(("vfs", None))
    return result


def choose(configured: str = "", release: str | None = None) -> str:
    """The configured driver, or the first candidate without a problem."""
    if configured:
        return configured
    return next(name for name, problem in candidates(release) if problem is None)
