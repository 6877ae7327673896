"""What the host's cgroups offer this user: the layout, the user's own cgroup, and a delegated subtree.

``host_cgroup_version()`` / ``cgroup_version(mountinfo)`` give the layout for ``rl info``. ``detect()``
goes further: the cgroup v2 layout by statfs of /sys/fs/cgroup (mountinfo when statfs fails), the
user's cgroup from the ``0::`` line of /proc/self/cgroup, the delegated subtree (a cgroup the user
owns, with its cgroup.procs, cgroup.subtree_control and cgroup.threads) that contains it, and the
controllers there. ``problem()`` turns a detection that can't serve some limits into a ``HostError``
naming what is missing and the admin's fix.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from rootless.cgroups.host import CGROUP_ROOT, Host
from rootless.errors import HostError
from rootless.records import field, record

# The controllers rl uses, and the ones an admin should delegate.
RL_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")
DELEGATE_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
HELPER = "helpers/enable-cgroup-delegation.sh"
DROP_IN = "/etc/systemd/system/user@.service.d/delegate.conf"
DELEGATE_LINE = "Delegate=" + " ".join(RL_CONTROLLERS)
ROOT_ENV = "RL_CGROUP_ROOT"  # a delegated subtree chosen by the user (absolute /sys/fs/cgroup/... path)

_CGROUP2_SUPER_MAGIC = 0x63677270
_TMPFS_MAGIC = 0x01021994


def mounts(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs from a mountinfo text."""
    result = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        fstype = right.split()[0] if right.split() else ""
        result.append((fields[4].replace("\\040", " "), fstype))
    return result


def cgroup_version(mountinfo: str) -> str:
    """"v2" (unified), "hybrid" (v1 controllers plus a cgroup2 mount), "v1", or "none"."""
    table = mounts(mountinfo)
    types_at_root = [t for m, t in table if m == CGROUP_ROOT]
    if types_at_root and types_at_root[-1] == "cgroup2":
        return "v2"
    under = [t for m, t in table if m.startswith(CGROUP_ROOT + "/")]
    if "cgroup" in under:
        return "hybrid" if "cgroup2" in under else "v1"
    return "none"


def host_cgroup_version(mountinfo_path: Path = Path("/proc/self/mountinfo")) -> str:
    try:
        return cgroup_version(mountinfo_path.read_text())
    except OSError:
        return "none"


def _magics() -> tuple[int, int]:
    try:
        from rootless.runtime import syscalls
    except ImportError:  # pragma: no cover - syscalls is always there; keep detection standalone
        return _CGROUP2_SUPER_MAGIC, _TMPFS_MAGIC
    return syscalls.CGROUP2_SUPER_MAGIC, syscalls.TMPFS_MAGIC


def layout(host: Host) -> tuple[str, str | None]:
    """(version, where cgroup2 is mounted or None). statfs first, mountinfo when statfs can't answer."""
    cgroup2, tmpfs = _magics()
    try:
        kind = host.statfs_type(CGROUP_ROOT)
    except OSError:
        kind = None
    if kind == cgroup2:
        return "v2", CGROUP_ROOT
    if kind == tmpfs:
        try:
            unified = host.statfs_type(CGROUP_ROOT + "/unified") == cgroup2
        except OSError:
            unified = False
        v1_dirs = [d for d in host.listdir(CGROUP_ROOT) if d != "unified"]
        if unified:
            return "hybrid", CGROUP_ROOT + "/unified"
        return ("v1" if v1_dirs else "none"), None
    # statfs failed or answered something unexpected: read the mount table.
    table = mounts(host.read_or("/proc/self/mountinfo"))
    version = cgroup_version(host.read_or("/proc/self/mountinfo"))
    if version == "v2":
        return "v2", CGROUP_ROOT
    if version == "hybrid":
        return "hybrid", next(m for m, t in table if t == "cgroup2" and m.startswith(CGROUP_ROOT + "/"))
    return version, None


def own_cgroup(host: Host) -> str | None:
    """The ``0::/path`` entry of /proc/self/cgroup (the cgroup v2 membership), or None."""
    for line in host.read_or("/proc/self/cgroup").splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def v1_controllers(host: Host) -> list[str]:
    """Controllers on cgroup v1 hierarchies, from /proc/self/cgroup ("4:memory:/x" lines)."""
    names: set[str] = set()
    for line in host.read_or("/proc/self/cgroup").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] != "0" and parts[1]:
            names.update(n for n in parts[1].split(",") if not n.startswith("name="))
    return sorted(names)


