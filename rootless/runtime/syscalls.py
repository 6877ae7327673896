"""The Linux system calls the standard library lacks: the only module in rl that uses ctypes.

Every call checks its result and raises ``OSError`` with errno and the call's arguments, so callers
can turn it into a one-line message. ``Syscalls`` is the seam: the runtime takes an instance, the
real one is ``SYSCALLS``, and unit tests pass a recording fake.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

# clone(2) / unshare(2) / setns(2) flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags
MNT_FORCE = 1
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

# statfs f_type magic numbers
OVERLAYFS_SUPER_MAGIC = 0x794C7630
TMPFS_MAGIC = 0x01021994
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x27E0EB
NFS_SUPER_MAGIC = 0x6969
FUSE_SUPER_MAGIC = 0x65735546
LUSTRE_SUPER_MAGIC = 0x0BD00BD0
GPFS_SUPER_MAGIC = 0x47504653
SMB_SUPER_MAGIC = 0x517B
CIFS_MAGIC_NUMBER = 0xFF534D42
BTRFS_SUPER_MAGIC = 0x9123683E
XFS_SUPER_MAGIC = 0x58465342
EXT4_SUPER_MAGIC = 0xEF53

_SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "setns": 308, "capget": 125, "capset": 126, "seccomp": 317},
    "aarch64": {"pivot_root": 41, "setns": 268, "capget": 90, "capset": 91, "seccomp": 277},
}


class _Statfs(ctypes.Structure):
    # struct statfs on 64-bit Linux
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _libc() -> ctypes.CDLL:
    # glibc's soname first: find_library runs a subprocess or scans ld caches (~4 ms per command)
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library  # subprocess and shutil: only without glibc's soname

        return ctypes.CDLL(find_library("c") or "libc.so", use_errno=True)


def _encode(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    return os.fsencode(value)


class Syscalls:
    """The real system calls. Methods raise OSError(errno, 'call(args): strerror')."""

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._numbers = _SYSCALL_NUMBERS.get(os.uname().machine, {})

    @property
    def lib(self) -> ctypes.CDLL:
        if self._lib is None:
            self._lib = _libc()
        return self._lib

    def _check(self, result: int, call: str) -> int:
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{call}: {os.strerror(err)}")
        return result

    def _syscall(self, name: str, *args: Any) -> int:
        number = self._numbers.get(name)
        if number is None:
            raise OSError(38, f"{name}: not supported on {os.uname().machine}")  # ENOSYS
        return int(self.lib.syscall(ctypes.c_long(number), *args))

    # namespaces
    def unshare(self, flags: int) -> None:
        self._check(self.lib.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._check(self.lib.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd}, {nstype:#x})")

    # mounts
    def mount(
        self,
        source: str | None,
        target: str,
        fstype: str | None = None,
        flags: int = 0,
        data: str | None = None,
    ) -> None:
        result = self.lib.mount(
            _encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)
        )
        self._check(result, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")

    def umount(self, target: str, flags: int = 0) -> None:
        self._check(self.lib.umount2(_encode(target), ctypes.c_int(flags)), f"umount2({target!r}, {flags})")

    def pivot_root(self, new_root: str, put_old: str) -> None:
        result = self._syscall("pivot_root", _encode(new_root), _encode(put_old))
        self._check(result, f"pivot_root({new_root!r}, {put_old!r})")

    def statfs_type(self, path: str) -> int:
        buf = _Statfs()
        self._check(self.lib.statfs(_encode(path), ctypes.byref(buf)), f"statfs({path!r})")
        return int(buf.f_type) & 0xFFFFFFFF

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self.lib.sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname({name!r})")

    # process attributes
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        result = self.lib.prctl(
            ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4),
            ctypes.c_ulong(arg5),
        )
        return self._check(result, f"prctl({option}, {arg2}, {arg3})")

    def set_no_new_privs(self) -> None:
        self.prctl(PR_SET_NO_NEW_PRIVS, 1)

    def set_pdeathsig(self, signum: int) -> None:
        self.prctl(PR_SET_PDEATHSIG, signum)

    def set_child_subreaper(self) -> None:
        self.prctl(PR_SET_CHILD_SUBREAPER, 1)

    def set_name(self, name: str) -> None:
        buf = ctypes.create_string_buffer(name.encode()[:15])
        result = self.lib.prctl(ctypes.c_int(PR_SET_NAME), buf, ctypes.c_ulong(0), ctypes.c_ulong(0),
                                ctypes.c_ulong(0))
        self._check(result, f"prctl(PR_SET_NAME, {name!r})")

    def capbset_drop(self, cap: int) -> None:
        self.prctl(PR_CAPBSET_DROP, cap)

    def capbset_read(self, cap: int) -> bool:
        return self.prctl(PR_CAPBSET_READ, cap) == 1

    def ambient_clear(self) -> None:
        self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    def ambient_raise(self, cap: int) -> None:
        self.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)

    def capget(self, pid: int = 0) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) as 64-bit masks."""
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
        data = (_CapData * 2)()
        self._check(self._syscall("capget", ctypes.byref(header), data), f"capget({pid})")
        return (
            data[0].effective | data[1].effective << 32,
            data[0].permitted | data[1].permitted << 32,
            data[0].inheritable | data[1].inheritable << 32,
        )

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in (0, 1):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        self._check(self._syscall("capset", ctypes.byref(header), data), "capset")

    def seccomp_load(self, program: list[tuple[int, int, int, int]], flags: int = 0) -> None:
        """Install a classic BPF filter given as (code, jt, jf, k) tuples."""
        filters = (_SockFilter * len(program))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in program])
        prog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
        # seccomp(SECCOMP_SET_MODE_FILTER=1, flags, prog)
        self._check(self._syscall("seccomp", ctypes.c_uint(1), ctypes.c_uint(flags), ctypes.byref(prog)),
                    "seccomp(SECCOMP_SET_MODE_FILTER)")


SYSCALLS = Syscalls()
