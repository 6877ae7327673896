"""Extract a layer tar into a directory, safely, in the overlayfs "lowerdir" format.

Safety: every path is cleaned lexically (leading "/" stripped, ".." that would climb above the
layer refused) and then created relative to directory file descriptors opened one component at a
time with O_NOFOLLOW|O_DIRECTORY.  The extractor never follows a symlink: a member below a symlink
(``evil -> /etc`` then ``evil/passwd``) is refused, files are created with O_EXCL|O_NOFOLLOW, and
ownership/timestamps are changed with the no-follow variants.  Symlinks themselves are written as
they are; they only mean something inside the container.  Hard links must point to an entry that
this layer already created.  Device nodes are skipped (rl cannot create them) and recorded.

Whiteouts (``whiteouts="overlay"``, the store's layer format): ``.wh.NAME`` becomes a character
device 0/0 named NAME, ``.wh..wh..opq`` sets ``user.overlay.opaque=y`` on its directory; a layer
can therefore not set ``user.overlay.*`` attributes of its own, those are dropped.
``whiteouts="apply"`` instead deletes the whited-out entries from ``dest`` (to flatten layers
into one tree, e.g. for a copying storage driver or an export).

Ownership: files get the tar's numeric uid/gid.  When chown is refused (an unprivileged user, or a
user namespace that maps a single id) the files stay the caller's and ``UnpackStats.flattened``
is set so rl can say so once.  Directory modes and times are applied after their contents, deepest
first, so a 0555 directory with files in it extracts fine.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, BinaryIO, Literal

from rootless.errors import ImageError, RLError, StorageError
from rootless.image import compression
from rootless.log import log
from rootless.records import field, record

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
_RESERVED_XATTR_PREFIX = "user.overlay."
_PAX_XATTR = "SCHILY.xattr."

_COPY_CHUNK = 1 << 20
_DIR_FD_CACHE = 128
_MAX_RECORDED = 200  # entries kept in the skipped_* lists; counts keep going

_HOSTILE_HINT = "the image is malformed or malicious; do not use it, or ask its publisher for a fixed one"
_CORRUPT_HINT = "the layer is damaged; pull or load the image again"

Whiteouts = Literal["overlay", "apply"]


@record
class UnpackStats:
    diff_id: str = ""  # sha256 of the uncompressed tar, "sha256:<hex>"
    size: int = 0  # bytes of the uncompressed tar
    entries: int = 0  # members created (files, dirs, links, fifos, whiteouts)
    file_bytes: int = 0  # bytes of regular file contents written
    flattened: bool = False  # some chown was refused: files kept the caller's ownership
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped_devices: list[str] = field(default_factory=list)
    skipped_xattrs: list[str] = field(default_factory=list)  # "path: name (reason)"
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "diff_id": self.diff_id,
            "size": self.size,
            "entries": self.entries,
            "flattened": self.flattened,
            "whiteouts": self.whiteouts,
            "opaque_dirs": self.opaque_dirs,
            "skipped_devices": self.skipped_devices,
            "skipped_xattrs": self.skipped_xattrs,
        }


class _Refused(Exception):
    """A hostile or malformed member; message is the reason (without the layer label)."""


class _HashingReader(io.RawIOBase):
    """Counts and hashes everything read through it."""

    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self.sha = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._src.read(len(b))
        n = len(data)
        if n:
            b[:n] = data
            self.sha.update(data)
            self.count += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size) if size is not None and size >= 0 else self._src.read()
        if data:
            self.sha.update(data)
            self.count += len(data)
        return data or b""

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


def clean_name(name: str) -> str:
    """``name`` relative to the layer root, without "." or empty components; "" is the root.

    Raises _Refused when ".." would climb above the root.  A leading "/" is dropped (tar archives
    are relative to where they are extracted).
    """
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise _Refused(f"member {name!r} escapes the layer")
            parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


def _split(rel: str) -> tuple[str, str]:
    parent, _, base = rel.rpartition("/")
    return parent, base


def _is_within(rel: str, prefix: str) -> bool:
    return rel == prefix or rel.startswith(prefix + "/")


def _onerror_chmod(func: Callable[..., Any], path: str, exc_info: Any) -> None:
    """rmtree helper: make the parent (and the entry when it is a directory) writable, retry."""
    err = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    if isinstance(err, FileNotFoundError):
        return
    if not isinstance(err, PermissionError):
        raise err
    parent = os.path.dirname(path)
    if func in (os.rmdir, os.unlink, os.remove):
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IRWXU)
        func(path)
        return
    if func in (os.open, os.scandir, os.listdir):
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or (st.st_mode & stat.S_IRWXU) == stat.S_IRWXU:
                raise err
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        except OSError:
            raise err from None
        shutil.rmtree(path, onerror=_onerror_chmod)
        return
    raise err


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete a tree even when it holds read-only directories (0555 dirs of an image).

    Symlinks are never followed.  A missing path is fine.
    """
    p = os.fspath(path)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(p)
        return
    if (st.st_mode & stat.S_IRWXU) != stat.S_IRWXU:
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
    shutil.rmtree(p, onerror=_onerror_chmod)