def controllers(host: Host, directory: str) -> list[str]:
    return host.read_or(f"{directory}/cgroup.controllers").split()


def subtree_control(host: Host, directory: str) -> list[str]:
    return host.read_or(f"{directory}/cgroup.subtree_control").split()


def not_owned(host: Host, directory: str, uid: int) -> list[str]:
    """The parts of a delegation (the directory and DELEGATE_FILES) that ``uid`` does not own."""
    missing = []
    if host.owner(directory) != uid:
        missing.append(directory)
    for name in DELEGATE_FILES:
        if host.owner(f"{directory}/{name}") != uid:
            missing.append(f"{directory}/{name}")
    return missing


def _join(mount: str, cgroup: str) -> str:
    return mount if cgroup in ("", "/") else mount + "/" + cgroup.strip("/")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER") or str(uid)


@record
class CgroupInfo:
    """What ``detect`` found. ``delegated`` is a directory (absolute host path) the user may manage."""

    version: str  # "v2", "hybrid", "v1", "none"
    mount: str | None  # the cgroup2 mount point
    own: str | None  # the user's cgroup v2 path (/proc/self/cgroup "0::" line)
    own_dir: str | None  # the same as a directory under the mount
    delegated: str | None  # the delegated subtree's root directory, or None
    controllers: list[str] = field(default_factory=list)  # cgroup.controllers at ``delegated``
    enabled: list[str] = field(default_factory=list)  # cgroup.subtree_control at ``delegated``
    mount_controllers: list[str] = field(default_factory=list)  # cgroup.controllers at the cgroup2 mount
    v1_controllers: list[str] = field(default_factory=list)
    why_not: str | None = None  # why nothing is delegated (for messages)
    systemd: bool = False  # systemd is the host's init
    user_bus: bool = False  # a systemd user bus exists (a transient scope could be asked for)
    user: str = ""

    @property
    def usable(self) -> bool:
        return self.version == "v2" and self.delegated is not None

    def describe(self) -> dict[str, object]:
        return {
            "version": self.version,
            "mount": self.mount,
            "ownCgroup": self.own,
            "delegated": self.delegated,
            "controllers": [c for c in self.controllers if c in RL_CONTROLLERS] if self.delegated else [],
            "problem": None if self.delegated else self.why_not,
        }


def user_bus(host: Host) -> bool:
    address = host.env.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        return host.exists(address[len("unix:path=") :].split(",")[0])
    if address:
        return True
    runtime = host.env.get("XDG_RUNTIME_DIR")
    return bool(runtime) and host.exists(f"{runtime}/bus")


def detect(host: Host | None = None, root: str | None = None) -> CgroupInfo:
    """Find the delegated subtree. ``root``: the subtree the engine or the user chose (absolute path
    under /sys/fs/cgroup, or a cgroup path relative to the mount); default $RL_CGROUP_ROOT, else the
    highest cgroup the user owns on the way up from the user's own cgroup."""
    host = host or Host()
    version, mount = layout(host)
    own = own_cgroup(host)
    info = CgroupInfo(
        version=version,
        mount=mount,
        own=own,
        own_dir=_join(mount, own) if mount and own else None,
        delegated=None,
        v1_controllers=v1_controllers(host) if version in ("v1", "hybrid") else [],
        systemd=host.sd_booted(),
        user_bus=user_bus(host),
        user=_user_name(host.uid),
    )
    if mount:
        info.mount_controllers = controllers(host, mount)
    if version != "v2" or mount is None:
        info.why_not = f"the host has a {version} cgroup layout"
        return info
    if own is None or info.own_dir is None:
        info.why_not = "/proc/self/cgroup has no cgroup v2 entry"
        return info
    chosen = root or host.env.get(ROOT_ENV) or None
    if chosen:
        directory = chosen if chosen.startswith(mount + "/") or chosen == mount else _join(mount, chosen)
        directory = directory.rstrip("/")
        missing = not_owned(host, directory, host.uid)
        if missing:
            if not host.exists(directory):
                info.why_not = f"the chosen cgroup {directory} does not exist"
            else:
                info.why_not = (
                    f"the chosen cgroup {directory} is not delegated to {info.user} ({missing[0]} is not theirs)"
                )
            return info
        if not (info.own_dir == directory or info.own_dir.startswith(directory + "/")):
            info.why_not = (
                f"rl runs in {info.own_dir}, outside the chosen cgroup {directory}, and cannot move into it"
            )
            return info
        info.delegated = directory
    else:
        directory = info.own_dir
        if not_owned(host, directory, host.uid):
            info.why_not = f"rl runs in {directory}, which is not delegated to {info.user}"
            return info
        relative = directory[len(mount) :].strip("/").split("/")
        if any(part.startswith("user@") and part.endswith(".service") for part in relative):
            # A systemd user manager's tree: only a scope with Delegate=yes is ours to change, and rl
            # only knows that of the scopes it asked for (rl-*.scope, see rootless.cgroups.systemd).
            scopes = [i for i, part in enumerate(relative) if part.startswith("rl-") and part.endswith(".scope")]
            if not scopes:
                info.why_not = f"rl runs in {directory}, which systemd manages and has not delegated to rl"
                return info
            directory = _join(mount, "/".join(relative[: scopes[-1] + 1]))
        else:
            # Climb while the parent is delegated too: the delegated subtree's root.
            while directory != mount:
                parent = directory.rsplit("/", 1)[0]
                if parent == mount or not_owned(host, parent, host.uid):
                    break
                directory = parent
        info.delegated = directory
    info.controllers = controllers(host, info.delegated)
    info.enabled = subtree_control(host, info.delegated)
    return info


