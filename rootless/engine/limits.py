"""Resource limits of containers: from the flags and settings to a leaf cgroup, and everything done to it later.

The run path::

    plan = plan_limits(env, opts)          # before the user namespace: parse, detect, the one error line
    leaf = attach(plan, store, record)     # the container's leaf, its path kept in record.extra["cgroup"]
    fd = open_procs(record)                # for process.launch(cgroup_procs=fd); close it after launch
    ... the container runs ...
    state.update(exit_state(record))       # OOMKilled from memory.events, Paused False
    release(record)                        # kill what is left, remove the leaf

Commands on a container's record (no user namespace needed: the leaf belongs to the user)::

    pause(env, ref) / unpause(env, ref) / update(env, ref, limits) / kill(record, signal) / stats_rows(...)

No limits asked for on a host without a delegated cgroup v2 subtree: no leaf, and no word about it.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import time
from collections.abc import Sequence
from typing import Any

from rootless.cgroups import CgroupInfo, Leaf, Limits, Stats, cpu_percent, detect, no_cgroup, problem
from rootless.cgroups import prepare as prepare_leaf
from rootless.cgroups.detect import fix_hint
from rootless.cgroups.host import Host
from rootless.engine.env import EngineEnv
from rootless.engine.runopts import RunOptions
from rootless.errors import ConflictError, HostError, RLError, UsageError
from rootless.log import log
from rootless.records import asdict, fields, record
from rootless.state.containers import CGROUP_KEY, ContainerRecord, ContainerStore

LIMITS_KEY = "limits"  # record.extra: the Limits as a dict
HOST: Host | None = None  # the machine (None: the real one); unit tests put a FakeHost here

# RunOptions / click keyword -> Limits.parse keyword
LIMIT_FIELDS = (
    "memory", "memory_swap", "memory_reservation", "cpus", "cpu_period", "cpu_quota", "cpu_shares",
    "cpu_weight", "cpuset_cpus", "cpuset_mems", "pids_limit", "blkio_weight",
)  # fmt: skip


def _given(value: Any) -> bool:
    return value not in (None, "")


def parse_limits(values: dict[str, Any], update: bool = False) -> Limits:
    """Limits from flag values (only the LIMIT_FIELDS keys count; None or "" means not given).
    ``update``: rl update's flags, which combine with the limits already set."""
    return Limits.parse(**{k: values[k] for k in LIMIT_FIELDS if k in values and _given(values[k])}, update=update)


def requested(env: EngineEnv, opts: RunOptions) -> Limits:
    """The user's flags, over the settings' defaults (limits.memory, limits.pids, limits.cpus)."""
    values = {k: getattr(opts, k, None) for k in LIMIT_FIELDS}
    defaults = env.limits or {}
    if not _given(values["memory"]) and defaults.get("memory"):
        values["memory"] = defaults["memory"]
    if values["pids_limit"] is None and defaults.get("pids"):
        values["pids_limit"] = int(defaults["pids"])
    if not _given(values["cpus"]) and not _given(values["cpu_quota"]) and defaults.get("cpus"):
        values["cpus"] = defaults["cpus"]
    return parse_limits(values)


@record
class Plan:
    """What the run will do about cgroups: ``cgroup`` False means no leaf at all."""

    limits: Limits
    cgroup: bool
    info: CgroupInfo | None
    mode: str = "error"


def plan_limits(env: EngineEnv, opts: RunOptions) -> Plan:
    """Parse the limits and decide, before anything is created: the HostError with the admin's fix when
    limits are asked for and the host can't apply them (or one warning with limits.without_cgroup = warn).
    Call it before joining the user namespace: on a systemd host it may ask for a delegated scope."""
    limits = requested(env, opts)
    mode = env.without_cgroup or "error"
    info = detect(HOST)
    if limits.empty():
        return Plan(limits, info.usable, info, mode)
    wants_scope = info.version == "v2" and info.delegated is None and info.systemd and info.user_bus
    if wants_scope:
        from rootless.cgroups.systemd import enter_scope  # subprocess and secrets: only when a scope is wanted

        if enter_scope(HOST) is not None:
            info = detect(HOST)
    if problem(info, limits.controllers(), limits.flags()) is not None:
        no_cgroup(info, limits, mode)  # raises in mode "error"
        return Plan(limits, False, info, mode)
    return Plan(limits, True, info, mode)


