"""User namespaces: what the host allows, and joining an existing namespace in-process.

rl keeps one user namespace per user alive in a pause process (``rootless.runtime.pause``). This
module holds the pieces that do not depend on that process: the sysctls that forbid unprivileged
user namespaces (with the admin's fix), turning a failed ``unshare(CLONE_NEWUSER)`` into one typed
error, the ``NamespaceInfo`` the rest of rl reads, and the ``setns`` sequence itself.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from rootless.errors import HostError, RuntimeSetupError
from rootless.records import field, record
from rootless.runtime import idmap
from rootless.runtime.syscalls import CLONE_NEWNS, CLONE_NEWUSER, SYSCALLS, Syscalls

# ---------------------------------------------------------------- host sysctls

SysctlReader = Callable[[str], "str | None"]


def read_proc_sys(name: str) -> str | None:
    """The value of sysctl ``name`` ("user.max_user_namespaces"), or None when the kernel lacks it."""
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _sysctl_fix(name: str, value: str) -> str:
    return (
        f"ask the admin to run 'sysctl -w {name}={value}' and to make it permanent with a file in "
        f"/etc/sysctl.d/ (e.g. echo '{name}={value}' > /etc/sysctl.d/90-rl-userns.conf)"
    )


@record(frozen=True)
class HostProblem:
    """Something on the host that stops rl from creating user namespaces."""

    sysctl: str
    value: str
    message: str
    hint: str

    def error(self) -> HostError:
        return HostError(self.message, self.hint)


def userns_problems(read: SysctlReader | None = None) -> list[HostProblem]:
    """The sysctls that forbid unprivileged user namespaces on this host (empty: none do).
    ``read`` (tests) maps a sysctl name to its value or None; default: /proc/sys."""
    read = read or read_proc_sys
    problems = []
    value = read("user.max_user_namespaces")
    if value is not None and value.isdigit() and int(value) == 0:
        problems.append(
            HostProblem(
                "user.max_user_namespaces", value,
                "user namespaces are disabled: user.max_user_namespaces is 0",
                _sysctl_fix("user.max_user_namespaces", "15000"),
            )
        )
    value = read("kernel.unprivileged_userns_clone")  # Debian and old Ubuntu kernels
    if value == "0":
        problems.append(
            HostProblem(
                "kernel.unprivileged_userns_clone", value,
                "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone is 0",
                _sysctl_fix("kernel.unprivileged_userns_clone", "1"),
            )
        )
    value = read("kernel.apparmor_restrict_unprivileged_userns")  # Ubuntu 23.10 and later
    if value == "1":
        problems.append(
            HostProblem(
                "kernel.apparmor_restrict_unprivileged_userns", value,
                "AppArmor restricts unprivileged user namespaces: "
                "kernel.apparmor_restrict_unprivileged_userns is 1",
                _sysctl_fix("kernel.apparmor_restrict_unprivileged_userns", "0")
                + ", or to add an AppArmor profile with 'userns,' for the Python interpreter that runs rl",
            )
        )
    return problems


def diagnose_unshare_failure(err: int, read: SysctlReader | None = None) -> HostError | RuntimeSetupError:
    """One error for ``unshare(CLONE_NEWUSER)`` failing with errno ``err``, naming the sysctl to fix."""
    read = read or read_proc_sys
    what = f"cannot create a user namespace: unshare(CLONE_NEWUSER) failed with {errno.errorcode.get(err, err)}"
    problems = userns_problems(read)
    if err in (errno.EPERM, errno.EACCES, errno.ENOSPC) and problems:
        p = problems[0]
        return HostError(f"{what}: {p.message[0].lower()}{p.message[1:]}", p.hint)
    if err == errno.ENOSPC:
        limit = read("user.max_user_namespaces") or "?"
        return HostError(
            f"{what}: the limit of user.max_user_namespaces={limit} namespaces is reached",
            "stop some containers or " + _sysctl_fix("user.max_user_namespaces", "15000"),
        )
    if err == errno.EUSERS:
        return HostError(f"{what}: user namespaces are nested 32 deep", "run rl outside of nested containers")
    if err in (errno.EPERM, errno.EACCES):
        return HostError(
            f"{what}: the kernel refused though no sysctl forbids it",
            "rl may be running in a container or chroot, or under a seccomp or LSM policy that forbids "
            "unshare; run it directly on the host or ask the admin to allow user namespaces",
        )
    if err == errno.EINVAL:
        return RuntimeSetupError(f"{what}: the process has threads", "this is a bug in rl: please report it")
    return RuntimeSetupError(f"{what}: {os.strerror(err)}")


def diagnose_setup_failure(what: str, err: int | None, read: SysctlReader | None = None) -> HostError | None:
    """For a step after unshare that failed with EPERM/EACCES (writing maps, setresuid, mounting):
    the AppArmor restriction lets unshare succeed but takes the capabilities away inside, so name it
    when it is on. None when no sysctl explains the failure."""
    if err not in (errno.EPERM, errno.EACCES):
        return None
    for p in userns_problems(read):
        if p.sysctl == "kernel.apparmor_restrict_unprivileged_userns":
            return HostError(f"{what}: {os.strerror(err)}: {p.message[0].lower()}{p.message[1:]}", p.hint)
    return None


# ---------------------------------------------------------------- the namespace rl works in


@record(frozen=True)
class NamespaceInfo:
    """The user namespace rl joined (or would join): who is who, for rl info and the storage."""

    pause_pid: int
    uid_map: idmap.IdMap
    gid_map: idmap.IdMap
    single_id: bool  # only the user's own ids are mapped: the storage must flatten ownership to 0
    single_reason: str | None = None  # why single-ID mode, for rl info
    host_uid: int = 0
    host_gid: int = 0
    subuid: list[idmap.IdRange] = field(default_factory=list)
    subgid: list[idmap.IdRange] = field(default_factory=list)

    @property
    def uid_count(self) -> int:
        """Container uids 0..uid_count-1 exist."""
        return self.uid_map.size

    @property
    def gid_count(self) -> int:
        return self.gid_map.size

    def host_uid_of(self, container_uid: int) -> int | None:
        return self.uid_map.to_outer(container_uid)

    def host_gid_of(self, container_gid: int) -> int | None:
        return self.gid_map.to_outer(container_gid)


def thread_count() -> int:
    """Threads of this process, C threads included (the kernel refuses setns/unshare of a user
    namespace to a multi-threaded caller)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def ns_inode(pid: int | str, kind: str) -> int:
    """The inode number identifying a process's namespace (``kind``: "user", "mnt", ...)."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


class NamespaceGone(Exception):
    """The process holding the namespaces exited or is not the one recorded (retry ensure)."""


def join_namespaces(
    pid: int,
    user_ino: int,
    mnt_ino: int,
    still_ours: Callable[[], bool],
    sys: Syscalls = SYSCALLS,
) -> None:
    """setns into ``pid``'s user namespace, then its mount namespace; restore the working directory.

    The namespace files are opened first and checked against the recorded inodes, and ``still_ours``
    (start time check) runs after opening, so a recycled pid cannot slip in. Raises NamespaceGone
    before anything changed when the process is not there any more; RuntimeSetupError otherwise.
    """
    threads = thread_count()
    if threads > 1:
        raise RuntimeSetupError(
            f"cannot join the user namespace of pause process {pid}: rl has {threads} threads",
            "this is a bug in rl: namespaces must be joined before any thread starts",
        )
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    fds: list[int] = []
    try:
        try:
            for kind in ("user", "mnt"):
                fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
        except (FileNotFoundError, ProcessLookupError):
            raise NamespaceGone(f"pause process {pid} is gone") from None
        except PermissionError as e:
            raise NamespaceGone(f"pause process {pid} is not ours: {e.strerror}") from None
        ufd, mfd = fds
        if os.fstat(ufd).st_ino != user_ino or os.fstat(mfd).st_ino != mnt_ino or not still_ours():
            raise NamespaceGone(f"pid {pid} is no longer the pause process")
        try:
            sys.setns(ufd, CLONE_NEWUSER)
        except OSError as e:
            raise RuntimeSetupError(
                f"cannot join the user namespace of pause process {pid}: setns failed: {os.strerror(e.errno or 0)}",
                "run 'rl system migrate' and try again",
            ) from None
        try:
            sys.setns(mfd, CLONE_NEWNS)
        except OSError as e:
            raise RuntimeSetupError(
                f"cannot join the mount namespace of pause process {pid}: setns failed: "
                f"{os.strerror(e.errno or 0)}",
                "run 'rl system migrate' and try again",
            ) from None
    finally:
        for fd in fds:
            os.close(fd)
    # setns(CLONE_NEWNS) moved root and cwd to the namespace's root: go back to the same path.
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError as e:
            raise RuntimeSetupError(
                f"cannot return to the working directory {cwd} after joining the mount namespace: {e.strerror}",
                "run rl from a directory you can reach",
            ) from None
    if os.getuid() != 0:
        raise RuntimeSetupError(
            f"joined the user namespace of pause process {pid} but uid is {os.getuid()}, not 0",
            "run 'rl system migrate' and try again",
        )
