#!/usr/bin/env python3
"""Memory of what stays running per idle detached container: rl against podman, end to end.

    RL_TEST_REGISTRY=127.0.0.1:5555 python bench/idle_memory.py [-n 5] [--networks default,pasta,slirp4netns,none]
                                                                [--publish] [--settle 1.0] [--no-podman]

Run as the unprivileged test user from the checkout root. For each tool (rl; podman when installed,
configured as in bench/tools.py) and each network mode (``default``: the tool's own default, i.e. rl's
bridge network and podman 4.3's slirp4netns; else ``--network MODE``), starts N containers with
``TOOL run -d [--network MODE] busybox sleep 1000``, waits ``--settle`` seconds, and measures every
process the tool left running that is not the container's own workload (the container's process and its
descendants):

  rl      per container: the monitor (``rl-monitor``), the port relay (``python -m
          rootless.network.portfwd``, with --publish), a helper of its own with --network pasta or
          slirp4netns; shared per user: the pause process ``rl-pause`` and, on the bridge network (the
          default), the helper of the rootless network namespace (one pasta, else slirp4netns, for all
          the user's bridge containers; its pid in RUNROOT/net/rootless-netns/state.json)
  podman  per container: ``conmon``, slirp4netns, ``rootlessport`` and ``rootlessport-child`` (with
          --publish); shared per user: the pause process (``catatonit -P``)

A process belongs to a container when it is the parent of the container's process (monitor, conmon),
when its command line names the container's ID or its network namespace path (helpers), when it is in
the container's network namespace without being its descendant (port relays), or when the tool
recorded it (rl's container.json and network.json, podman's State.ConmonPid: the only link between a
bridge container and its port relay, which runs in the rootless netns); children of such a process
belong to it too. The shared processes are left out of every container and reported once. Every tool
process carries a marker in its environment, so anything left running that none of these rules claims
is listed as unattributed.

Memory per process from /proc/PID/smaps_rollup: RSS, PSS, USS (Private_Clean + Private_Dirty), summed
over a container's processes; medians over the N containers. Two figures per container: the marginal
cost (its own processes: what one more container adds) and the amortised cost (marginal + the shared
processes its batch uses divided by the batch's N containers). A process whose smaps_rollup is
unreadable (e.g. pasta in a user namespace of its own, not the case for the helpers rl and podman start)
is read from /proc/PID/status: VmRSS, with RssAnon standing in for PSS and USS (marked ~). The containers
of one tool and mode run alone, so the PSS shares pages among N copies of the same programs: rl's
rootless-netns helper is stopped after each batch (``rl network prune -f``) when this benchmark started
it (it carries the marker; a helper that does not is left alone), as podman's and rl's pause processes
are at the end. Target (issue #5): at most 12 MB per idle rl container.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tools import Podman, Rl

MARK = "IDLE_MEMORY_BENCH"
TARGET_MB = 12.0
SUPERVISORS = {"rl": "rl-monitor", "podman": "conmon"}
PASTA_NAMES = ("pasta", "passt", "pasta.avx2", "passt.avx2")
HELPERS = ("pasta", "slirp4netns")
HOST_NETNS = os.readlink("/proc/self/ns/net")


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    argv: list[str]
    start: int
    netns: str | None  # readlink of /proc/PID/ns/net; None when unreadable
    marked: bool  # started by this benchmark (its environment carries MARK)

    @property
    def kind(self) -> str:
        if self.comm == "rl-monitor":
            return "rl-monitor"
        if "rootless.network.portfwd" in self.argv:
            return "rl-portfwd"
        name = os.path.basename(self.argv[0]) if self.argv and self.argv[0] else self.comm
        return "pasta" if name in PASTA_NAMES else name


@dataclass
class Mem:
    rss: int  # KiB
    pss: int
    uss: int
    exact: bool = True  # False: smaps_rollup unreadable, pss and uss are RssAnon


@dataclass
class Container:
    id: str
    pid: int
    members: list[tuple[str, int, Mem]] = field(default_factory=list)  # (kind, pid, memory)

    def total(self) -> Mem:
        return Mem(sum(m.rss for _, _, m in self.members), sum(m.pss for _, _, m in self.members),
                   sum(m.uss for _, _, m in self.members), all(m.exact for _, _, m in self.members))


@dataclass
class Shared:
    """A process one per user, shared by the containers: the pause process, rl's rootless-netns helper."""

    role: str  # "pause process", "rootless-netns helper"
    kind: str
    pid: int
    mem: Mem
    used: bool  # the batch's containers need it (counted in their amortised cost)


