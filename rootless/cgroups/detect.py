"""Which cgroup layout the host has, read from /proc/self/mountinfo."""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"


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
