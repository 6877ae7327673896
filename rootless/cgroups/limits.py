"""Container resource limits as docker's flags give them, and the cgroup v2 files they become.

``Limits.parse(memory="32m", cpus="0.5", ...)`` checks and converts the flag strings;
``limit_files(limits, present)`` lists the (file, value) writes for a leaf cgroup in the order
they must be made; ``Limits.controllers()`` names the controllers that have to be enabled.
"""

from __future__ import annotations

import re

from rootless.errors import UsageError
from rootless.records import fields, record

CPU_PERIOD = 100_000  # docker's and the kernel's default cpu.max period (µs)
MIN_MEMORY = 6 * 1024 * 1024  # docker: "Minimum memory limit allowed is 6MB"

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str | int, flag: str = "size") -> int:
    """Docker's RAMInBytes: "32m", "1.5g", "512k", "100b", "1024" -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text.strip())
    if not match:
        raise UsageError(f"invalid {flag} {text!r}", "use a number with an optional unit b, k, m or g (e.g. 32m)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2, 262144] -> v2 cpu.weight [1, 10000], the way crun and runc convert."""
    if shares == 0:
        return 100  # 0 means "not set": the kernel's default weight
    shares = max(2, min(262_144, shares))
    return 1 + ((shares - 2) * 9999) // 262_142


def blkio_to_io_weight(weight: int) -> int:
    """docker --blkio-weight [10, 1000] -> io.weight [1, 10000] (crun's linear map)."""
    return 1 + ((weight - 10) * 9999) // 990


