"""The container's root filesystem: plan the mount operations from a spec, then apply them.

``plan(spec)`` returns a list of ``Op`` records (bubblewrap's SetupOp idea): plain data that unit tests
compare with expected lists. ``apply(ops, rootfs, sys)`` runs them in the container's new mount
namespace, as root of the user namespace, and raises ``RuntimeSetupError`` naming the operation and path:
``mount proc on /proc failed: operation not permitted``.

Rootless rules the executor follows (as rootless runc/crun do):
- mknod is not allowed in a user namespace: device nodes are bind-mounted from the host;
- sysfs can only be mounted in a network namespace the user namespace owns: otherwise (or on EPERM)
  the host's /sys is rbind-mounted and made read-only;
- a remount of a bind mount fails with EPERM unless it keeps the flags locked by the mount's owner
  (nosuid, nodev, noexec, atime): they are read with statvfs and kept;
- devpts refuses ``gid=5`` when gid 5 is unmapped: retried without it.
"""

from __future__ import annotations

import os
import re
import stat

from rootless.errors import RuntimeSetupError
from rootless.records import record
from rootless.runtime.securejoin import secure_join
from rootless.runtime.spec import NEW, ContainerSpec, Mount
from rootless.runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    Syscalls,
)

# mount option -> (flags to set, flags to clear)
_FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "mand": (MS_MANDLOCK, 0),
    "noatime": (MS_NOATIME, 0),
    "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0),
    "strictatime": (MS_STRICTATIME, 0),
    "bind": (MS_BIND, 0),
    "rbind": (MS_BIND | MS_REC, 0),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
# flags a remount must keep in a user namespace (statvfs f_flag bit -> mount flag)
_LOCKED = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
           (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
           (os.ST_RELATIME, MS_RELATIME))
_REMOUNT_FLAGS = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC


@record(frozen=True)
class Op:
    """One setup step. ``target`` is a path inside the container (resolved under the rootfs)."""

    kind: str  # see _APPLY
    target: str = "/"
    source: str | None = None
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    create: str | None = None  # make the mount point first: "dir", "file", or "auto" (like the source)


def parse_options(options: list[str]) -> tuple[int, int, str]:
    """Mount options -> (flags, propagation flags, filesystem data)."""
    flags = 0
    propagation = 0
    data = []
    for option in options:
        if option in _FLAG_OPTIONS:
            set_, clear = _FLAG_OPTIONS[option]
            flags = (flags | set_) & ~clear
        elif option in _PROPAGATION:
            propagation = _PROPAGATION[option]
        elif option:
            data.append(option)
    return flags, propagation, ",".join(data)


def _mount_ops(m: Mount, spec: ContainerSpec) -> list[Op]:
    flags, propagation, data = parse_options(m.options)
    dest = m.destination
    ops: list[Op] = []
    if m.type == "bind":
        if not m.source:
            raise RuntimeSetupError(f"bind mount on {dest} has no source")
        bind_flags = MS_BIND if "bind" in m.options else MS_BIND | MS_REC
        ops.append(Op("bind", dest, m.source, flags=bind_flags, create="auto"))
        if flags & _REMOUNT_FLAGS:
            ops.append(Op("remount", dest, flags=flags & _REMOUNT_FLAGS))
    elif m.type == "proc" and spec.namespaces.pid != NEW:
        # the kernel refuses a proc mount for a pid namespace our user namespace doesn't own
        ops.append(Op("bind", dest, "/proc", flags=MS_BIND | MS_REC, create="dir"))
    elif m.type == "sysfs":
        if spec.namespaces.net == NEW:
            ops.append(Op("mount", dest, m.source or "sysfs", "sysfs", flags, data or None, create="dir"))
        else:
            ops.append(Op("bind", dest, "/sys", flags=MS_BIND | MS_REC, create="dir"))
            if flags & MS_RDONLY:
                ops.append(Op("remount_rec", dest, flags=flags & _REMOUNT_FLAGS))
    elif m.type == "mqueue" and spec.namespaces.ipc != NEW:
        return []  # an mqueue mount needs an ipc namespace of our own
    elif m.type in ("tmpfs", "proc", "devpts", "mqueue"):
        ops.append(Op("mount", dest, m.source or m.type, m.type, flags, data or None, create="dir"))
    else:
        raise RuntimeSetupError(f"mount on {dest}: unsupported type {m.type!r}")
    if propagation:
        ops.append(Op("propagation", dest, flags=propagation))
    if dest == "/dev":
        ops.extend(_dev_ops(spec))
    return ops