@dataclass
class Batch:
    tool: str
    network: str
    mode: str = ""  # what the containers got: HostConfig.NetworkMode, rl's network.json driver
    containers: list[Container] = field(default_factory=list)
    shared: list[Shared] = field(default_factory=list)
    unattributed: list[tuple[str, int, Mem]] = field(default_factory=list)
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def amortised(self) -> Mem:
        """The shared processes the batch uses, divided among its containers (KiB per container)."""
        used = [s.mem for s in self.shared if s.used]
        n = max(len(self.containers), 1)
        return Mem(sum(m.rss for m in used) // n, sum(m.pss for m in used) // n, sum(m.uss for m in used) // n,
                   all(m.exact for m in used))


# ---------------------------------------------------------------- /proc


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def processes(token: str) -> dict[int, Proc]:
    """The calling user's live processes (zombies left out)."""
    uid = os.getuid()
    mark = f"{MARK}={token}".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        stat = _read(f"/proc/{pid}/stat")
        cmdline = _read(f"/proc/{pid}/cmdline")
        if stat is None or cmdline is None:
            continue
        text = stat.decode(errors="replace")
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] == "Z":
            continue
        try:
            netns: str | None = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            netns = None
        environ = _read(f"/proc/{pid}/environ") or b""
        found[pid] = Proc(pid, int(fields[1]), text[text.index("(") + 1:text.rindex(")")],
                          [a.decode(errors="replace") for a in cmdline.split(b"\0")[:-1]], int(fields[19]),
                          netns, mark in environ.split(b"\0"))
    return found


def memory(pid: int) -> Mem | None:
    """RSS, PSS and USS of ``pid`` in KiB; from /proc/PID/status when smaps_rollup is unreadable."""
    values: dict[str, int] = {}
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text:
        for line in text.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1])
        return Mem(values["Rss"], values["Pss"], values["Private_Clean"] + values["Private_Dirty"])
    text = _read(f"/proc/{pid}/status")
    if text is None:
        return None
    for line in text.decode().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            values[name] = int(rest.split()[0])
    if "VmRSS" not in values:
        return None
    return Mem(values["VmRSS"], values.get("RssAnon", 0), values.get("RssAnon", 0), exact=False)


def descendants(roots: set[int], procs: dict[int, Proc]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


# ---------------------------------------------------------------- attribution


def netns_dir(runroot: Path) -> Path:
    """rl's rootless netns directory for ``runroot`` (rl's own rule, which moves it under $TMPDIR when
    the runtime path is too long for the helper's sockets)."""
    from rootless.engine.env import EngineEnv
    from rootless.engine.network import net_run_dir

    return net_run_dir(EngineEnv(storage=runroot, runroot=runroot), "rootless-netns")


def netns_helper_pid(tool: Rl | Podman, procs: dict[int, Proc]) -> int | None:
    """The pid of rl's rootless-netns helper (pasta or slirp4netns, one per user for every container on
    the bridge network), as rl recorded it in state.json or the helper's pid file, checked against its
    command line (it names the rootless netns file); None for podman or when none runs."""
    if not isinstance(tool, Rl):
        return None
    run_dir = netns_dir(tool.runroot)
    ns_file = str(run_dir / "netns")
    candidates = []
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        candidates.append(int(json.loads((run_dir / "state.json").read_text())["helper_pid"] or 0))
    for name in ("pasta.pid", "slirp4netns.pid"):
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int((run_dir / name).read_text().strip()))
    found = [p.pid for p in procs.values() if p.kind in HELPERS and ns_file in p.argv]
    return next((pid for pid in candidates if pid in found), found[0] if found else None)


def uses_rootless_netns(tool: Rl | Podman, root: Path, cid: str) -> bool:
    """Whether rl put the container on a bridge in the rootless netns (the default network, user-defined
    networks): its records say so."""
    if not isinstance(tool, Rl):
        return False
    try:
        net = json.loads((root / "containers" / cid / "network.json").read_text())
    except (OSError, ValueError):
        return False
    return net.get("driver") == "bridge" or bool(net.get("networks"))


