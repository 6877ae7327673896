"""The storage driver interface and what every driver shares.

A driver turns an image's unpacked layers (``S/layers/<diffid>/diff``, overlayfs lowerdir format:
whiteouts are 0/0 character devices, opaque dirs carry ``user.overlay.opaque=y``) plus a container
storage dir ``C`` into a writable root filesystem mounted at a target path.

Drivers run inside rl's user namespace and mount namespace, as root there. They never write to a
layer directory: everything a container changes lands under ``C``.

Per-container layout under ``C`` (all drivers keep to their own names):

    C/l/<n>      short symlinks to the layers, n = 0 for the bottom layer (overlay, fuse-overlayfs)
    C/upper      the container's own changes (overlay, fuse-overlayfs)
    C/work       the overlay work dir (overlay, fuse-overlayfs)
    C/rootfs     the flattened copy (vfs)
    C/owners.json  the owner map every mount of C shows (fuse-overlayfs, see ``OwnerMap``)
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from rootless.errors import StorageError
from rootless.records import record
from rootless.runtime.syscalls import MNT_DETACH, SYSCALLS, Syscalls

DRIVER_NAMES = ("overlay", "fuse-overlayfs", "vfs")

LINKS_DIR = "l"
UPPER_DIR = "upper"
WORK_DIR = "work"

OPAQUE_XATTR = "user.overlay.opaque"
OVERLAY_XATTR_PREFIX = "user.overlay."

_CWD_LOCK = _thread.allocate_lock()  # _thread: the threading module costs rl run its import


@record(frozen=True)
class OwnerMap:
    """Owners a mount shows in place of those on disk, and the way back for what is written.

    Each line ``(disk, shown, count)``: a file owned by ``disk + k`` on disk appears owned by
    ``shown + k``; a file created or chowned as ``shown + k`` is stored as ``disk + k``. Ids that
    no line covers appear as the overflow id (65534).

    ``--userns=keep-id`` uses the nested namespace's map lines (inner, outer, count): the image's
    id N, stored as N, appears as the outer id that the nested namespace shows as N again, and a
    file the container creates as id N is stored as N, as in the image's own layers.
    """

    uids: tuple[tuple[int, int, int], ...]
    gids: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        for lines in (self.uids, self.gids):
            if not lines or any(len(line) != 3 or min(line) < 0 or line[2] < 1 for line in lines):
                raise ValueError(f"bad owner map lines {lines!r}")

    def to_disk(self, uid: int, gid: int) -> tuple[int, int]:
        """The owner a file shown as ``uid:gid`` has on disk (the container's own view)."""
        return _through(self.uids, uid, 1, 0), _through(self.gids, gid, 1, 0)

    def to_shown(self, uid: int, gid: int) -> tuple[int, int]:
        """The owner to give a file through the mount so that it is ``uid:gid`` on disk."""
        return _through(self.uids, uid, 0, 1), _through(self.gids, gid, 0, 1)


OVERFLOW_ID = 65534


def _through(lines: tuple[tuple[int, int, int], ...], value: int, source: int, target: int) -> int:
    for line in lines:
        if line[source] <= value < line[source] + line[2]:
            return line[target] + value - line[source]
    return OVERFLOW_ID


class StorageDriver(ABC):
    """One way to give a container a writable root filesystem made of read-only layers."""

    name: str = ""
    #: whether ``set_owner_map`` works: the driver can show files with other owners than on disk
    maps_owners: bool = False

    def __init__(self, syscalls: Syscalls = SYSCALLS) -> None:
        self.sys = syscalls

    @abstractmethod
    def prepare(self, c: Path, layers: Sequence[Path]) -> None:
        """Create the container's storage under ``c`` for ``layers`` (bottom layer first)."""

    @abstractmethod
    def mount(self, c: Path, layers: Sequence[Path], target: Path) -> Path:
        """Mount the container's root filesystem on ``target`` and return it.

        Prepares ``c`` when needed. Mounting an already mounted target returns it unchanged.
        """

    @abstractmethod
    def unmount(self, c: Path, target: Path) -> None:
        """Unmount ``target``; nothing happens when it is not mounted."""

    def remove(self, c: Path) -> None:
        """Delete ``c`` and everything in it, after ``unmount``. Layers are never touched."""
        busy = self.mounted_from(c)
        if busy:
            raise StorageError(
                f"cannot remove {c}: {busy[0]} is still mounted",
                hint="unmount the container's root filesystem first",
            )
        remove_tree(c)

    def mounted_from(self, c: Path) -> list[str]:
        """Mount points that use ``c``: mounts below it, and mounts made from it elsewhere."""
        source = os.path.realpath(c)
        return mounts_under(c) + [m.mount_point for m in mount_table() if m.source == source]

    @abstractmethod
    def changes_dir(self, c: Path) -> Path | None:
        """The directory holding only the container's own changes (overlay format), if the driver has one."""

    def is_mounted(self, target: Path) -> bool:
        return is_mount_point(target)

    def set_owner_map(self, c: Path, owners: OwnerMap) -> None:
        """Have every later mount of ``c`` show file owners through ``owners``; call it before the first mount.

        Kept in ``c``, so a restart or ``rl cp`` mounts the container's files as its process saw them.
        """
        raise StorageError(
            f"the {self.name} storage driver cannot show files with other owners than on disk",
            hint="use --storage-driver fuse-overlayfs",
        )

    def owner_map(self, c: Path) -> OwnerMap | None:
        """The owner map mounts of ``c`` show, if one was set."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def get_driver(name: str, syscalls: Syscalls = SYSCALLS) -> StorageDriver:
    """The driver called ``name``: overlay, fuse-overlayfs or vfs."""
    if name == "overlay":
        from rootless.storage.overlay import OverlayDriver

        return OverlayDriver(syscalls)
    if name == "fuse-overlayfs":
        from rootless.storage.fuse_overlayfs import FuseOverlayfsDriver

        return FuseOverlayfsDriver(syscalls)
    if name == "vfs":
        from rootless.storage.vfs import VfsDriver

        return VfsDriver(syscalls)
    raise StorageError(f"unknown storage driver {name!r}", hint=f"use one of {', '.join(DRIVER_NAMES)}")


# layers


def unique_layers(layers: Sequence[Path]) -> list[Path]:
    """Layers bottom-first with repeats dropped, keeping each layer's topmost place.

    Images often repeat a layer (the same empty layer twice); overlayfs refuses a lowerdir that
    names a directory twice (ELOOP). Stacking A over B over A shows the same as A over B.
    """
    seen: set[str] = set()
    result: list[Path] = []
    for layer in reversed([Path(os.path.abspath(p)) for p in layers]):
        key = str(layer)
        if key not in seen:
            seen.add(key)
            result.append(layer)
    result.reverse()
    return result


def check_layers(layers: Sequence[Path]) -> None:
    for layer in layers:
        if not os.path.isdir(layer):
            raise StorageError(f"layer {layer} is missing or not a directory",
                               hint="the image store is damaged: remove the image and pull it again")


def sync_layer_links(c: Path, layers: Sequence[Path]) -> list[str]:
    """Make ``c/l/<n>`` symlinks to the layers (n = 0 bottom); return the names relative to ``c``.

    Relative short names keep the mount option string far below one page however long the store
    path is (``l/119`` is 5 bytes; ``/home/.../layers/<64 hex>/diff`` is 100+).
    """
    links = c / LINKS_DIR
    wanted = {str(i): os.path.abspath(layer) for i, layer in enumerate(layers)}
    try:
        links.mkdir(mode=0o700, exist_ok=True)
        with os.scandir(links) as it:
            for entry in it:
                target = wanted.get(entry.name)
                if target is None or not entry.is_symlink() or os.readlink(entry.path) != target:
                    remove_tree(Path(entry.path))
        for name, target in wanted.items():
            path = links / name
            if not os.path.islink(path):
                os.symlink(target, path)
    except OSError as exc:
        raise StorageError(f"cannot link the layers into {links}: {exc.strerror} ({exc.filename})") from exc
    return [f"{LINKS_DIR}/{i}" for i in range(len(layers))]


def escape_option(value: str) -> str:
    """Escape what the overlay option parser splits on (``,`` between options, ``:`` between layers)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def lowerdir_value(names: Sequence[str]) -> str:
    """The lowerdir value for layer names given bottom-first: overlayfs lists the top layer first."""
    return ":".join(escape_option(n) for n in reversed(names))


def overlay_options(names: Sequence[str], upper: str, work: str, extra: Sequence[str] = ()) -> str:
    parts = [
        f"lowerdir={lowerdir_value(names)}",
        f"upperdir={escape_option(upper)}",
        f"workdir={escape_option(work)}",
        *extra,
    ]
    return ",".join(parts)


def prepare_upper(c: Path, layers: Sequence[Path]) -> None:
    """Create ``c/upper`` and ``c/work``; the upper root takes the top layer root's owner and mode.

    Overlay shows the upper dir's own attributes as the merged root, so an upper dir made with
    rl's 0700 would turn the container's ``/`` into 0700.
    """
    upper = c / UPPER_DIR
    try:
        c.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.path.lexists(upper):
            upper.mkdir(mode=0o755)
            if layers:
                st = os.stat(layers[-1])
                with contextlib.suppress(OSError):  # outside a user namespace ids cannot be given away
                    os.chown(upper, st.st_uid, st.st_gid)
                os.chmod(upper, stat.S_IMODE(st.st_mode))
                os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
        (c / WORK_DIR).mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot prepare the container storage {c}: {exc.strerror} ({exc.filename})") from exc


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Run the block with ``path`` as the process's working directory, then go back.

    The working directory is per process, not per thread: the lock keeps rl's own threads from
    changing it meanwhile; no rl code resolves relative paths while it holds it.
    """
    with _CWD_LOCK:
        back = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(path)
            yield
        finally:
            os.fchdir(back)
            os.close(back)


# mounts


def _unescape_mountinfo(field: str) -> str:
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        ch = field[i]
        if ch == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@record(frozen=True)
class MountEntry:
    mount_point: str
    device: str  # major:minor
    root: str  # the mounted directory, relative to its filesystem's root
    fstype: str
    source: str


def mount_table(mountinfo: str | None = None) -> list[MountEntry]:
    """The mounts of this mount namespace, in /proc/self/mountinfo order."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    table = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        try:
            sep = fields.index("-", 6)
            fstype, source = fields[sep + 1], fields[sep + 2]
        except (ValueError, IndexError):
            fstype = source = ""
        table.append(
            MountEntry(
                _unescape_mountinfo(fields[4]), fields[2], _unescape_mountinfo(fields[3]), fstype,
                _unescape_mountinfo(source),
            )
        )
    return table


def mount_points(mountinfo: str | None = None) -> list[str]:
    """The mount points of this mount namespace, in /proc/self/mountinfo order."""
    return [m.mount_point for m in mount_table(mountinfo)]


def is_mount_point(target: Path) -> bool:
    path = os.path.realpath(target)
    return path in mount_points()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``."""
    root = os.path.realpath(path)
    prefix = root.rstrip("/") + "/"
    return [p for p in mount_points() if p == root or p.startswith(prefix)]


def unmount_path(sys: Syscalls, target: Path) -> None:
    """Unmount ``target`` (lazily when busy); no-op when it is not a mount point."""
    path = os.path.realpath(target)
    while path in mount_points():
        try:
            sys.umount(path, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                sys.umount(path, MNT_DETACH)
            elif exc.errno == errno.EINVAL and path not in mount_points():
                return
            else:
                raise StorageError(f"cannot unmount {path}: {exc.strerror}") from exc


# removal


def _make_removable(root: str) -> None:
    """Give every directory under ``root`` u+rwx so its entries can be listed and unlinked."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.lstat(d)
            if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o700 != 0o700:
                os.chmod(d, stat.S_IMODE(st.st_mode) | 0o700)
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively; fix directory modes that stop it (0000 work dirs, 0555 dirs)."""
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    import shutil

    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    _make_removable(str(path))
    try:
        shutil.rmtree(path)
    except OSError as exc:
        hint = None
        if exc.errno in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
            hint = "files owned by subordinate ids can only be removed inside rl's user namespace"
        raise StorageError(f"cannot remove {path}: {exc.strerror} ({exc.filename})", hint=hint) from exc
