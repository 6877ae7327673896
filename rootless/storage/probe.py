"""Finding out which storage drivers work here, by trying them, with the answers cached in the store.

- native overlay: a forked child mounts a tiny overlay (two lowers, an upper on the store's
  filesystem), writes and deletes through it and unmounts. It does so in the namespace the caller
  is in when the caller may mount there (root in rl's user namespace: a new mount namespace only),
  else in a new user + mount namespace with the single mapping any user may write. A few ms.
- the store's filesystem: network and FUSE filesystems (statfs magic) cannot hold upper dirs, and
  the filesystem must take ``user.*`` xattrs (overlay's ``userxattr`` markers, fuse-overlayfs's own).
- fuse-overlayfs: installed, and /dev/fuse can be opened read-write.

The overlay and filesystem answers are cached in ``<store>/storage-probe.json`` under a key of the
kernel release and the store's filesystem (type and device): ``rl run`` does not probe again until
one of them changes. The fuse answer is not cached: it costs a stat and an open, and changes when
packages or device permissions do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import stat
from pathlib import Path
from typing import Any

from rootless.executables import which
from rootless.records import asdict, record
from rootless.runtime import syscalls as sc
from rootless.storage.driver import remove_tree

CACHE_FILE = "storage-probe.json"
CACHE_VERSION = 1
PROBE_TIMEOUT = 10.0
CAP_SYS_ADMIN = 21
SMB2_MAGIC_NUMBER = 0xFE534D42

# Filesystems that cannot hold overlay upper dirs for a rootless user.
UNSUITABLE_FS = {
    sc.NFS_SUPER_MAGIC: "NFS",
    sc.LUSTRE_SUPER_MAGIC: "Lustre",
    sc.GPFS_SUPER_MAGIC: "GPFS",
    sc.FUSE_SUPER_MAGIC: "a FUSE filesystem",
    sc.SMB_SUPER_MAGIC: "SMB",
    sc.CIFS_MAGIC_NUMBER: "CIFS",
    SMB2_MAGIC_NUMBER: "SMB2",
}


@record(frozen=True)
class ProbeResults:
    """Why each thing does not work here; None where it does."""

    overlay: str | None = None  # native overlayfs in a user namespace
    fuse_overlayfs: str | None = None  # the fuse-overlayfs program and /dev/fuse
    upper_fs: str | None = None  # the store's filesystem as home of upper dirs
    cached: bool = False

    def problem(self, driver: str) -> str | None:
        """Why ``driver`` cannot be used, or None."""
        if driver == "overlay":
            return self.upper_fs or self.overlay
        if driver == "fuse-overlayfs":
            return self.fuse_overlayfs or self.upper_fs
        return None


class Prober:
    """The real probes; tests substitute their own."""

    def __init__(self, syscalls: sc.Syscalls = sc.SYSCALLS) -> None:
        self.sys = syscalls

    def kernel(self) -> str:
        return os.uname().release

    def fs_type(self, path: Path) -> int:
        return self.sys.statfs_type(str(path))

    def upper_fs(self, store: Path, magic: int) -> str | None:
        name = UNSUITABLE_FS.get(magic)
        if name is not None:
            return f"the store {store} is on {name}, which cannot hold overlay upper dirs"
        return xattr_problem(store)

    def overlay(self, store: Path) -> str | None:
        return overlay_problem(store, self.sys)

    def fuse(self) -> str | None:
        return fuse_problem()


def fuse_problem() -> str | None:
    if which("fuse-overlayfs") is None:
        return "fuse-overlayfs is not installed"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc.strerror}"
    os.close(fd)
    return None


def xattr_problem(store: Path) -> str | None:
    import tempfile  # probes run once, then their results are cached

    try:
        fd, name = tempfile.mkstemp(prefix=".xattr-probe-", dir=store)
    except OSError as exc:
        return f"cannot write to the store {store}: {exc.strerror}"
    try:
        os.setxattr(fd, "user.rl.probe", b"1")
        if os.getxattr(fd, "user.rl.probe") != b"1":
            return f"the store's filesystem at {store} does not keep user xattrs"
    except OSError as exc:
        return f"the store's filesystem at {store} does not take user xattrs: {exc.strerror}"
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None


def _has_cap(syscalls: sc.Syscalls, cap: int) -> bool:
    try:
        effective, _, _ = syscalls.capget()
    except OSError:
        return False
    return bool(effective >> cap & 1)


def _overlay_child(base: str, new_userns: bool, uid: int, gid: int, syscalls: sc.Syscalls) -> None:
    """In the forked child: mount, use and unmount a tiny overlay. Raises on any failure."""
    if new_userns:
        syscalls.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
        for file, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{file}", "w") as f:
                f.write(text)
    else:
        syscalls.unshare(sc.CLONE_NEWNS)
    syscalls.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    os.chdir(base)
    merged = os.path.join(base, "m")
    syscalls.mount("overlay", merged, "overlay", 0, "lowerdir=l2:l1,upperdir=u,workdir=w,userxattr")
    try:
        with open(os.path.join(merged, "new"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(merged, "a"))
        st = os.lstat(os.path.join(base, "u", "a"))
        if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
            raise OSError(errno.EIO, "deleting a lower file left no whiteout in the upper dir")
        if not os.path.exists(os.path.join(base, "u", "new")):
            raise OSError(errno.EIO, "a file written through the mount is not in the upper dir")
    finally:
        syscalls.umount(merged, sc.MNT_DETACH)


def overlay_problem(store: Path, syscalls: sc.Syscalls = sc.SYSCALLS) -> str | None:
    """Try a native overlay mount with its upper dir in ``store``; why it failed, or None."""
    import tempfile

    try:
        base = tempfile.mkdtemp(prefix=".overlay-probe-", dir=store)
    except OSError as exc:
        return f"cannot write to the store {store}: {exc.strerror}"
    try:
        for d in ("l1", "l2", "u", "w", "m"):
            os.mkdir(os.path.join(base, d))
        for name in ("a", "b"):
            with open(os.path.join(base, "l1", name), "w") as f:
                f.write(name)
        new_userns = not _has_cap(syscalls, CAP_SYS_ADMIN)
        _ = syscalls.lib  # load libc before forking
        return _run_in_child(lambda: _overlay_child(base, new_userns, os.getuid(), os.getgid(), syscalls))
    finally:
        with contextlib.suppress(Exception):
            remove_tree(Path(base))


def _run_in_child(body: Any) -> str | None:
    """Run ``body`` in a forked child; its exception text, or None when it returned."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: only system calls from here, then _exit
        code = 0
        try:
            os.close(read_fd)
            body()
        except BaseException as exc:
            code = 1
            with contextlib.suppress(BaseException):
                os.write(write_fd, str(exc).encode(errors="replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        chunks = []
        while True:
            ready, _, _ = select.select([read_fd], [], [], PROBE_TIMEOUT)
            if not ready:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                chunks.append(b"the probe did not finish in time")
                break
            data = os.read(read_fd, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode(errors="replace")
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return f"overlayfs cannot be mounted in a user namespace here: {message or 'the probe failed'}"


# the cache


def cache_key(store: Path, prober: Prober) -> dict[str, Any]:
    st = os.stat(store)
    return {
        "version": CACHE_VERSION,
        "kernel": prober.kernel(),
        "fs": f"{prober.fs_type(store):#x}",
        "dev": st.st_dev,
    }


def read_cache(store: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads((store / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("results"), dict):
        return None
    return data["results"]


def write_cache(store: Path, key: dict[str, Any], results: dict[str, Any]) -> None:
    path = store / CACHE_FILE
    tmp = path.with_name(f".{CACHE_FILE}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({"key": key, "results": results}, indent=1) + "\n")
        os.replace(tmp, path)
    with contextlib.suppress(OSError):
        tmp.unlink()


def invalidate(store: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (store / CACHE_FILE).unlink()


def probe(store: Path, prober: Prober | None = None, refresh: bool = False) -> ProbeResults:
    """What works for a store at ``store`` (created when missing); cached in the store."""
    prober = prober or Prober()
    store = Path(os.path.abspath(store))
    try:
        store.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        reason = f"cannot create the store {store}: {exc.strerror}"
        return ProbeResults(overlay=reason, fuse_overlayfs=prober.fuse(), upper_fs=reason)
    key = cache_key(store, prober)
    cached = None if refresh else read_cache(store, key)
    if cached is not None:
        return ProbeResults(
            overlay=cached.get("overlay"), upper_fs=cached.get("upper_fs"), fuse_overlayfs=prober.fuse(), cached=True
        )
    upper_fs = prober.upper_fs(store, int(key["fs"], 16))
    overlay = prober.overlay(store) if upper_fs is None else None
    write_cache(store, key, {"overlay": overlay, "upper_fs": upper_fs})
    return ProbeResults(overlay=overlay, upper_fs=upper_fs, fuse_overlayfs=prober.fuse())


def results_json(results: ProbeResults) -> dict[str, Any]:
    return asdict(results)