def network_mode(tool: Rl | Podman, root: Path, doc: dict[str, Any]) -> str:
    """What a container's network is, as the tool recorded it."""
    mode = str((doc.get("HostConfig") or {}).get("NetworkMode") or "")
    if isinstance(tool, Rl):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            driver = json.loads((root / "containers" / doc["Id"] / "network.json").read_text()).get("driver")
            if driver and driver != mode:
                mode = f"{mode} ({driver})" if mode else str(driver)
    return mode


def recorded_pids(tool: Rl | Podman, root: Path, doc: dict[str, Any]) -> set[int]:
    """The processes the tool itself recorded for a container (besides the container's)."""
    if tool.name == "podman":
        return {int(doc["State"].get("ConmonPid") or 0)} - {0}
    pids = set()
    cdir = root / "containers" / doc["Id"]
    with contextlib.suppress(OSError, ValueError):
        pids.add(int(json.loads((cdir / "container.json").read_text())["extra"].get("monitor_pid") or 0))
    with contextlib.suppress(OSError, ValueError):
        net = json.loads((cdir / "network.json").read_text())
        pids |= {int(net.get("helper_pid") or 0), int(net.get("relay_pid") or 0)}
    return pids - {0}


def attribute(tool: Rl | Podman, root: Path, docs: list[dict[str, Any]], procs: dict[int, Proc],
              shared: set[int], batch: Batch) -> None:
    """Fill ``batch.containers`` with each container's processes besides its workload (``shared``: the
    per-user processes, left out)."""
    workload = descendants({int(d["State"]["Pid"]) for d in docs}, procs)
    # rl's port relay of a bridge container runs in the rootless netns and its command line names only
    # that netns: the records are the only link to its container, as expected
    rootless_ns = str(netns_dir(tool.runroot) / "netns") if isinstance(tool, Rl) else ""
    claimed: set[int] = set()
    for doc in docs:
        cid, pid = doc["Id"], int(doc["State"]["Pid"])
        if pid not in procs:
            batch.notes.append(f"{cid[:12]}: its process {pid} is not running")
            continue
        sandbox = (doc.get("NetworkSettings") or {}).get("SandboxKey") or ""
        netns = procs[pid].netns
        if netns == HOST_NETNS:  # --network host: every process shares it
            netns = None
        mine = {procs[pid].ppid} if procs[pid].ppid > 1 else set()
        for p in procs.values():
            if p.pid in workload or p.pid in shared:
                continue
            line = " ".join(p.argv)
            if cid[:12] in line or (sandbox and sandbox in line) or (netns and p.netns == netns):
                mine.add(p.pid)
        recorded = (recorded_pids(tool, root, doc) & set(procs)) - shared
        unexpected = [r for r in recorded - mine if not (rootless_ns and rootless_ns in " ".join(procs[r].argv))]
        if unexpected:
            batch.notes.append(f"{cid[:12]}: recorded by {tool.name} but found only from its records: "
                               + ", ".join(f"{procs[r].kind} {r}" for r in sorted(unexpected)))
        mine = descendants(mine | recorded, procs) - workload - shared
        supervisor = procs.get(procs[pid].ppid)
        if supervisor is None or supervisor.kind != SUPERVISORS[tool.name]:
            batch.notes.append(f"{cid[:12]}: the parent of its process is "
                               f"{supervisor.kind if supervisor else 'gone'}, not {SUPERVISORS[tool.name]}")
        container = Container(cid, pid)
        for member in sorted(mine, key=lambda m: (procs[m].kind != SUPERVISORS[tool.name], m)):
            mem = memory(member)
            if mem is not None:
                container.members.append((procs[member].kind, member, mem))
        claimed |= mine
        batch.containers.append(container)
    for p in procs.values():
        if p.marked and p.pid not in workload | claimed | shared and p.pid != os.getpid():
            mem = memory(p.pid)
            if mem is not None:
                batch.unattributed.append((p.kind, p.pid, mem))