class _Tree:
    """Directory fds below a root, opened without following symlinks, cached LRU."""

    def __init__(self, root: str, created: set[str] | None) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self.created = created  # paths this layer created (whiteouts="apply" needs them)

    def close(self) -> None:
        for fd in self._cache.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._cache.clear()
        os.close(self.root_fd)

    def _put(self, rel: str, fd: int) -> None:
        old = self._cache.pop(rel, None)
        if old is not None and old != fd:
            os.close(old)
        self._cache[rel] = fd
        while len(self._cache) > _DIR_FD_CACHE:
            _, victim = self._cache.popitem(last=False)
            os.close(victim)

    def forget(self, rel: str) -> None:
        """Drop cached fds for ``rel`` and everything below it (it is being replaced)."""
        for key in [k for k in self._cache if _is_within(k, rel)] if rel else list(self._cache):
            os.close(self._cache.pop(key))

    def dir(self, rel: str, member: str, create: bool) -> int:
        """An fd for directory ``rel``; missing components are created 0755 when ``create``."""
        if rel == "":
            return self.root_fd
        fd = self._cache.get(rel)
        if fd is not None:
            self._cache.move_to_end(rel)
            return fd
        parts = rel.split("/")
        # Longest cached prefix.
        i = len(parts) - 1
        pfd = self.root_fd
        while i > 0:
            cached = self._cache.get("/".join(parts[:i]))
            if cached is not None:
                pfd = cached
                break
            i -= 1
        for j in range(i, len(parts)):
            sub = "/".join(parts[: j + 1])
            fd = self._open_child(pfd, parts[j], sub, member, create)
            self._put(sub, fd)
            pfd = fd
        return pfd

    def _open_child(self, pfd: int, name: str, sub: str, member: str, create: bool) -> int:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        for _attempt in range(2):
            try:
                return os.open(name, flags, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=pfd)
                    if self.created is not None:
                        self.created.add(sub)
                except FileExistsError:
                    pass
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    except OSError:
                        st = None
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        raise _Refused(f"member {member!r} would be written through symlink {sub!r}") from None
                    raise _Refused(f"member {member!r} needs {sub!r} to be a directory, and it is not") from None
                raise
        return os.open(name, flags, dir_fd=pfd)


