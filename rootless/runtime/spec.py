"""The container spec: plain data describing one container process, and builders for Docker's defaults.

Everything here is JSON-serialisable data without behaviour (``to_json``/``from_json`` round-trip it).
``rootless.runtime.rootfs`` plans the mounts from it and ``rootless.runtime.process`` starts the
process, the way podman's specgen produces an OCI spec that a runtime executes.
"""

from __future__ import annotations

import json
from typing import Any

from rootless.records import asdict, field, record
from rootless.runtime.capabilities import DEFAULT_CAPABILITIES, CapabilitySets, for_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby oci/defaults.go DefaultLinuxSpec: MaskedPaths and ReadonlyPaths
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
# the device nodes every container gets, bind-mounted from the host (mknod is not allowed in a userns)
DEFAULT_DEVICES: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                                    "/dev/tty")

MOUNT_TYPES = ("bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue")

# a namespace is "new" (create it), "host" (share rl's), or the path of one to join (/proc/PID/ns/net)
NEW = "new"
HOST = "host"


@record
class Mount:
    destination: str
    type: str  # one of MOUNT_TYPES
    source: str | None = None
    options: list[str] = field(default_factory=list)  # ro, nosuid, nodev, noexec, size=64m, mode=1777, ...


@record
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)


@record
class Namespaces:
    mount: str = NEW  # always new: the container gets its own root
    pid: str = NEW
    uts: str = NEW
    ipc: str = NEW
    net: str = NEW  # "new" is docker's --network none until a network driver connects it
    cgroup: str = NEW


@record
class Rlimit:
    type: str  # RLIMIT_NOFILE or nofile
    soft: int
    hard: int


@record
class ContainerSpec:
    rootfs: str  # where the storage driver mounted the image's root filesystem
    args: list[str]
    env: list[str] = field(default_factory=lambda: [f"PATH={DEFAULT_PATH}"])
    cwd: str = "/"
    user: User = field(default_factory=User)
    hostname: str | None = None
    namespaces: Namespaces = field(default_factory=Namespaces)
    mounts: list[Mount] = field(default_factory=lambda: default_mounts())
    devices: list[str] = field(default_factory=lambda: list(DEFAULT_DEVICES))
    masked_paths: list[str] = field(default_factory=lambda: list(DEFAULT_MASKED_PATHS))
    readonly_paths: list[str] = field(default_factory=lambda: list(DEFAULT_READONLY_PATHS))
    readonly_rootfs: bool = False
    capabilities: CapabilitySets = field(default_factory=lambda: for_user(DEFAULT_CAPABILITIES, 0))
    no_new_privs: bool = False  # docker's --security-opt no-new-privileges
    # None: unconfined; "default": Docker's default profile; a dict: a Docker-format profile
    seccomp: str | dict[str, Any] | None = "default"
    rlimits: list[Rlimit] = field(default_factory=list)
    tty: bool = False
    init: bool = False
    # container path -> host file rl prepared (bind-mounted): /etc/hosts, /etc/hostname, /etc/resolv.conf
    etc_files: dict[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    # a user namespace nested in rl's (--userns=keep-id): {"uid_map": text, "gid_map": text}, or None
    user_namespace: dict[str, str] | None = None


def default_mounts(new_ipc: bool = True, pts_gid: int | None = 5) -> list[Mount]:
    """Docker's default mounts (moby oci/defaults.go), minus the cgroup mount the cgroup code owns.

    ``pts_gid`` is the tty group given to /dev/pts; pass None when gid 5 is not mapped in the user
    namespace (the runtime also retries without it).
    """
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if pts_gid is not None:
        pts.append(f"gid={pts_gid}")
    mounts = [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts", pts),
        Mount("/sys", "sysfs", "sysfs", ["ro", "nosuid", "noexec", "nodev"]),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
    ]
    if new_ipc:
        mounts.append(Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]))
    return mounts


def to_json(spec: ContainerSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def from_dict(data: dict[str, Any]) -> ContainerSpec:
    data = dict(data)
    data["user"] = User(**data.get("user", {}))
    data["namespaces"] = Namespaces(**data.get("namespaces", {}))
    if "mounts" in data:
        data["mounts"] = [Mount(**m) for m in data["mounts"]]
    if "capabilities" in data:
        data["capabilities"] = CapabilitySets(**data["capabilities"])
    data["rlimits"] = [Rlimit(**r) for r in data.get("rlimits", [])]
    return ContainerSpec(**data)


def from_json(text: str) -> ContainerSpec:
    return from_dict(json.loads(text))
