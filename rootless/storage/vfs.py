"""vfs: every container gets a full copy of its layers. Works on any filesystem, costs disk and time.

``prepare`` flattens the layers bottom-first into ``C/rootfs``, applying each layer's whiteouts (a 0/0
character device deletes the path from what lower layers gave) and opaque dirs (the lower content
of the directory is dropped first). It keeps modes (setuid too), owners, times, symlinks, hardlinks
within a layer, FIFOs and xattrs (``user.*`` except the overlay markers, and
``security.capability``). Data is copied in the kernel (copy_file_range, reflinks where the
filesystem has them; sendfile otherwise).

``mount`` bind-mounts ``C/rootfs`` on the target, also when the target is ``C/rootfs`` itself, so for
every driver the mounted rootfs is a mount point (pivot_root wants one).

There is no changes dir: a container's changes are mixed into ``C/rootfs``. ``rl diff`` and
``rl commit`` on vfs have to compare ``C/rootfs`` with the image's layers (walk both trees; compare
type, mode, owner, size, mtime, link target, and content when those agree).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from rootless.errors import StorageError
from rootless.runtime.syscalls import MS_BIND, MS_REC
from rootless.storage.driver import (
    OPAQUE_XATTR,
    OVERLAY_XATTR_PREFIX,
    StorageDriver,
    check_layers,
    mount_table,
    remove_tree,
    unique_layers,
    unmount_path,
)

ROOTFS_DIR = "rootfs"
READY_FILE = "rootfs.ready"

_COPY_CHUNK = 1 << 30
_XATTR_SKIP_ERRNOS = (errno.ENOTSUP, errno.EPERM, errno.ENODATA)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _copied_xattr(name: str) -> bool:
    if name.startswith("user."):
        return not name.startswith(OVERLAY_XATTR_PREFIX)
    return name == "security.capability"


def copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _XATTR_SKIP_ERRNOS:
            return
        raise
    for name in names:
        if not _copied_xattr(name):
            continue
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _XATTR_SKIP_ERRNOS:
                raise


def copy_data(src: str, dst: str, mode: int = 0o600) -> None:
    """Copy a regular file's bytes to a new file ``dst`` inside the kernel."""
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        try:
            _copy_fd(fin, fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_fd(fin: int, fout: int) -> None:
    try:
        while os.copy_file_range(fin, fout, _COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    offset = os.lseek(fout, 0, os.SEEK_CUR)
    os.lseek(fin, offset, os.SEEK_SET)
    while os.sendfile(fout, fin, None, _COPY_CHUNK):
        pass


def remove_entry(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        remove_tree(Path(path))
    else:
        os.unlink(path)


def clear_dir(path: str) -> None:
    with os.scandir(path) as it:
        names = [e.path for e in it]
    for name in names:
        remove_entry(name)


class LayerCopier:
    """Applies layers, bottom first, onto a destination tree."""

    def __init__(self, dest: Path, owners: bool | None = None) -> None:
        self.dest = str(dest)
        # Outside a user namespace (unit tests, plain dirs) ownership cannot be given away.
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.files = 0
        self.bytes = 0

    def apply(self, layer: Path) -> None:
        src_root = str(layer)
        links: dict[tuple[int, int], str] = {}
        dirs: list[tuple[str, os.stat_result]] = []
        root_st = os.lstat(src_root)
        if os.path.isdir(self.dest):
            fresh = self._enter_dir(src_root, self.dest)
        else:
            os.makedirs(self.dest, mode=0o700)
            fresh = True
        dirs.append((self.dest, root_st))
        copy_xattrs(src_root, self.dest)
        # (layer dir, destination dir, whether the destination was made empty by this layer)
        stack = [(src_root, self.dest, fresh)]
        while stack:
            src_dir, dst_dir, fresh = stack.pop()
            with os.scandir(src_dir) as it:
                entries = list(it)
            for entry in entries:
                dst = os.path.join(dst_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if is_whiteout(st):
                    if not fresh:
                        remove_entry(dst)
                    continue
                if stat.S_ISDIR(mode):
                    if fresh:
                        os.mkdir(dst, 0o700)
                        made = True
                    else:
                        made = self._enter_dir(entry.path, dst)
                    copy_xattrs(entry.path, dst)
                    dirs.append((dst, st))
                    stack.append((entry.path, dst, made))
                    continue
                if not fresh:
                    remove_entry(dst)
                self._copy_node(entry.path, dst, st, links)
        # Directory attributes last, deepest first: writing entries changes a directory's mtime,
        # and a read-only directory could not take its entries.
        for path, st in reversed(dirs):
            self._set_attrs(path, st, is_link=False)

    def _enter_dir(self, src: str, dst: str) -> bool:
        """Make ``dst`` a writable directory for layer dir ``src``; True when it is new and empty."""
        try:
            dst_st = os.lstat(dst)
        except FileNotFoundError:
            os.mkdir(dst, 0o700)
            return True
        if not stat.S_ISDIR(dst_st.st_mode):
            os.unlink(dst)
            os.mkdir(dst, 0o700)
            return True
        if dst_st.st_mode & 0o700 != 0o700:
            os.chmod(dst, stat.S_IMODE(dst_st.st_mode) | 0o700)
        if is_opaque(src):
            clear_dir(dst)
            return True
        return False

    def _copy_node(self, src: str, dst: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1:
                first = links.get(key)
                if first is not None:
                    try:
                        os.link(first, dst)
                        return
                    except FileNotFoundError:
                        pass
                links[key] = dst
            copy_data(src, dst)
            self.files += 1
            self.bytes += st.st_size
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dst, 0o600)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            try:
                os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            except PermissionError as exc:
                raise StorageError(
                    f"cannot create device {dst}: {exc.strerror}",
                    hint="device nodes cannot be created in a user namespace; the runtime bind-mounts /dev",
                ) from exc
        else:  # sockets: nothing to copy
            return
        copy_xattrs(src, dst)
        self._set_attrs(dst, st, is_link=stat.S_ISLNK(mode))

    def _set_attrs(self, path: str, st: os.stat_result, is_link: bool) -> None:
        if self.owners:
            try:
                os.lchown(path, st.st_uid, st.st_gid)
            except OSError as exc:
                raise StorageError(
                    f"cannot give {path} owner {st.st_uid}:{st.st_gid}: {exc.strerror}",
                    hint="the id is not mapped in rl's user namespace: check /etc/subuid and /etc/subgid",
                ) from exc
        if not is_link:
            os.chmod(path, stat.S_IMODE(st.st_mode))  # after chown, which clears setuid/setgid
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def flatten(layers: Sequence[Path], dest: Path, owners: bool | None = None) -> LayerCopier:
    copier = LayerCopier(dest, owners)
    for layer in layers:
        copier.apply(layer)
    return copier


class VfsDriver(StorageDriver):
    name = "vfs"

    def rootfs(self, c: Path) -> Path:
        return c / ROOTFS_DIR

    def prepare(self, c: Path, layers: Sequence[Path]) -> None:
        if (c / READY_FILE).exists():
            return
        layers = unique_layers(layers)
        check_layers(layers)
        c.mkdir(mode=0o700, parents=True, exist_ok=True)
        rootfs = self.rootfs(c)
        remove_tree(rootfs)  # a copy interrupted half way
        try:
            if layers:
                flatten(layers, rootfs)
            else:
                rootfs.mkdir(mode=0o755)
        except OSError as exc:
            raise StorageError(f"cannot copy the image layers into {rootfs}: {exc}") from exc
        (c / READY_FILE).touch()

    def mount(self, c: Path, layers: Sequence[Path], target: Path) -> Path:
        target = Path(os.path.abspath(target))
        if self.is_mounted(target):
            return target
        self.prepare(c, layers)
        target.mkdir(parents=True, exist_ok=True)
        try:
            self.sys.mount(str(self.rootfs(c)), str(target), None, MS_BIND | MS_REC)
        except OSError as exc:
            raise StorageError(f"cannot bind-mount {self.rootfs(c)} on {target}: {os.strerror(exc.errno or 0)}",
                               hint="mount inside rl's user namespace") from exc
        return target

    def unmount(self, c: Path, target: Path) -> None:
        unmount_path(self.sys, target)

    def remove(self, c: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(c / READY_FILE)
        super().remove(c)

    def changes_dir(self, c: Path) -> Path | None:
        return None

    def mounted_from(self, c: Path) -> list[str]:
        """Also bind mounts of ``c/rootfs`` elsewhere: their root is rootfs's inode."""
        busy = super().mounted_from(c)
        try:
            st = os.stat(self.rootfs(c))
        except OSError:
            return busy
        device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        for m in mount_table():
            if m.device != device or m.mount_point in busy:
                continue
            with contextlib.suppress(OSError):
                other = os.stat(m.mount_point)
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    busy.append(m.mount_point)
        return busy
