"""Choosing a storage driver: native overlay in the user namespace, else fuse-overlayfs, else vfs.

The choice rests on real probes (``rootless.storage.probe``), cached in the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rootless.errors import ConfigError, StorageError
from rootless.storage.driver import DRIVER_NAMES
from rootless.storage.probe import ProbeResults, fuse_problem, probe

DRIVERS = DRIVER_NAMES

_HINTS = {
    "overlay": (
        "use --storage-driver fuse-overlayfs or vfs; native overlay needs Linux >= 5.11 and a store on a"
        " local filesystem with user xattrs (set storage.root or storage.local_root)"
    ),
    "fuse-overlayfs": (
        "ask the admin to install fuse-overlayfs (Debian/Ubuntu: apt install fuse-overlayfs) and to make"
        " /dev/fuse usable (helpers/enable-devices.sh), or use --storage-driver vfs"
    ),
}


def _results(results: ProbeResults | None, store: Path | None) -> ProbeResults:
    if results is not None:
        return results
    if store is None:
        from rootless.config.dirs import default_storage_root

        store = default_storage_root()
    return probe(store)


def candidates(store: Path | None = None, results: ProbeResults | None = None) -> list[tuple[str, str | None]]:
    """Each driver, in order of preference, with the reason it cannot be used here (None when it can)."""
    found = _results(results, store)
    return [(name, found.problem(name)) for name in DRIVERS]


def choose(configured: str = "", results: ProbeResults | None = None, store: Path | None = None) -> str:
    """The configured driver when it works here, else the first that does.

    A configured driver that cannot work raises StorageError with the reason and the fix.
    """
    if configured and configured not in DRIVERS:
        raise ConfigError(
            f"unknown storage driver {configured!r}", hint=f"storage.driver must be one of {', '.join(DRIVERS)}"
        )
    found = _results(results, store)
    if configured:
        problem = found.problem(configured)
        if problem is not None:
            raise StorageError(f"storage driver {configured} cannot be used: {problem}", hint=_HINTS.get(configured))
        return configured
    return next(name for name in DRIVERS if found.problem(name) is None)


def owner_mapping_driver(chosen: str, fuse: Callable[[], str | None] = fuse_problem) -> tuple[str, str | None]:
    """For a container that must see other file owners than those on disk (``--userns=keep-id``):
    the driver to use in place of ``chosen``, and why it cannot show them (None when it can).

    Only fuse-overlayfs can; it takes native overlay's place when it works here (``fuse`` says why
    not). vfs stays vfs: it is chosen by name, or when neither overlay works here.
    """
    if chosen == "fuse-overlayfs":
        return chosen, None
    if chosen == "overlay":
        problem = fuse()
        return ("fuse-overlayfs", None) if problem is None else (chosen, problem)
    return chosen, f"the {chosen} storage driver cannot show files with other owners than on disk"
