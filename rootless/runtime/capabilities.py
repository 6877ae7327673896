"""Capabilities: names and numbers, Docker's default set, --cap-add/--cap-drop, and applying sets to a process.

Docker's rules, which rl follows:
- the default set is ``DEFAULT_CAPABILITIES`` (moby ``oci/defaults.go``);
- ``--cap-add ALL`` keeps every capability but the dropped ones, ``--cap-drop ALL`` keeps only the added
  ones, otherwise defaults minus drops plus adds (moby ``oci/caps.TweakCapabilities``);
- root gets the set as bounding, effective and permitted; the inheritable set is empty (CVE-2022-24769);
- a non-root user keeps only the bounding set: after execve a process without uid 0 and without file
  capabilities has no permitted or effective capabilities, and Docker sets no ambient ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rootless.errors import RuntimeSetupError, UsageError
from rootless.records import field, record
from rootless.runtime.syscalls import Syscalls

# include/uapi/linux/capability.h
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAPABILITY_NAMES: dict[int, str] = {number: name for name, number in CAPABILITIES.items()}
LAST_CAP = max(CAPABILITIES.values())

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

PR_SET_KEEPCAPS = 8


def normalize(name: str) -> str:
    """``net_admin``, ``NET_ADMIN`` and ``CAP_NET_ADMIN`` all name CAP_NET_ADMIN; ``all`` stays ``ALL``."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in CAPABILITIES:
        raise UsageError(f"unknown capability: {name!r}", "see capabilities(7) for the names")
    return full


def tweak(base: Iterable[str], add: Iterable[str] = (), drop: Iterable[str] = ()) -> list[str]:
    """Apply --cap-add/--cap-drop to ``base`` as Docker does; returns names sorted by number."""
    adds = [normalize(n) for n in add]
    drops = [normalize(n) for n in drop]
    if "ALL" in adds:
        result = {c for c in CAPABILITIES if c not in drops}
    elif "ALL" in drops:
        result = {c for c in adds if c != "ALL"}
    else:
        result = {normalize(c) for c in base if normalize(c) not in drops} | set(adds)
    return sorted(result, key=CAPABILITIES.__getitem__)


def mask(names: Iterable[str]) -> int:
    """The 64-bit mask of capability names (as in /proc/PID/status CapEff)."""
    value = 0
    for name in names:
        value |= 1 << CAPABILITIES[normalize(name)]
    return value


def names_of(value: int) -> list[str]:
    return [CAPABILITY_NAMES[i] for i in range(LAST_CAP + 1) if value >> i & 1]


@record
class CapabilitySets:
    """The five sets of a process, as names (plain data, part of ``ContainerSpec``)."""

    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


def for_user(caps: Iterable[str], uid: int) -> CapabilitySets:
    """Docker's sets for a container whose process runs as ``uid`` with the capability list ``caps``."""
    names = sorted({normalize(c) for c in caps}, key=CAPABILITIES.__getitem__)
    if uid == 0:
        return CapabilitySets(bounding=list(names), effective=list(names), permitted=list(names))
    return CapabilitySets(bounding=list(names))


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return LAST_CAP


def drop_bounding(sets: CapabilitySets, sys: Syscalls, uid: int = 0) -> None:
    """Drop from the bounding set every capability not in ``sets.bounding`` (needs CAP_SETPCAP).

    Call before switching to the container's user ``uid``. When the sets give a non-root user permitted
    or ambient capabilities, also asks the kernel to keep permitted capabilities across the uid change.
    """
    keep = mask(sets.bounding)
    for cap in range(last_cap() + 1):
        if keep >> cap & 1:
            continue
        try:
            sys.capbset_drop(cap)
        except OSError as e:
            if e.errno == 22:  # EINVAL: the kernel doesn't know this capability
                continue
            raise RuntimeSetupError(f"drop {CAPABILITY_NAMES.get(cap, cap)} from the bounding set failed: "
                                    f"{_why(e)}") from None
    if uid != 0 and (sets.permitted or sets.ambient):
        try:
            sys.prctl(PR_SET_KEEPCAPS, 1)
        except OSError as e:
            raise RuntimeSetupError(f"prctl(PR_SET_KEEPCAPS) failed: {_why(e)}") from None


def apply_sets(sets: CapabilitySets, sys: Syscalls) -> None:
    """After the user switch: set effective/permitted/inheritable, then raise the ambient ones."""
    try:
        sys.capset(mask(sets.effective), mask(sets.permitted), mask(sets.inheritable))
    except OSError as e:
        raise RuntimeSetupError(f"capset failed: {_why(e)}") from None
    if not sets.ambient:
        return
    for name in sets.ambient:
        try:
            sys.ambient_raise(CAPABILITIES[normalize(name)])
        except OSError as e:
            raise RuntimeSetupError(f"raise ambient {name} failed: {_why(e)}") from None


def _why(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)
