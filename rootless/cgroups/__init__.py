"""Container cgroups on cgroup v2 with a delegated subtree: detection, leaves, limits, freeze, kill, stats.

The engine's entry points::

    info = detect(root=None)                      # what the host offers (CgroupInfo); describe() for rl info
    enter_scope()                                 # systemd hosts: move rl into a delegated scope (optional,
                                                  # before joining the user namespace)
    leaf = prepare(container_id, Limits.parse(memory="32m"), mode="error")   # Leaf | None
    leaf.add_pid(pid) / leaf.open_procs()         # put the container's first process in
    leaf.update(Limits.parse(memory="64m"))
    leaf.freeze(); leaf.thaw(); leaf.kill(); leaf.stats(); leaf.oom_killed(); leaf.remove()
    Leaf.at(path)                                 # reopen from the path kept in the container's state
"""

from typing import TYPE_CHECKING, Any

from rootless.cgroups.detect import CgroupInfo, cgroup_version, detect, host_cgroup_version, problem
from rootless.cgroups.host import Host
from rootless.cgroups.limits import Limits, parse_size, shares_to_weight
from rootless.cgroups.manager import Leaf, Stats, cpu_percent, describe, no_cgroup, prepare

if TYPE_CHECKING:
    from rootless.cgroups.systemd import enter_scope

__all__ = [
    "CgroupInfo",
    "Host",
    "Leaf",
    "Limits",
    "Stats",
    "cgroup_version",
    "cpu_percent",
    "describe",
    "detect",
    "enter_scope",
    "host_cgroup_version",
    "no_cgroup",
    "parse_size",
    "prepare",
    "problem",
    "shares_to_weight",
]


def __getattr__(name: str) -> Any:
    """enter_scope on first use: rootless.cgroups.systemd (secrets, subprocess, shutil) costs ~4 ms to
    import, and `rl run` without limits never asks systemd for a scope."""
    if name == "enter_scope":
        from rootless.cgroups.systemd import enter_scope

        return enter_scope
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
