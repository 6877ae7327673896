"""Facts about the host that rl works with, for ``rl info``."""

from __future__ import annotations

import os
import platform
import pwd
from pathlib import Path
from typing import Any

from rootless import __version__
from rootless.cgroups.detect import host_cgroup_version
from rootless.config.dirs import Dirs
from rootless.errors import RLError
from rootless.executables import which
from rootless.runtime import idmap
from rootless.storage import select

OPTIONAL_HELPERS = ("pasta", "slirp4netns", "fuse-overlayfs")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER", str(uid))


def gather(dirs: Dirs, configured_driver: str, network_default: str = "") -> dict[str, Any]:
    uid, gid = os.getuid(), os.getgid()
    name = user_name(uid)
    helpers: dict[str, Any] = {}
    for tool in ("newuidmap", "newgidmap"):
        status = idmap.check_setid_helper(tool)
        helpers[tool] = {"path": status.path, "usable": status.usable, "problem": status.problem}
    for tool in OPTIONAL_HELPERS:
        path = which(tool)
        helpers[tool] = {"path": path, "usable": path is not None, "problem": None if path else "not installed"}
    from rootless.network.bridge import nft_binary

    nft = nft_binary()
    helpers["nft"] = {"path": nft, "usable": nft is not None,
                      "problem": None if nft else "not installed: the default network gives each container a pasta"}
    candidates = select.candidates(store=dirs.storage)
    try:
        driver = select.choose(configured_driver, store=dirs.storage)
    except RLError as e:
        driver = f"{configured_driver}: unusable: {e.message}"
    namespace: dict[str, Any] = {"running": False}
    from rootless.runtime import pause

    handle = pause.status(dirs.runroot)
    if handle is not None:
        ns = handle.info()
        namespace = {
            "running": True,
            "pausePid": ns.pause_pid,
            "singleId": ns.single_id,
            "uidMap": ns.uid_map.text().strip().splitlines(),
            "gidMap": ns.gid_map.text().strip().splitlines(),
        }
    return {
        "rl": {"version": __version__, "python": platform.python_version()},
        "host": {
            "kernel": platform.release(),
            "arch": platform.machine(),
            "cgroupVersion": host_cgroup_version(),
            "user": {"name": name, "uid": uid, "gid": gid},
            "subuid": [[r.start, r.count] for r in idmap.read_subids(idmap.SUBUID, name, uid)],
            "subgid": [[r.start, r.count] for r in idmap.read_subids(idmap.SUBGID, name, uid)],
        },
        "store": {
            "root": str(dirs.storage),
            "runroot": str(dirs.runroot),
            "runrootReason": dirs.runroot_reason,
            "driver": driver,
            "driverConfigured": configured_driver or "auto",
            "drivers": {d: (p or "ok") for d, p in candidates},
        },
        "cgroups": cgroups_facts(),
        "helpers": helpers,
        "userNamespace": namespace,
        "network": network_facts(dirs, network_default),
    }


def network_facts(dirs: Dirs, network_default: str) -> dict[str, Any]:
    """The default network and the state of the per-user rootless netns that serves it."""
    from rootless.engine.env import EngineEnv
    from rootless.engine.network import rootless_netns
    from rootless.network.driver import alive

    # Its netns file is mounted inside the user namespace, which rl info does not enter: the
    # helper's life tells whether it runs.
    state = rootless_netns(EngineEnv(storage=dirs.storage, runroot=dirs.runroot)).helper_state()
    if state is not None and not alive(state.helper_pid, state.helper_start_time):
        state = None
    return {
        "default": network_default or "bridge",
        "rootlessNetns": {"running": state is not None, "helper": state.driver if state else "",
                          "helperPid": state.helper_pid if state else 0},
    }


def cgroups_facts() -> dict[str, Any]:
    """The cgroup layout, the subtree delegated to the user and its controllers (rootless.cgroups.describe)."""
    from rootless.cgroups import describe

    try:
        return describe()
    except OSError as e:  # detection only reads; a failure here must not break rl info
        return {"version": host_cgroup_version(), "delegated": None, "controllers": [], "problem": str(e)}


def exists(path: str) -> bool:
    return Path(path).exists()
