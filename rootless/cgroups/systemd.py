"""Ask the systemd user manager for a delegated scope holding rl itself, as podman and crun do.

On a systemd host with a user session, ``user@UID.service`` is delegated to the user, but systemd
manages the cgroups inside it: rl may only change a unit it asked for with ``Delegate=yes``. So rl
calls StartTransientUnit on the user bus (with ``busctl``, no D-Bus library needed), naming its own
pid; systemd moves rl into ``rl-<pid>-<rand>.scope`` and rl then owns that cgroup. The scope goes away
by itself when its last process exits.

Cheap and optional: nothing happens without a user bus ($DBUS_SESSION_BUS_ADDRESS or
$XDG_RUNTIME_DIR/bus) or without busctl. Call it before joining rl's user namespace: the bus
authenticates by uid, and inside the namespace rl's uid is 0.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Sequence

from rootless.cgroups.detect import detect, own_cgroup, user_bus
from rootless.cgroups.host import Host
from rootless.executables import which
from rootless.log import log

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)


def scope_name(pid: int) -> str:
    return f"rl-{pid}-{secrets.token_hex(4)}.scope"


def start_scope_argv(unit: str, pid: int) -> list[str]:
    """busctl's call of org.freedesktop.systemd1.Manager.StartTransientUnit for a delegated scope."""
    return [
        "busctl", "--user", "--quiet", "call",
        "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
        "StartTransientUnit", "ssa(sv)a(sa(sv))",
        unit, "fail",
        "4",
        "PIDs", "au", "1", str(pid),
        "Delegate", "b", "true",
        "CollectMode", "s", "inactive-or-failed",
        "Description", "s", "rl container cgroups",
        "0",
    ]  # fmt: skip


def enter_scope(host: Host | None = None, run: Runner = _run, timeout: float = 3.0) -> str | None:
    """Move this process into a new delegated systemd scope; its cgroup path, or None (with a debug
    log line) when there is no user bus, no busctl, or systemd refuses. Does nothing when rl already
    sits in a delegated subtree."""
    host = host or Host()
    info = detect(host)
    if info.version != "v2" or info.delegated is not None:
        return None
    if not user_bus(host):
        log.debug("cgroups: no systemd user bus; not asking for a scope")
        return None
    if run is _run and which("busctl") is None:
        log.debug("cgroups: busctl is not installed; not asking for a scope")
        return None
    unit = scope_name(host.pid)
    try:
        result = run(start_scope_argv(unit, host.pid))
    except (OSError, subprocess.SubprocessError) as error:
        log.debug("cgroups: busctl failed: %s", error)
        return None
    if result.returncode != 0:
        log.debug("cgroups: systemd refused scope %s: %s", unit, (result.stderr or "").strip())
        return None
    # The job runs asynchronously: wait until the kernel shows us in the new scope.
    deadline = time.monotonic() + timeout
    while True:
        own = own_cgroup(host) or ""
        if own.endswith("/" + unit):
            return own
        if time.monotonic() > deadline:
            log.debug("cgroups: systemd did not move pid %d into %s in %.0fs", host.pid, unit, timeout)
            return None
        time.sleep(0.02)