def limits_dict(limits: Limits) -> dict[str, Any]:
    return {k: v for k, v in asdict(limits).items() if v is not None}


def limits_of(record: ContainerRecord) -> Limits:
    stored = record.extra.get(LIMITS_KEY) or {}
    known = {f.name for f in fields(Limits)}
    return Limits(**{k: v for k, v in stored.items() if k in known})


def host_config(limits: Limits) -> dict[str, Any]:
    """docker's HostConfig resource fields (0: not set)."""
    nano = round(limits.cpus * 1e9) if limits.cpus is not None else 0
    return {
        "Memory": limits.memory or 0,
        "MemorySwap": limits.memory_swap or 0,
        "MemoryReservation": limits.memory_reservation or 0,
        "NanoCpus": nano,
        "CpuPeriod": limits.cpu_period or 0,
        "CpuQuota": limits.cpu_quota or 0,
        "CpuShares": limits.cpu_shares or 0,
        "CpuWeight": limits.cpu_weight or 0,
        "CpusetCpus": limits.cpuset_cpus or "",
        "CpusetMems": limits.cpuset_mems or "",
        "PidsLimit": limits.pids_limit,
        "BlkioWeight": limits.blkio_weight or 0,
    }


def describe(plan: Plan, record: ContainerRecord) -> None:
    """Note the limits in ``record`` (docker's HostConfig fields and rl's own), before it is saved."""
    record.host_config.update(host_config(plan.limits))
    record.extra[LIMITS_KEY] = limits_dict(plan.limits)


def attach(plan: Plan, store: ContainerStore, record: ContainerRecord, described: bool = False) -> Leaf | None:
    """Create the container's leaf (inside rl's user namespace is fine) and note it in the saved record;
    ``described``: the record was saved with ``describe``'s fields already (only a leaf is news)."""
    leaf = None
    if plan.cgroup:
        leaf = prepare_leaf(record.id, plan.limits, mode=plan.mode, info=plan.info, host=HOST)
    describe(plan, record)
    if leaf is not None:
        record.extra[CGROUP_KEY] = leaf.path
    if leaf is not None or not described:
        with store.update(record.id) as rec:
            describe(plan, rec)
            if leaf is not None:
                rec.extra[CGROUP_KEY] = leaf.path
    return leaf


def leaf_of(record: ContainerRecord) -> Leaf | None:
    path = record.extra.get(CGROUP_KEY)
    if not path:
        return None
    leaf = Leaf.at(path, HOST)
    return leaf if leaf.exists() else None


def open_procs(record: ContainerRecord) -> int | None:
    """An fd on the leaf's cgroup.procs for process.launch(cgroup_procs=...), or None. The caller closes it."""
    leaf = leaf_of(record)
    if leaf is None:
        return None
    try:
        return leaf.open_procs()
    except OSError as error:
        raise HostError(f"cannot open {leaf.procs_file}: {os.strerror(error.errno or 0)}",
                        "the container's cgroup must belong to you") from error