class _Extractor:
    def __init__(
        self,
        dest: str,
        label: str,
        whiteouts: Whiteouts,
        keep_capabilities: bool,
    ) -> None:
        self.created: set[str] | None = set() if whiteouts == "apply" else None
        self.tree = _Tree(dest, self.created)
        self.label = label
        self.mode = whiteouts
        self.keep_caps = keep_capabilities
        self.stats = UnpackStats()
        self.deferred: dict[str, tuple[int, int | None]] = {}  # dir -> (mode, mtime ns)
        self.euid = os.geteuid()
        self.egid = os.getegid()
        self.chown_failed: set[tuple[int, int]] = set()
        self._buf = bytearray(_COPY_CHUNK)
        # Directories this layer marks opaque, and the whiteout devices it made in them: an opaque
        # directory already hides everything below it, and a whiteout device inside it would show
        # as a broken entry (overlayfs does not filter a directory that only one layer provides).
        self.opaque: set[str] = set()
        self.whiteout_devices: dict[str, list[str]] = {}

    # ---- helpers ------------------------------------------------------------------------------

    def _record(self, lst: list[str], item: str) -> None:
        if len(lst) < _MAX_RECORDED:
            lst.append(item)

    def _chown(self, m: tarfile.TarInfo, fd: int | None, pfd: int, name: str) -> None:
        uid, gid = m.uid, m.gid
        if (uid, gid) == (self.euid, self.egid):
            return
        if (uid, gid) in self.chown_failed:
            self.stats.flattened = True
            return
        try:
            if fd is not None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)
        except (OSError, OverflowError, ValueError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.EPERM, errno.EINVAL, errno.EACCES):
                raise
            self.chown_failed.add((uid, gid))
            if not self.stats.flattened:
                log.debug("%s: chown to %d:%d refused (%s); flattening ownership", self.label, uid, gid, e)
            self.stats.flattened = True

    @staticmethod
    def _mtime_ns(m: tarfile.TarInfo) -> int | None:
        try:
            return int(m.mtime * 1_000_000_000) if isinstance(m.mtime, float) else int(m.mtime) * 1_000_000_000
        except (OverflowError, ValueError, TypeError):
            return None

    def _utime(self, m: tarfile.TarInfo, fd: int | None, pfd: int, name: str) -> None:
        ns = self._mtime_ns(m)
        if ns is None:
            return
        try:
            if fd is not None:
                os.utime(fd, ns=(ns, ns))
            else:
                os.utime(name, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
        except (OSError, OverflowError, ValueError):
            pass  # a timestamp the filesystem cannot hold is not worth failing the pull

    def _xattrs(self, m: tarfile.TarInfo, fd: int, rel: str) -> None:
        if not m.pax_headers:
            return
        for key, value in m.pax_headers.items():
            if not key.startswith(_PAX_XATTR):
                continue
            xname = key[len(_PAX_XATTR) :]
            if xname.startswith(_RESERVED_XATTR_PREFIX):
                self._record(self.stats.skipped_xattrs, f"{rel}: {xname} (reserved for the layer format)")
                continue
            if not (xname.startswith("user.") or (self.keep_caps and xname == "security.capability")):
                log.debug("%s: %s: xattr %s skipped", self.label, rel, xname)
                self._record(self.stats.skipped_xattrs, f"{rel}: {xname} (not a user attribute)")
                continue
            data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
            try:
                os.setxattr(fd, xname, data)
            except OSError as e:
                log.debug("%s: %s: xattr %s not set: %s", self.label, rel, xname, e.strerror)
                self._record(self.stats.skipped_xattrs, f"{rel}: {xname} ({e.strerror})")

    def _remove_existing(self, pfd: int, name: str, rel: str, keep_dir: bool) -> bool:
        """Make room for a new entry ``rel``.  Returns True when an existing directory is kept."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._drop_dir(pfd, name, rel)
        else:
            os.unlink(name, dir_fd=pfd)
        return False

    def _drop_dir(self, pfd: int, name: str, rel: str) -> None:
        if rel == "":
            raise _Refused("member '.' would replace the layer root with a non-directory")
        self.tree.forget(rel)
        for key in [k for k in self.deferred if _is_within(k, rel)]:
            del self.deferred[key]
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._empty_dir(fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=pfd)

    def _empty_dir(self, fd: int) -> None:
        """Delete everything inside the directory ``fd`` (no symlink is followed)."""
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            if is_dir:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    os.fchmod(sub, stat.S_IMODE(os.fstat(sub).st_mode) | stat.S_IRWXU)
                    self._empty_dir(sub)
                finally:
                    os.close(sub)
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)

    def _note(self, rel: str) -> None:
        if self.created is not None:
            self.created.add(rel)

    # ---- member kinds -------------------------------------------------------------------------

    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = clean_name(m.name)
        parent, base = _split(rel)
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(m, rel, parent, base)
            return
        if m.isdir():
            self.directory(m, rel)
            return
        if rel == "":
            raise _Refused(f"member {m.name!r} would replace the layer root with a non-directory")
        if m.ischr() or m.isblk():
            log.warning("%s: device node %s skipped: rl cannot create devices", self.label, rel)
            self._record(self.stats.skipped_devices, rel)
            return
        if not (m.isreg() or m.issym() or m.islnk() or m.isfifo()):
            self.stats.warnings.append(f"{rel}: unsupported tar entry type {m.type!r} skipped")
            return
        pfd = self.tree.dir(parent, m.name, create=True)
        if m.isreg():
            self.regular(tf, m, rel, pfd, base)
        elif m.issym():
            self.symlink(m, rel, pfd, base)
        elif m.islnk():
            self.hardlink(m, rel, pfd, base)
        else:
            self.fifo(m, rel, pfd, base)
        self.stats.entries += 1
        self._note(rel)

    def regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, rel: str, pfd: int, name: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove_existing(pfd, name, rel, keep_dir=False)
            fd = os.open(name, flags, 0o600, dir_fd=pfd)
        try:
            if m.size:
                src = tf.extractfile(m)
                assert src is not None
                buf = self._buf
                view = memoryview(buf)
                remaining = m.size
                while remaining > 0:
                    n = src.readinto(view[: min(len(buf), remaining)])  # type: ignore[attr-defined]
                    if not n:
                        raise tarfile.ReadError("unexpected end of data")
                    remaining -= n
                    out = view[:n]
                    while out:
                        w = os.write(fd, out)
                        out = out[w:]
                self.stats.file_bytes += m.size
            # chown clears setuid bits and file capabilities, and setting user xattrs needs write
            # permission: chown, xattrs, then the mode.
            self._chown(m, fd, pfd, name)
            self._xattrs(m, fd, rel)
            os.fchmod(fd, m.mode & 0o7777)
            self._utime(m, fd, pfd, name)
        finally:
            os.close(fd)

    def symlink(self, m: tarfile.TarInfo, rel: str, pfd: int, name: str) -> None:
        if not m.linkname:
            raise _Refused(f"symlink {m.name!r} has an empty target")
        try:
            os.symlink(m.linkname, name, dir_fd=pfd)
        except FileExistsError:
            self._remove_existing(pfd, name, rel, keep_dir=False)
            os.symlink(m.linkname, name, dir_fd=pfd)
        self._chown(m, None, pfd, name)
        self._utime(m, None, pfd, name)

    def hardlink(self, m: tarfile.TarInfo, rel: str, pfd: int, name: str) -> None:
        try:
            target = clean_name(m.linkname)
        except _Refused:
            raise _Refused(f"hard link {m.name!r} points to {m.linkname!r}, outside the layer") from None
        absent = _Refused(f"hard link {m.name!r} points to {m.linkname!r}, which is not in the layer")
        if target == "":
            raise _Refused(f"hard link {m.name!r} points to the layer root")
        tparent, tname = _split(target)
        pin = os.dup(pfd)  # looking up the target may evict pfd from the cache
        try:
            try:
                tpfd = self.tree.dir(tparent, m.name, create=False)
                st = os.stat(tname, dir_fd=tpfd, follow_symlinks=False)
            except (FileNotFoundError, _Refused):
                raise absent from None
            if stat.S_ISDIR(st.st_mode):
                raise _Refused(f"hard link {m.name!r} points to directory {m.linkname!r}")
            if target == rel:
                return  # a link to itself: the entry is already there
            tpin = os.dup(tpfd)
            try:
                try:
                    os.link(tname, name, src_dir_fd=tpin, dst_dir_fd=pin, follow_symlinks=False)
                except FileExistsError:
                    self._remove_existing(pin, name, rel, keep_dir=False)
                    os.link(tname, name, src_dir_fd=tpin, dst_dir_fd=pin, follow_symlinks=False)
            finally:
                os.close(tpin)
        finally:
            os.close(pin)

    def fifo(self, m: tarfile.TarInfo, rel: str, pfd: int, name: str) -> None:
        try:
            os.mkfifo(name, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove_existing(pfd, name, rel, keep_dir=False)
            os.mkfifo(name, 0o600, dir_fd=pfd)
        self._chown(m, None, pfd, name)
        # A fifo we just created cannot be a symlink, so fchmodat (which follows) is safe here.
        os.chmod(name, m.mode & 0o7777, dir_fd=pfd)
        self._utime(m, None, pfd, name)

    def directory(self, m: tarfile.TarInfo, rel: str) -> None:
        if rel == "":
            fd = self.tree.root_fd
            pfd, name = fd, ""
        else:
            parent, name = _split(rel)
            pfd = self.tree.dir(parent, m.name, create=True)
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not self._remove_existing(pfd, name, rel, keep_dir=True):
                    os.mkdir(name, 0o700, dir_fd=pfd)
            fd = self.tree.dir(rel, m.name, create=False)
            # Keep the directory usable while its contents are extracted.
            st = os.fstat(fd)
            if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        self._chown(m, fd, pfd, name)
        self._xattrs(m, fd, rel or ".")
        self.deferred[rel] = (m.mode & 0o7777, self._mtime_ns(m))
        self.stats.entries += 1
        self._note(rel)

    def whiteout(self, m: tarfile.TarInfo, rel: str, parent: str, base: str) -> None:
        pfd = self.tree.dir(parent, m.name, create=True)
        if base == OPAQUE_MARKER:
            self.stats.opaque_dirs += 1
            if self.mode == "apply":
                self._apply_opaque(pfd, parent)
                return
            try:
                os.setxattr(pfd, OPAQUE_XATTR, b"y")
            except OSError as e:
                raise StorageError(
                    f"{self.label}: cannot mark directory {parent or '/'!r} opaque: {e.strerror}",
                    "the storage directory must be on a filesystem with user extended attributes "
                    "(ext4, xfs, btrfs, tmpfs)",
                ) from None
            self.opaque.add(parent)
            for name in self.whiteout_devices.pop(parent, []):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=pfd)
                    self.stats.entries -= 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            log.debug("%s: aufs metadata %s skipped", self.label, rel)
            return
        target = base[len(WHITEOUT_PREFIX) :]
        if target in ("", ".", ".."):
            raise _Refused(f"whiteout {m.name!r} names no entry")
        self.stats.whiteouts += 1
        trel = f"{parent}/{target}" if parent else target
        if self.mode == "apply":
            if self.created is not None and trel in self.created:
                return  # whiteouts only hide lower layers
            with contextlib.suppress(FileNotFoundError):
                self._remove_existing(pfd, target, trel, keep_dir=False)
            return
        if parent in self.opaque:
            return  # the directory is opaque in this layer: nothing below shows anyway
        try:
            os.stat(target, dir_fd=pfd, follow_symlinks=False)
            return  # this layer has the entry itself: the whiteout only hid lower layers' one
        except FileNotFoundError:
            pass
        try:
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)
        except OSError as e:
            raise StorageError(
                f"{self.label}: cannot create whiteout for {trel!r}: {e.strerror}",
                "this kernel does not let unprivileged users create whiteout devices; use the vfs driver",
            ) from None
        self.whiteout_devices.setdefault(parent, []).append(target)
        self.stats.entries += 1

    def _apply_opaque(self, pfd: int, parent: str) -> None:
        with os.scandir(pfd) as it:
            names = [e.name for e in it]
        for name in names:
            rel = f"{parent}/{name}" if parent else name
            if self.created is not None and rel in self.created:
                continue
            self._remove_existing(pfd, name, rel, keep_dir=False)

    def finish(self) -> None:
        """Apply directory modes and times, deepest first."""
        for rel in sorted(self.deferred, key=lambda r: r.count("/") + (1 if r else 0), reverse=True):
            mode, ns = self.deferred[rel]
            try:
                fd = self.tree.dir(rel, rel, create=False)
            except (FileNotFoundError, _Refused):
                continue
            os.fchmod(fd, mode)
            if ns is not None:
                with contextlib.suppress(OSError, OverflowError, ValueError):
                    os.utime(fd, ns=(ns, ns))


def unpack(
    stream: BinaryIO,
    dest: str | os.PathLike[str],
    *,
    label: str = "layer",
    compression_kind: str | None = compression.NONE,
    expected_diff_id: str | None = None,
    whiteouts: Whiteouts = "overlay",
    keep_capabilities: bool = True,
) -> UnpackStats:
    """Extract the layer tar read from ``stream`` into the existing directory ``dest``.

    ``compression_kind`` is none/gzip/zstd, or None to sniff it from the first bytes.  ``label``
    starts every error message ("layer sha256:0123456789ab of alpine:3.19").  When
    ``expected_diff_id`` is given the uncompressed tar must hash to it.  Errors: ImageError for a
    hostile or corrupt layer, StorageError when the filesystem refuses.  On error ``dest`` is left
    partially filled: the caller removes it (Store.layer_writer does).
    """
    raw: BinaryIO = stream
    reader: compression.DecompressReader | None = None
    try:
        if compression_kind != compression.NONE:
            reader = compression.open_reader(stream, compression_kind)
            raw = reader  # type: ignore[assignment]
        hashing = _HashingReader(raw)
        buffered = io.BufferedReader(hashing, buffer_size=_COPY_CHUNK)
        ex = _Extractor(os.fspath(dest), label, whiteouts, keep_capabilities)
        try:
            _run(ex, buffered, label)
            # Whatever follows the end-of-archive blocks belongs to the layer's digest too.
            while buffered.read(_COPY_CHUNK):
                pass
        finally:
            ex.tree.close()
    except compression.DecompressError as e:
        raise ImageError(f"{label}: {e.message}", e.hint) from None
    finally:
        if reader is not None:
            reader.close()
    stats = ex.stats
    stats.size = hashing.count
    stats.diff_id = "sha256:" + hashing.sha.hexdigest()
    if expected_diff_id is not None and stats.diff_id != expected_diff_id:
        raise ImageError(
            f"{label}: uncompressed content is {stats.diff_id}, the image config says {expected_diff_id}",
            _CORRUPT_HINT,
        )
    return stats


def _run(ex: _Extractor, fileobj: BinaryIO, label: str) -> None:
    current = "?"
    try:
        try:
            tf = tarfile.open(fileobj=fileobj, mode="r|", bufsize=tarfile.RECORDSIZE)  # noqa: SIM115
        except tarfile.ReadError as e:
            if "empty file" in str(e):
                return  # a zero-byte layer: nothing to extract
            raise
        with tf:
            while True:
                m = tf.next()
                if m is None:
                    break
                current = m.name
                ex.member(tf, m)
                tf.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every header otherwise
        ex.finish()
    except _Refused as e:
        raise ImageError(f"{label}: {e}: refused", _HOSTILE_HINT) from None
    except (tarfile.TarError, EOFError) as e:
        reason = str(e) or type(e).__name__
        raise ImageError(f"{label}: the layer tar is corrupt near {current!r}: {reason}", _CORRUPT_HINT) from None
    except compression.DecompressError:
        raise
    except RLError:
        raise
    except ValueError as e:  # e.g. an embedded NUL byte in a name
        raise ImageError(f"{label}: member {current!r} is invalid: {e}: refused", _HOSTILE_HINT) from None
    except OSError as e:
        what = f"member {current!r}" if current != "?" else "the layer"
        raise StorageError(
            f"{label}: cannot extract {what}: {e.strerror or e}",
            "check free space and permissions of the storage directory",
        ) from None


def unpack_path(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    **kwargs: Any,
) -> UnpackStats:
    """``unpack`` from a file (compression sniffed unless given)."""
    kwargs.setdefault("compression_kind", None)
    with open(path, "rb") as f:
        return unpack(f, dest, **kwargs)


def label_for(diff_id: str, image: str = "") -> str:
    """The prefix of unpack errors: "layer sha256:0123456789ab of IMAGE"."""
    short = diff_id if len(diff_id) <= 19 else diff_id[:19]
    return f"layer {short} of {image}" if image else f"layer {short}"


__all__ = [
    "OPAQUE_XATTR",
    "UnpackStats",
    "clean_name",
    "label_for",
    "remove_tree",
    "unpack",
    "unpack_path",
]