def _dev_ops(spec: ContainerSpec) -> list[Op]:
    ops = [Op("bind", dev, dev, flags=MS_BIND, create="file") for dev in spec.devices]
    links = [("/dev/ptmx", "pts/ptmx"), ("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
             ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"),
             ("/dev/core", "/proc/kcore")]
    ops.extend(Op("symlink", path, target) for path, target in links)
    return ops


def plan(spec: ContainerSpec) -> list[Op]:
    """The setup operations for ``spec``, in order; the last ones run after pivot_root."""
    if spec.namespaces.mount != NEW:
        raise RuntimeSetupError("a container needs its own mount namespace")
    ops = [
        Op("propagation", "/", flags=MS_SLAVE | MS_REC),  # host mount events reach us, ours don't leak
        Op("bind_root"),  # pivot_root needs the new root to be a mount point
    ]
    for m in spec.mounts:
        ops.extend(_mount_ops(m, spec))
    for dest, source in sorted(spec.etc_files.items()):
        ops.append(Op("bind", dest, source, flags=MS_BIND, create="file"))
    ops.extend(Op("mask", path) for path in spec.masked_paths)
    for path in spec.readonly_paths:
        ops.append(Op("readonly", path))
    ops.append(Op("pivot_root"))
    if spec.readonly_rootfs:
        ops.append(Op("readonly_root"))
    return ops


# ---- executor ----------------------------------------------------------------------------------------


def _why(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)


def describe(op: Op) -> str:
    """How an operation reads in an error message: ``mount proc on /proc``."""
    match op.kind:
        case "mount":
            return f"mount {op.fstype} on {op.target}"
        case "bind":
            return f"bind {op.source} on {op.target}"
        case "remount" | "remount_rec" | "readonly":
            return f"make {op.target} read-only"
        case "readonly_root":
            return "make the root filesystem read-only"
        case "mask":
            return f"mask {op.target}"
        case "symlink":
            return f"symlink {op.target} -> {op.source}"
        case "propagation":
            return f"set mount propagation of {op.target}"
        case "bind_root":
            return "bind the root filesystem"
        case "pivot_root":
            return "pivot_root"
    return f"{op.kind} {op.target}"


def locked_flags(path: str) -> int:
    """The mount flags of ``path``'s mount that a remount in a user namespace must keep."""
    f_flag = os.statvfs(path).f_flag
    return sum(ms for st, ms in _LOCKED if f_flag & st)


def _make_point(path: str, kind: str | None, source: str | None) -> None:
    if kind is None:
        return
    if kind == "auto":  # like the source, which must exist (FileNotFoundError names the failure)
        kind = "dir" if source is None or stat.S_ISDIR(os.stat(source).st_mode) else "file"
    if kind == "dir":
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644))


def _mountinfo_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if "\\" in point:  # octal escapes: \040 is a space
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            points.append(point)
    return points


def _under(points: list[str], path: str) -> list[str]:
    prefix = path.rstrip("/") + "/"
    return [p for p in points if p == path or p.startswith(prefix)]