# ---------------------------------------------------------------- running


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """The pids still running (not zombies) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = set()
        for pid in pids:
            stat = _read(f"/proc/{pid}/stat")
            if stat is not None and stat[stat.rindex(b")") + 2:][:1] != b"Z":
                left.add(pid)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def measure(tool: Rl | Podman, root: Path, image: str, network: str, n: int, publish: bool, settle: float,
            token: str) -> Batch:
    batch = Batch(tool.name, network + (" -p" if publish and network != "none" else ""))
    net = [] if network == "default" else ["--network", network]
    ports = free_ports(n) if publish and network != "none" else []
    ids: list[str] = []
    try:
        for i in range(n):
            port = ["-p", f"127.0.0.1:{ports[i]}:80"] if ports else []
            ids.append(tool.run_detached(root, *net, *port, image, "sleep", "1000"))
        time.sleep(settle)
        docs = tool.inspect(root, *ids)
        procs = processes(token)
        pause_pid = tool.pause_pid()
        helper_pid = netns_helper_pid(tool, procs)
        helper = descendants({helper_pid}, procs) if helper_pid else set()
        attribute(tool, root, docs, procs, ({pause_pid} if pause_pid else set()) | helper, batch)
        batch.mode = ", ".join(dict.fromkeys(network_mode(tool, root, d) for d in docs))
        if pause_pid and pause_pid in procs and (mem := memory(pause_pid)) is not None:
            batch.shared.append(Shared("pause process", procs[pause_pid].kind, pause_pid, mem, True))
        if helper_pid:
            mems = [m for m in map(memory, sorted(helper)) if m is not None]
            used = any(uses_rootless_netns(tool, root, d["Id"]) for d in docs)
            batch.shared.append(Shared("rootless-netns helper", procs[helper_pid].kind, helper_pid,
                                       Mem(sum(m.rss for m in mems), sum(m.pss for m in mems),
                                           sum(m.uss for m in mems), all(m.exact for m in mems)), used))
    except RuntimeError as e:
        batch.error = str(e).splitlines()[-1]
    finally:
        if ids:
            left = {pid for c in batch.containers for _, pid, _ in c.members}
            try:
                tool.rm(root, *ids)
            except RuntimeError as e:
                batch.notes.append(f"rm -f failed: {e}")
            left = wait_gone(left, 5.0)
            if left:
                batch.notes.append(f"still running 5 s after rm -f: {sorted(left)}")
        if note := stop_netns_helper(tool, root, token):
            batch.notes.append(note)
    return batch


def stop_netns_helper(tool: Rl | Podman, root: Path, token: str) -> str:
    """Stop rl's rootless-netns helper if this benchmark started it (it carries the marker), with ``rl
    network prune -f`` (which stops the rootless netns once no container is attached to it); a note when
    one was left running or had to be killed."""
    procs = processes(token)
    pid = netns_helper_pid(tool, procs)
    if pid is None:
        return ""
    if not procs[pid].marked:
        return f"rootless-netns helper {procs[pid].kind} {pid} not started by this benchmark: left running"
    subprocess.run(tool.argv(root, "network", "prune", "-f"), env=tool.env, capture_output=True, check=False)
    if not wait_gone({pid}, 5.0):
        return ""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone({pid}, 5.0)
    return f"rootless-netns helper {procs[pid].kind} {pid} still running after `rl network prune -f`: killed"


def stop_pause(tool: Rl | Podman, token: str) -> None:
    """Stop the tool's pause process if this benchmark started it (it carries the marker)."""
    if isinstance(tool, Rl):
        tool.close()
        return
    pid = tool.pause_pid()
    if pid and pid in (procs := processes(token)) and procs[pid].marked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone({pid}, 5.0)


def cleanup(tool: Rl | Podman, root: Path, token: str) -> None:
    if isinstance(tool, Podman):
        subprocess.run(tool.argv(root, "rm", "-af", "-t", "0"), env=tool.env, capture_output=True, check=False)
        stop_pause(tool, token)  # its mount namespace holds the store's overlay mount: a fresh one can remove it
    else:
        subprocess.run(tool.argv(root, "rm", "-af"), env=tool.env, capture_output=True, check=False)
        if note := stop_netns_helper(tool, root, token):  # it would keep rl's user namespace alive
            print(f"\nclean-up: {note}")
    with contextlib.suppress(subprocess.CalledProcessError):
        if root.exists():
            tool.remove(root)
    stop_pause(tool, token)