# ---------------------------------------------------------------- what to tell the user and the admin


def _flags(limit_flags: list[str]) -> str:
    return ", ".join(limit_flags) if limit_flags else "resource limits"


def fix_hint(info: CgroupInfo) -> str:
    """The admin's fix for a v2 host without a (complete) delegation."""
    user = info.user or "USER"
    if info.systemd:
        return (
            f"an admin can run 'sudo {HELPER} {user}' (it writes {DROP_IN} with '{DELEGATE_LINE}'"
            " under [Service] and runs systemctl daemon-reload), then log in again"
        )
    return (
        f"an admin can run 'sudo {HELPER} --manual {user}' (it creates /sys/fs/cgroup/rl-{user}, enables"
        f" {' '.join(RL_CONTROLLERS)} and chowns it to {user}) and start {user}'s session inside it"
        f" (echo PID > /sys/fs/cgroup/rl-{user}/cgroup.procs), or set {ROOT_ENV} to a cgroup delegated by hand"
    )


_BOOT_FIX = (
    "an admin must boot the host with 'systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all' on the kernel"
    f" command line, then run 'sudo {HELPER} USER'; or set limits.without_cgroup = \"warn\" to run without limits"
)


def problem(info: CgroupInfo, need: list[str], limit_flags: list[str]) -> HostError | None:
    """Why the limits given by ``limit_flags`` (needing controllers ``need``) can't be applied, or None."""
    what = f"cannot apply {_flags(limit_flags)}"
    boot_fix = _BOOT_FIX.replace("USER", info.user or "USER")
    if info.version == "v1":
        have = ", ".join(info.v1_controllers) or "all controllers"
        return HostError(
            f"{what}: this host has only cgroup v1 ({have}), which cannot be delegated to {info.user or 'a user'}",
            boot_fix,
        )
    if info.version == "hybrid":
        held = [c for c in info.mount_controllers if c in RL_CONTROLLERS]
        lacking = [c for c in need if c not in held] or need
        on_v1 = [c for c in lacking if c in info.v1_controllers]
        verb = "is" if len(on_v1) == 1 else "are"
        where = f"{', '.join(on_v1)} {verb} on cgroup v1 hierarchies and " if on_v1 else ""
        only = f" (it has only {' '.join(info.mount_controllers)})" if info.mount_controllers else ""
        return HostError(
            f"{what}: this host has a hybrid cgroup layout: {where}its cgroup v2 mount {info.mount}"
            f" holds {'none of them' if on_v1 else 'no delegated subtree'}{only}",
            boot_fix,
        )
    if info.version != "v2":
        return HostError(f"{what}: no cgroup filesystem is mounted at {CGROUP_ROOT}", boot_fix)
    if info.delegated is None:
        return HostError(
            f"{what}: cgroup v2 has no subtree delegated to {info.user}: {info.why_not}", fix_hint(info)
        )
    missing = [c for c in need if c not in info.controllers]
    if missing:
        have = " ".join(c for c in info.controllers if c in RL_CONTROLLERS) or "none"
        names = " ".join(missing)
        word = "controller" if len(missing) == 1 else "controllers"
        return HostError(
            f"{what}: {word} {names} not enabled in the delegated cgroup {info.delegated} (it has: {have})",
            fix_hint(info),
        )
    return None