def close_fd(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def exit_state(record: ContainerRecord) -> dict[str, Any]:
    """State fields to record when the container's process has exited: OOMKilled from memory.events."""
    leaf = leaf_of(record)
    oom = False
    if leaf is not None:
        try:
            oom = leaf.oom_killed()
        except OSError:
            oom = False
    return {"OOMKilled": oom, "Paused": False}


def release(record: ContainerRecord) -> None:
    """After the container's end (or a failed start): kill what is left in its leaf, remove the leaf."""
    leaf = leaf_of(record)
    if leaf is None:
        return
    try:
        if leaf.frozen():
            leaf.thaw(timeout=1.0)
        leaf.kill(timeout=2.0)
        leaf.remove(timeout=2.0)
    except RLError as error:
        log.warning("removing the cgroup of container %s: %s", record.id[:12], error.line())


def kill(record: ContainerRecord, signum: int = signals.SIGKILL) -> bool:
    """SIGKILL through cgroup.kill (every process of the container at once) when the container has a
    leaf; other signals go to the container's PID 1. False when there was nothing to signal."""
    leaf = leaf_of(record)
    if signum == signals.SIGKILL and leaf is not None:
        if leaf.frozen():
            with contextlib.suppress(RLError):
                leaf.thaw(timeout=1.0)
        leaf.kill()
        return True
    pid = int(record.state.get("Pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- commands on running containers


def _no_leaf_error(record: ContainerRecord, what: str) -> HostError:
    info = detect(HOST)
    if info.usable:
        return HostError(
            f"cannot {what} container {record.name}: it has no cgroup of its own (it was started without one)",
            "start it again with this version of rl",
        )
    return HostError(
        f"cannot {what} container {record.name}: it has no cgroup of its own ({info.why_not or 'no delegation'})",
        fix_hint(info) if info.version == "v2" else
        "an admin must boot the host with 'systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all' and run"
        f" 'sudo helpers/enable-cgroup-delegation.sh {info.user or 'USER'}'",
    )


def _running(store: ContainerStore, ref: str, what: str) -> tuple[ContainerRecord, Leaf]:
    record = store.get(ref)
    if not record.running:
        raise ConflictError(f"container {record.name} is not running", f"only a running container can be {what}d")
    leaf = leaf_of(record)
    if leaf is None:
        raise _no_leaf_error(record, what)
    return record, leaf


def pause(env: EngineEnv, ref: str) -> ContainerRecord:
    """Freeze every process of the container (cgroup.freeze) and record Status "paused"."""
    store = ContainerStore(env.storage)
    record, leaf = _running(store, ref, "pause")
    if record.state.get("Paused"):
        raise ConflictError(f"container {record.name} is already paused", f"rl unpause {record.name}")
    leaf.freeze()
    with store.update(record.id) as rec:
        rec.state.update(Status="paused", Paused=True)
    return record


def unpause(env: EngineEnv, ref: str) -> ContainerRecord:
    store = ContainerStore(env.storage)
    record, leaf = _running(store, ref, "unpause")
    if not record.state.get("Paused") and not leaf.frozen():
        raise ConflictError(f"container {record.name} is not paused", "nothing to do")
    leaf.thaw()
    with store.update(record.id) as rec:
        if rec.state.get("Running"):
            rec.state.update(Status="running", Paused=False)
    return record


def _check_merged(limits: Limits) -> None:
    if limits.memory_swap not in (None, -1) and limits.memory is not None and limits.memory_swap < limits.memory:
        raise UsageError(
            "the memory limit must not exceed the memory+swap limit already set",
            "give --memory-swap too (docker's rule)",
        )
    if limits.cpus is not None and (limits.cpu_quota is not None or limits.cpu_period is not None):
        raise UsageError("--cpus conflicts with the --cpu-period and --cpu-quota already set", "use one kind")


def update(env: EngineEnv, ref: str, change: Limits) -> ContainerRecord:
    """docker update: new limits written to the running container's leaf at once, and kept in its record.
    A container that doesn't run only has its record changed."""
    if change.empty():
        raise UsageError("rl update needs at least one limit", "e.g. rl update --memory 256m CONTAINER")
    store = ContainerStore(env.storage)
    record = store.get(ref)
    old = limits_of(record)
    if change.cpus is not None:
        old = Limits(**{**asdict(old), "cpu_quota": None, "cpu_period": None})
    if change.cpu_quota is not None or change.cpu_period is not None:
        old = Limits(**{**asdict(old), "cpus": None})
    if change.cpu_weight is not None:
        old = Limits(**{**asdict(old), "cpu_shares": None})
    if change.cpu_shares is not None:
        old = Limits(**{**asdict(old), "cpu_weight": None})
    merged = old.merged(change)
    _check_merged(merged)
    if record.running:
        leaf = leaf_of(record)
        if leaf is None:
            raise _no_leaf_error(record, "update")
        leaf.update(merged)
    with store.update(record.id) as rec:
        rec.extra[LIMITS_KEY] = limits_dict(merged)
        rec.host_config.update(host_config(merged))
    return record


# ---------------------------------------------------------------- stats


def _binary(n: float) -> str:
    """docker's units.BytesSize: "%.4g" with binary units."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.4g}{units[i]}"


def _decimal(n: float) -> str:
    """docker's units.HumanSizeWithPrecision(n, 3)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000
        i += 1
    return f"{n:.3g}{units[i]}"


def host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@record
class Sampled:
    record: ContainerRecord
    stats: Stats | None  # None: no cgroup to read


def sample(records: Sequence[ContainerRecord]) -> list[Sampled]:
    out = []
    for rec in records:
        leaf = leaf_of(rec)
        stats = None
        if leaf is not None and rec.running:
            with contextlib.suppress(OSError):
                stats = leaf.stats()
        out.append(Sampled(rec, stats))
    return out


NO_VALUE = "--"


def stats_row(record: ContainerRecord, before: Stats | None, after: Stats | None,
              total_memory: int) -> dict[str, str]:
    """One line of docker stats, keyed by its --format fields."""
    row = {
        "ID": record.id[:12],
        "Container": record.name or record.id[:12],
        "Name": record.name,
        "CPUPerc": NO_VALUE,
        "MemUsage": f"{NO_VALUE} / {NO_VALUE}",
        "MemPerc": NO_VALUE,
        "NetIO": f"{NO_VALUE} / {NO_VALUE}",
        "BlockIO": f"{NO_VALUE} / {NO_VALUE}",
        "PIDs": NO_VALUE,
    }
    if after is None:
        return row
    row["CPUPerc"] = f"{cpu_percent(before, after) if before is not None else 0.0:.2f}%"
    if after.memory_current is not None:
        limit = after.memory_max or total_memory
        row["MemUsage"] = f"{_binary(after.memory_current)} / {_binary(limit) if limit else NO_VALUE}"
        row["MemPerc"] = f"{after.memory_current / limit * 100:.2f}%" if limit else NO_VALUE
    row["BlockIO"] = f"{_decimal(after.io_read_bytes)} / {_decimal(after.io_write_bytes)}"
    if after.pids_current is not None:
        row["PIDs"] = str(after.pids_current)
    return row


def why_no_stats(records: Sequence[ContainerRecord]) -> str | None:
    """One line for the containers whose figures show as "--", or None."""
    lacking = [r for r in records if r.running and leaf_of(r) is None]
    if not lacking:
        return None
    names = ", ".join(r.name for r in lacking)
    info = detect(HOST)
    reason = info.why_not if not info.usable else "they were started without one"
    return f"no cgroup of their own for {names} ({reason}): their figures show as {NO_VALUE}"


def stats_rows(records: Sequence[ContainerRecord], interval: float = 0.5,
               previous: list[Sampled] | None = None) -> tuple[list[dict[str, str]], list[Sampled]]:
    """Two samples ``interval`` apart (or the previous one and a new one); the rows and the new samples."""
    first = previous
    if first is None:
        first = sample(records)
        if any(s.stats is not None for s in first):
            time.sleep(interval)
    second = sample(records)
    before = {s.record.id: s.stats for s in first}
    total = host_memory()
    rows = [stats_row(s.record, before.get(s.record.id), s.stats, total) for s in second]
    return rows, second