# ---------------------------------------------------------------- reporting


def mb(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def triple(mem: Mem) -> str:
    mark = "" if mem.exact else "~"
    return f"{mb(mem.rss)}/{mark}{mb(mem.pss)}/{mark}{mb(mem.uss)}"


def cells(mem: Mem) -> str:
    mark = "" if mem.exact else "~"
    return f"{mb(mem.rss)} | {mark}{mb(mem.pss)} | {mark}{mb(mem.uss)}"


def plus(a: Mem, b: Mem) -> Mem:
    return Mem(a.rss + b.rss, a.pss + b.pss, a.uss + b.uss, a.exact and b.exact)


def median_mem(mems: list[Mem]) -> Mem:
    return Mem(int(statistics.median(m.rss for m in mems)), int(statistics.median(m.pss for m in mems)),
               int(statistics.median(m.uss for m in mems)), all(m.exact for m in mems))


def kinds_of(batch: Batch) -> list[str]:
    seen: list[str] = []
    for c in batch.containers:
        for kind, _, _ in c.members:
            if kind not in seen:
                seen.append(kind)
    return seen


def per_kind(batch: Batch, kind: str) -> Mem:
    """Median over the containers of the memory of their ``kind`` processes (summed per container)."""
    sums = []
    for c in batch.containers:
        mems = [m for k, _, m in c.members if k == kind]
        sums.append(Mem(sum(m.rss for m in mems), sum(m.pss for m in mems), sum(m.uss for m in mems),
                        all(m.exact for m in mems)))
    return median_mem(sums)


def label(batch: Batch) -> str:
    """The network as asked, and what the containers got when that says more (``default (bridge)``)."""
    asked = batch.network.removesuffix(" -p")
    return batch.network + (f" ({batch.mode})" if batch.mode and batch.mode != asked else "")


def print_batch(batch: Batch) -> None:
    n = len(batch.containers)
    print(f"\n{batch.tool}, network {label(batch)}: {n} idle containers (RSS/PSS/USS, MB)")
    if batch.error:
        print(f"  not measured: {batch.error}")
    for c in batch.containers:
        parts = " + ".join(f"{kind} {pid} {triple(m)}" for kind, pid, m in c.members) or "nothing"
        print(f"  {c.id[:12]}  {parts}  = {triple(c.total())}")
    for s in batch.shared:
        used = "shared per user" if s.used else "shared per user, not used by these containers"
        print(f"  {used}: {s.role} {s.kind} {s.pid} {triple(s.mem)}")
    if batch.containers:
        marginal = median_mem([c.total() for c in batch.containers])
        print(f"  per container, medians: marginal {triple(marginal)}, with the shared processes / {n} "
              f"{triple(plus(marginal, batch.amortised()))}")
    for kind, pid, mem in batch.unattributed:
        print(f"  unattributed (left by the tool, no container claims it): {kind} {pid} {triple(mem)}")
    for note in batch.notes:
        print(f"  note: {note}")
    unreadable = [(m[0], m[1]) for c in batch.containers for m in c.members if not m[2].exact]
    unreadable += [(s.kind, s.pid) for s in batch.shared if not s.mem.exact]
    for kind, pid in unreadable:
        print(f"  note: /proc/{pid}/smaps_rollup ({kind}) is unreadable for this user (the process is not "
              "dumpable or in a user namespace it owns): RSS from /proc/PID/status, PSS and USS shown as its "
              "RssAnon; root can read the exact values")


def print_summary(batches: list[Batch], n: int) -> None:
    print(f"\nPer idle container besides its workload, median of {n} (MB; ~: PSS/USS from RssAnon). Marginal: "
          "the container's own processes, what one more container adds; amortised: marginal + the shared "
          "per-user processes its batch uses, divided by the batch's containers\n")
    print("| tool | network | per container | shared per user | marginal RSS | PSS | USS "
          "| amortised RSS | PSS | USS |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for b in batches:
        if not b.containers:
            print(f"| {b.tool} | {label(b)} | not measured: {b.error or 'no container'} | | | | | | | |")
            continue
        total = median_mem([c.total() for c in b.containers])
        shared = " + ".join(s.kind for s in b.shared if s.used) or "-"
        print(f"| {b.tool} | {label(b)} | {' + '.join(kinds_of(b)) or '-'} | {shared} | {cells(total)} "
              f"| {cells(plus(total, b.amortised()))} |")
    print("\nBy process, median per container (MB)\n")
    print("| tool | network | process | RSS | PSS | USS |")
    print("|---|---|---|---:|---:|---:|")
    for b in batches:
        for kind in kinds_of(b):
            print(f"| {b.tool} | {b.network} | {kind} | {cells(per_kind(b, kind))} |")
    print("\nShared per-user processes, once per user (MB, median over the batches that use them)\n")
    print("| tool | process | role | used by | RSS | PSS | USS |")
    print("|---|---|---|---|---:|---:|---:|")
    groups: dict[tuple[str, str, str], list[tuple[Batch, Shared]]] = {}
    for b in batches:
        for s in b.shared:
            if s.used:
                groups.setdefault((b.tool, s.role, s.kind), []).append((b, s))
    for (tool, role, kind), found in groups.items():
        users = ", ".join(b.network for b, _ in found)
        print(f"| {tool} | {kind} | {role} | {users} | {cells(median_mem([s.mem for _, s in found]))} |")
    print(f"\nrl, at most {TARGET_MB:.0f} MB per idle container (marginal; amortised over {n}):")
    for b in batches:
        if b.tool == "rl" and b.containers:
            total = median_mem([c.total() for c in b.containers])
            figures = []
            for name, mem in (("marginal", total), ("amortised", plus(total, b.amortised()))):
                pss, rss = mem.pss / 1024, mem.rss / 1024
                figures.append(f"{name} by PSS {pss:5.1f} MB {'yes' if pss <= TARGET_MB else 'NO '} "
                               f"by RSS {rss:5.1f} MB {'yes' if rss <= TARGET_MB else 'NO '}")
            print((f"  {b.network:16} " + "   ".join(figures)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="containers per tool and network (default 5)")
    parser.add_argument("--networks", default="default,pasta,slirp4netns,none",
                        help="comma-separated: default (each tool's own: rl's bridge network, whose rootless "
                             "netns has one helper per user), pasta, slirp4netns (a helper per container), none; "
                             "any other --network value is passed as it is")
    parser.add_argument("--publish", action="store_true", help="publish one port per container (-p), but with none")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of idleness before measuring")
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--registry", default=os.environ.get("RL_TEST_REGISTRY", ""))
    args = parser.parse_args()
    if os.getuid() == 0:
        sys.exit("run as an unprivileged user")
    if not args.registry:
        sys.exit("set RL_TEST_REGISTRY=host:port (or --registry) with the fixture images pushed")
    image = f"{args.registry}/rltest/busybox:latest"
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="rl-bench-idle-") as tmp:
        work = Path(tmp)
        home = work / "home"  # neither tool reads the user's own configuration
        runtime_dir = work / "xdg-run"  # podman's pause process, netns and exit files: private, ours to stop
        for d in (home, runtime_dir):
            d.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "RL_", "XDG_"))}
        env.update({MARK: tmp, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime_dir)})
        tools: list[Rl | Podman] = [Rl(work, env)]
        if args.no_podman:
            pass
        elif subprocess.run(["podman", "--version"], capture_output=True).returncode == 0:
            tools.append(Podman(work, env, args.registry))
        else:
            print("podman is not installed: measuring rl alone")
        batches: list[Batch] = []
        try:
            for tool in tools:
                root = work / f"{tool.name}-store"
                tool.pull(root, image)
                for network in networks:
                    batch = measure(tool, root, image, network, args.n, args.publish, args.settle, tmp)
                    print_batch(batch)
                    batches.append(batch)
        finally:
            for tool in tools:
                cleanup(tool, work / f"{tool.name}-store", tmp)
        left = [p for p in processes(tmp).values() if p.marked and p.pid != os.getpid()]
        if left:
            print("\nstill running after the clean-up: " + ", ".join(f"{p.kind} {p.pid}" for p in left))
    print_summary(batches, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