class Executor:
    """Applies ops under ``rootfs``; ``sys`` is the syscall seam (a recording fake in unit tests)."""

    def __init__(self, rootfs: str, sys: Syscalls) -> None:
        self.rootfs = os.path.realpath(rootfs)
        self.sys = sys
        self.pivoted = False
        # The mount table, read once for a run of readonly ops (docker's five paths): every other op
        # may mount something and forgets it; a readonly op adds the one mount it makes.
        self._points: list[str] | None = None

    def path(self, target: str) -> str:
        return secure_join("/" if self.pivoted else self.rootfs, target)

    def apply(self, ops: list[Op]) -> None:
        for op in ops:
            if op.kind != "readonly":
                self._points = None
            try:
                getattr(self, f"_op_{op.kind}")(op)
            except OSError as e:
                raise RuntimeSetupError(f"{describe(op)} failed: {_why(e)}") from None

    def _remount(self, path: str, flags: int) -> None:
        self.sys.mount(None, path, None, MS_REMOUNT | MS_BIND | flags | locked_flags(path))

    def _op_propagation(self, op: Op) -> None:
        target = "/" if op.target == "/" and not self.pivoted else self.path(op.target)
        self.sys.mount(None, target, None, op.flags)

    def _op_bind_root(self, op: Op) -> None:
        self.sys.mount(self.rootfs, self.rootfs, None, MS_BIND | MS_REC)

    def _op_mount(self, op: Op) -> None:
        path = self.path(op.target)
        _make_point(path, op.create, None)
        try:
            self.sys.mount(op.source, path, op.fstype, op.flags, op.data)
        except OSError as e:
            if op.fstype == "sysfs" and e.errno == 1:  # EPERM: no netns of our own; use the host's
                self.sys.mount("/sys", path, None, MS_BIND | MS_REC)
                if op.flags & MS_RDONLY:
                    self._op_remount_rec(Op("remount_rec", op.target, flags=op.flags & _REMOUNT_FLAGS))
                return
            if op.fstype == "devpts" and e.errno == 22 and op.data and "gid=" in op.data:
                data = ",".join(o for o in op.data.split(",") if not o.startswith("gid="))
                self.sys.mount(op.source, path, op.fstype, op.flags, data)
                return
            raise

    def _op_bind(self, op: Op) -> None:
        assert op.source is not None
        path = self.path(op.target)
        _make_point(path, op.create, op.source)
        self.sys.mount(op.source, path, None, op.flags)

    def _op_remount(self, op: Op) -> None:
        self._remount(self.path(op.target), op.flags)

    def _mount_points(self) -> list[str]:
        if self._points is None:
            self._points = _mountinfo_points()
        return self._points

    def _op_remount_rec(self, op: Op) -> None:
        for point in _under(_mountinfo_points(), self.path(op.target)):
            self._remount(point, op.flags)

    def _op_symlink(self, op: Op) -> None:
        assert op.source is not None
        path = self.path(op.target)
        if os.path.lexists(path):
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(op.source, path)

    def _op_mask(self, op: Op) -> None:
        path = self.path(op.target)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.sys.mount("tmpfs", path, "tmpfs", MS_RDONLY, None)
        else:
            self.sys.mount("/dev/null", path, None, MS_BIND)

    def _op_readonly(self, op: Op) -> None:
        path = self.path(op.target)
        if not os.path.exists(path):
            return
        points = self._mount_points()
        self.sys.mount(path, path, None, MS_BIND | MS_REC)
        if path not in points:
            points.append(path)
        for point in _under(points, path):
            self._remount(point, MS_RDONLY)

    def _op_pivot_root(self, op: Op) -> None:
        os.chdir(self.rootfs)
        self.sys.pivot_root(".", ".")
        # the old root is now stacked on "."; detach it (it is rslave, so nothing propagates back)
        self.sys.umount(".", MNT_DETACH)
        os.chdir("/")
        self.pivoted = True

    def _op_readonly_root(self, op: Op) -> None:
        self._remount("/", MS_RDONLY)


def apply(ops: list[Op], rootfs: str, sys: Syscalls) -> None:
    Executor(rootfs, sys).apply(ops)


def write_etc_files(directory: str, hostname: str, hosts: str | None = None,
                    resolv_conf: str | None = None) -> dict[str, str]:
    """Write /etc/hostname, /etc/hosts and /etc/resolv.conf for a container; returns ``etc_files``."""
    os.makedirs(directory, exist_ok=True)
    contents = {
        "/etc/hostname": f"{hostname}\n",
        "/etc/hosts": hosts if hosts is not None else (
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n"),
    }
    if resolv_conf is not None:
        contents["/etc/resolv.conf"] = resolv_conf
    files = {}
    for dest, text in contents.items():
        path = os.path.join(directory, os.path.basename(dest))
        with open(path, "w") as f:
            f.write(text)
        files[dest] = path
    return files
