"""Native overlayfs, mounted by root in rl's user namespace (Linux >= 5.11, option ``userxattr``).

The mount data string is limited to one page. Lower layers are named by short relative links
(``l/0`` .. ``l/N`` in the container dir) and the mount is made with the container dir as working
directory: mount(2) resolves relative lowerdir paths against the caller's cwd, so 500 layers need
about 3 KiB whatever the store path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from rootless.errors import StorageError
from rootless.storage.driver import (
    UPPER_DIR,
    WORK_DIR,
    StorageDriver,
    check_layers,
    overlay_options,
    prepare_upper,
    sync_layer_links,
    unique_layers,
    unmount_path,
    working_dir,
)

MAX_LAYERS = 500  # OVL_MAX_STACK in fs/overlayfs
MOUNT_OPTIONS = ("userxattr",)


def page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4096


def mount_data(names: Sequence[str], extra: Sequence[str] = MOUNT_OPTIONS) -> str:
    """The overlay mount data for layer names given bottom-first, checked against overlay's limits."""
    if len(names) > MAX_LAYERS:
        raise StorageError(
            f"the image has {len(names)} layers; overlayfs stacks at most {MAX_LAYERS}",
            hint="squash the image (e.g. rl build --squash) or use --storage-driver vfs",
        )
    if not names:
        raise StorageError("overlayfs needs at least one lower layer")
    data = overlay_options(names, UPPER_DIR, WORK_DIR, extra)
    if len(data.encode()) >= page_size():
        raise StorageError(
            f"overlay mount options for {len(names)} layers are {len(data)} bytes, over one page",
            hint="squash the image or use --storage-driver vfs",
        )
    return data


class OverlayDriver(StorageDriver):
    name = "overlay"

    def prepare(self, c: Path, layers: Sequence[Path]) -> None:
        layers = unique_layers(layers)
        check_layers(layers)
        mount_data(["l/0"] * len(layers))  # fail early on too many layers
        prepare_upper(c, layers)
        sync_layer_links(c, layers)

    def mount(self, c: Path, layers: Sequence[Path], target: Path) -> Path:
        target = Path(os.path.abspath(target))
        if self.is_mounted(target):
            return target
        layers = unique_layers(layers)
        check_layers(layers)
        mount_data(["l/0"] * len(layers))  # fail before creating anything
        prepare_upper(c, layers)
        data = mount_data(sync_layer_links(c, layers))
        target.mkdir(parents=True, exist_ok=True)
        try:
            with working_dir(c):
                # The source names the container dir, so remove() can tell the mount still uses it.
                self.sys.mount(os.path.realpath(c), str(target), "overlay", 0, data)
        except OSError as exc:
            raise StorageError(
                f"cannot mount overlay on {target}: {os.strerror(exc.errno or 0)}", hint=_hint(exc.errno)
            ) from exc
        return target

    def unmount(self, c: Path, target: Path) -> None:
        unmount_path(self.sys, target)

    def changes_dir(self, c: Path) -> Path | None:
        return c / UPPER_DIR


def _hint(err: int | None) -> str:
    if err == errno.EPERM:
        return "mount inside rl's user namespace, or use --storage-driver fuse-overlayfs"
    if err == errno.ENODEV:
        return "the kernel has no overlay filesystem: ask the admin to load the overlay module"
    if err == errno.EINVAL:
        return ("overlayfs in user namespaces needs Linux >= 5.11 and a store filesystem with user xattrs;"
                " use --storage-driver fuse-overlayfs")
    return "use --storage-driver fuse-overlayfs or vfs"