@record(frozen=True)
class Limits:
    """Checked limits; None means "not asked for". Sizes are bytes."""

    memory: int | None = None
    memory_swap: int | None = None  # memory + swap, docker's meaning; -1: unlimited swap
    memory_reservation: int | None = None
    cpus: float | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    cpu_weight: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None  # <= 0: unlimited
    blkio_weight: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        memory: str | int | None = None,
        memory_swap: str | int | None = None,
        memory_reservation: str | int | None = None,
        cpus: str | float | None = None,
        cpu_period: int | None = None,
        cpu_quota: int | None = None,
        cpu_shares: int | None = None,
        cpu_weight: int | None = None,
        cpuset_cpus: str | None = None,
        cpuset_mems: str | None = None,
        pids_limit: int | None = None,
        blkio_weight: int | None = None,
        update: bool = False,
    ) -> Limits:
        """From docker's flag values (strings as typed, or numbers); raises UsageError like docker does.
        ``update``: for docker update, where --memory-swap alone combines with the --memory already set."""
        mem = parse_size(memory, "--memory") if memory not in (None, "") else None
        if mem is not None and mem < MIN_MEMORY:
            raise UsageError(f"invalid --memory {memory!r}", "the minimum memory limit is 6m")
        swap: int | None = None
        if memory_swap not in (None, ""):
            swap = -1 if str(memory_swap).strip() == "-1" else parse_size(memory_swap, "--memory-swap")
            if mem is None and not update:
                raise UsageError("invalid --memory-swap without --memory", "set --memory too (docker's rule)")
            if swap != -1 and mem is not None and swap < mem:
                raise UsageError(
                    f"invalid --memory-swap {memory_swap!r}", "it counts memory plus swap: it must be at least --memory"
                )
        reservation = (
            parse_size(memory_reservation, "--memory-reservation") if memory_reservation not in (None, "") else None
        )
        if reservation is not None and mem is not None and reservation > mem:
            raise UsageError("invalid --memory-reservation", "it must be smaller than --memory")
        ncpus: float | None = None
        if cpus not in (None, ""):
            try:
                ncpus = float(cpus)
            except ValueError:
                raise UsageError(f"invalid --cpus {cpus!r}", "use a number of CPUs such as 1.5") from None
            if ncpus <= 0:
                raise UsageError(f"invalid --cpus {cpus!r}", "it must be greater than 0") from None
        if cpu_shares is not None and cpu_weight is not None:
            raise UsageError("--cpu-shares and --cpu-weight conflict", "use one of them")
        if cpu_weight is not None and not 1 <= cpu_weight <= 10_000:
            raise UsageError(f"invalid --cpu-weight {cpu_weight}", "it must be between 1 and 10000")
        if cpu_shares is not None and cpu_shares < 0:
            raise UsageError(f"invalid --cpu-shares {cpu_shares}", "it must be 2 or more")
        if blkio_weight is not None and blkio_weight != 0 and not 10 <= blkio_weight <= 1000:
            raise UsageError(f"invalid --blkio-weight {blkio_weight}", "it must be between 10 and 1000")
        if ncpus is not None and (cpu_quota is not None or cpu_period is not None):
            raise UsageError("--cpus conflicts with --cpu-period and --cpu-quota", "use --cpus alone")
        for flag, cpuset in (("--cpuset-cpus", cpuset_cpus), ("--cpuset-mems", cpuset_mems)):
            if cpuset and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", cpuset):
                raise UsageError(f"invalid {flag} {cpuset!r}", "use a list such as 0-2,4")
        return cls(
            memory=mem,
            memory_swap=swap,
            memory_reservation=reservation,
            cpus=ncpus,
            cpu_period=cpu_period,
            cpu_quota=cpu_quota,
            cpu_shares=cpu_shares,
            cpu_weight=cpu_weight,
            cpuset_cpus=cpuset_cpus or None,
            cpuset_mems=cpuset_mems or None,
            pids_limit=pids_limit,
            blkio_weight=blkio_weight or None,
        )

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def flags(self) -> list[str]:
        """The docker flags these limits came from, for messages."""
        return ["--" + f.name.replace("_", "-") for f in fields(self) if getattr(self, f.name) is not None]

    def controllers(self) -> list[str]:
        """The cgroup v2 controllers these limits need, sorted."""
        need = set()
        if self.memory is not None or self.memory_swap is not None or self.memory_reservation is not None:
            need.add("memory")
        if any(v is not None for v in (self.cpus, self.cpu_quota, self.cpu_period, self.cpu_shares, self.cpu_weight)):
            need.add("cpu")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            need.add("cpuset")
        if self.pids_limit is not None:
            need.add("pids")
        if self.blkio_weight is not None:
            need.add("io")
        return sorted(need)

    def merged(self, update: Limits) -> Limits:
        """These limits with every field ``update`` sets replaced (docker update)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({f.name: getattr(update, f.name) for f in fields(update) if getattr(update, f.name) is not None})
        return Limits(**values)


def cpu_max(limits: Limits) -> str | None:
    """cpu.max "QUOTA PERIOD" (or "max PERIOD")."""
    if limits.cpus is not None:
        period = CPU_PERIOD
        return f"{max(1000, round(limits.cpus * period))} {period}"
    if limits.cpu_quota is None and limits.cpu_period is None:
        return None
    period = limits.cpu_period or CPU_PERIOD
    quota = "max" if limits.cpu_quota is None or limits.cpu_quota <= 0 else str(limits.cpu_quota)
    return f"{quota} {period}"


def limit_files(limits: Limits, present: set[str] | None = None) -> list[tuple[str, str]]:
    """(file, value) writes for a leaf. ``present``: the leaf's file names, to pick io.bfq.weight and to
    leave out memory.swap.max when the kernel has no swap accounting; None: assume everything exists.

    Order matters: memory.max before memory.swap.max; cpuset.cpus before the rest.
    """

    def has(name: str) -> bool:
        return present is None or name in present

    out: list[tuple[str, str]] = []
    if limits.cpuset_cpus is not None:
        out.append(("cpuset.cpus", limits.cpuset_cpus))
    if limits.cpuset_mems is not None:
        out.append(("cpuset.mems", limits.cpuset_mems))
    if limits.memory is not None:
        out.append(("memory.max", str(limits.memory)))
        if has("memory.swap.max"):
            if limits.memory_swap is None:
                swap = str(limits.memory)  # docker: as much swap as memory
            elif limits.memory_swap == -1:
                swap = "max"
            else:
                swap = str(limits.memory_swap - limits.memory)
            out.append(("memory.swap.max", swap))
    if limits.memory_reservation is not None:
        out.append(("memory.low", str(limits.memory_reservation)))
    quota = cpu_max(limits)
    if quota is not None:
        out.append(("cpu.max", quota))
    if limits.cpu_weight is not None:
        out.append(("cpu.weight", str(limits.cpu_weight)))
    elif limits.cpu_shares is not None:
        out.append(("cpu.weight", str(shares_to_weight(limits.cpu_shares))))
    if limits.pids_limit is not None:
        out.append(("pids.max", str(limits.pids_limit) if limits.pids_limit > 0 else "max"))
    if limits.blkio_weight is not None:
        if present is not None and "io.bfq.weight" in present:
            out.append(("io.bfq.weight", str(limits.blkio_weight)))
        else:
            out.append(("io.weight", f"default {blkio_to_io_weight(limits.blkio_weight)}"))
    return out
