"""Per-container leaf cgroups under the user's delegated subtree: create, limit, freeze, kill, measure, remove.

Layout under the delegated subtree D (see ``rootless.cgroups.detect``)::

    D/                    cgroup.subtree_control: the rl controllers D has (cpu cpuset io memory pids)
    D/rl-monitor/         processes that were in D (rl itself, the user's shell): cgroup v2 lets a
                          non-root cgroup enable controllers for its children only while it holds no
                          processes, so they move here first
    D/[PARENT/]rl-<id12>/ one leaf per container, with its limits

``prepare()`` is what the engine calls before starting a container; ``Leaf`` is the handle it keeps
(``Leaf.at(path)`` reopens one from the path stored in the container's state).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from rootless.cgroups.detect import RL_CONTROLLERS, CgroupInfo, controllers, detect, problem, subtree_control
from rootless.cgroups.host import Host
from rootless.cgroups.limits import Limits, limit_files
from rootless.errors import ConflictError, HostError, RuntimeSetupError, UsageError
from rootless.log import log
from rootless.records import record

MONITOR = "rl-monitor"
LEAF_PREFIX = "rl-"
MODES = ("error", "warn")


def leaf_name(container_id: str) -> str:
    return LEAF_PREFIX + container_id[:12]


def _why(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


def _pids(host: Host, directory: str) -> list[int]:
    return [int(p) for p in host.read_or(f"{directory}/cgroup.procs").split() if p.isdigit()]


def evacuate(host: Host, directory: str, rounds: int = 20) -> str:
    """Move every process of ``directory`` into its ``rl-monitor`` leaf; the leaf's path."""
    monitor = f"{directory}/{MONITOR}"
    host.mkdir(monitor)
    for _ in range(rounds):
        pids = _pids(host, directory)
        if not pids:
            return monitor
        for pid in pids:
            try:
                host.write(f"{monitor}/cgroup.procs", str(pid))
            except ProcessLookupError:
                continue  # exited meanwhile
            except OSError as error:
                if error.errno == errno.ESRCH:
                    continue
                raise HostError(
                    f"cannot move process {pid} from {directory} to {monitor}: {_why(error)}",
                    "cgroup v2 forbids processes next to child cgroups that use controllers;"
                    f" move the processes of {directory} into a child cgroup",
                ) from error
    raise HostError(
        f"cannot empty {directory}: processes keep appearing in it",
        "start rl from a child cgroup of the delegated subtree",
    )


def enable(host: Host, directory: str, wanted: list[str], refused: dict[str, str] | None = None) -> list[str]:
    """Enable the ``wanted`` controllers ``directory`` has in its cgroup.subtree_control, moving its
    processes out first when needed; the controllers enabled afterwards. ``refused`` collects why the
    kernel refused some (controller -> strerror)."""
    have = controllers(host, directory)
    on = subtree_control(host, directory)
    todo = [c for c in wanted if c in have and c not in on]
    if not todo:
        return on
    if _pids(host, directory):
        evacuate(host, directory)
    for name in todo:  # one at a time: one controller the kernel refuses must not block the others
        try:
            host.write(f"{directory}/cgroup.subtree_control", f"+{name}")
        except OSError as error:
            log.debug("cgroups: enabling %s in %s: %s", name, directory, _why(error))
            if refused is not None:
                refused[name] = _why(error)
            continue
    return subtree_control(host, directory)


def enable_path(
    host: Host, top: str, parts: list[str], wanted: list[str], refused: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """Create ``top/parts...`` and enable ``wanted`` top-down along it; (the last directory, its
    enabled controllers)."""
    directory = top
    enabled = enable(host, directory, wanted, refused)
    for part in parts:
        directory = f"{directory}/{part}"
        host.mkdir(directory)
        enabled = enable(host, directory, [c for c in wanted if c in enabled], refused)
    return directory, enabled


@record(frozen=True)
class Stats:
    """One sample of a leaf's counters. None: the controller is not enabled there."""

    time: float  # time.monotonic() of the sample
    cpu_usec: int
    memory_current: int | None
    memory_max: int | None  # None: unlimited or no memory controller
    pids_current: int | None
    pids_max: int | None
    io_read_bytes: int
    io_write_bytes: int


def cpu_percent(before: Stats, after: Stats) -> float:
    """CPU use between two samples as docker shows it: 100 per fully used CPU."""
    elapsed = after.time - before.time
    if elapsed <= 0:
        return 0.0
    return max(0.0, (after.cpu_usec - before.cpu_usec) / (elapsed * 1e6) * 100.0)


def _keyed(text: str) -> dict[str, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


@record
class Leaf:
    """A container's cgroup: an absolute directory under the delegated subtree."""

    path: str
    host: Host

    @classmethod
    def at(cls, path: str, host: Host | None = None) -> Leaf:
        return cls(path, host or Host())

    # ---------------------------------------------------------------- membership

    @property
    def procs_file(self) -> str:
        """The leaf's cgroup.procs; a process writes "0" to it to join (before unshare(CLONE_NEWCGROUP))."""
        return f"{self.path}/cgroup.procs"

    def open_procs(self) -> int:
        """An O_WRONLY|O_CLOEXEC fd on cgroup.procs: open it in rl, write b"0" to it from the child."""
        return os.open(self.host.path(self.procs_file), os.O_WRONLY | os.O_CLOEXEC)

    def add_pid(self, pid: int) -> None:
        try:
            self.host.write(self.procs_file, str(pid))
        except OSError as error:
            raise HostError(
                f"cannot move process {pid} into cgroup {self.path}: {_why(error)}",
                "rl must run inside the delegated cgroup subtree (cgroup v2 only lets a user move"
                " processes between cgroups whose common ancestor is theirs)",
            ) from error

    def pids(self) -> list[int]:
        return _pids(self.host, self.path)

    def events(self) -> dict[str, int]:
        return _keyed(self.host.read_or(f"{self.path}/cgroup.events"))

    def populated(self) -> bool:
        events = self.events()
        if "populated" in events:
            return events["populated"] == 1
        return bool(self.pids())

    def exists(self) -> bool:
        return self.host.exists(self.path)

    # ---------------------------------------------------------------- limits

    def files(self) -> set[str]:
        return set(self.host.listdir(self.path))

    def apply(self, limits: Limits) -> None:
        """Write ``limits`` (only the ones set) to the leaf's files."""
        if limits.memory_swap is not None and limits.memory is None:
            current = _number(self.host.read_or(f"{self.path}/memory.max"))
            if current is not None:
                limits = limits.merged(Limits(memory=current))
        present = self.files()
        if limits.memory_swap is not None and "memory.swap.max" not in present:
            log.warning("the kernel has no swap accounting (no memory.swap.max): --memory-swap is ignored")
        for name, value in limit_files(limits, present):
            try:
                self.host.write(f"{self.path}/{name}", value)
            except OSError as error:
                if error.errno in (errno.EINVAL, errno.ERANGE, errno.EBUSY):
                    hint = "check the value against what the host has"
                    if name.startswith("cpuset."):
                        effective = self.host.read_or(f"{self.path}/{name}.effective").strip()
                        hint = f"the host offers {effective or 'other'} here"
                    raise UsageError(f"cannot set {name} to {value!r} in {self.path}: {_why(error)}", hint) from error
                raise HostError(
                    f"cannot write {name} in {self.path}: {_why(error)}",
                    "the controller may not be enabled in the delegated subtree",
                ) from error

    def update(self, limits: Limits) -> None:
        """Change limits of a running container (docker update)."""
        self.apply(limits)

    # ---------------------------------------------------------------- freeze, kill

    def _wait_event(self, key: str, value: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if self.events().get(key) == value:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _freezer(self, value: int, timeout: float) -> None:
        word = "freeze" if value else "thaw"
        try:
            self.host.write(f"{self.path}/cgroup.freeze", str(value))
        except OSError as error:
            raise RuntimeSetupError(f"cannot {word} cgroup {self.path}: {_why(error)}") from error
        if not self._wait_event("frozen", value, timeout):
            raise RuntimeSetupError(f"cannot {word} cgroup {self.path}: not {word}d after {timeout:g}s")

    def freeze(self, timeout: float = 5.0) -> None:
        """Write cgroup.freeze 1 and wait for cgroup.events "frozen 1"."""
        self._freezer(1, timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._freezer(0, timeout)

    def frozen(self) -> bool:
        return self.events().get("frozen") == 1

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the leaf (cgroup.kill, else pid by pid until it stays empty)."""
        deadline = time.monotonic() + timeout
        use_kill_file = self.host.exists(f"{self.path}/cgroup.kill")
        if use_kill_file:
            try:
                self.host.write(f"{self.path}/cgroup.kill", "1")
            except OSError as error:
                if error.errno == errno.ENOENT:
                    return  # the leaf is gone already
                use_kill_file = False
        while True:
            pids = self.pids()
            if not pids:
                return
            if not use_kill_file:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                raise RuntimeSetupError(
                    f"cannot kill the processes of cgroup {self.path}: {len(pids)} still there after {timeout:g}s"
                )
            time.sleep(0.01)

    # ---------------------------------------------------------------- stats, OOM

    def stats(self) -> Stats:
        read = self.host.read_or
        cpu = _keyed(read(f"{self.path}/cpu.stat"))
        io_read = io_write = 0
        for line in read(f"{self.path}/io.stat").splitlines():
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "rbytes" and value.isdigit():
                    io_read += int(value)
                elif key == "wbytes" and value.isdigit():
                    io_write += int(value)
        return Stats(
            time=time.monotonic(),
            cpu_usec=cpu.get("usage_usec", 0),
            memory_current=_number(read(f"{self.path}/memory.current")),
            memory_max=_number(read(f"{self.path}/memory.max")),
            pids_current=_number(read(f"{self.path}/pids.current")),
            pids_max=_number(read(f"{self.path}/pids.max")),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
        )

    def memory_events(self) -> dict[str, int]:
        return _keyed(self.host.read_or(f"{self.path}/memory.events"))

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process in the leaf (docker's OOMKilled)."""
        return self.memory_events().get("oom_kill", 0) > 0

    # ---------------------------------------------------------------- removal

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir the leaf once its processes are gone, retrying briefly while the kernel lets go."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.host.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise RuntimeSetupError(f"cannot remove cgroup {self.path}: {_why(error)}") from error
            time.sleep(0.01)


# ---------------------------------------------------------------- the engine's entry points


def no_cgroup(info: CgroupInfo, limits: Limits, mode: str = "error") -> None:
    """When ``limits`` can't be applied on this host: raise the HostError (mode "error") or log it as a
    warning (mode "warn"). Nothing when no limits are asked for or they can be applied."""
    if mode not in MODES:
        raise UsageError(f"invalid limits.without_cgroup {mode!r}", "use error or warn")
    if limits.empty():
        return
    error = problem(info, limits.controllers(), limits.flags())
    if error is None:
        return
    if mode == "warn":
        hint = (error.hint or "").split("; or set limits.without_cgroup")[0]
        log.warning("%s; running the container without limits (%s)", error.message, hint)
        return
    raise error


def prepare(
    container_id: str,
    limits: Limits,
    *,
    mode: str = "error",
    root: str | None = None,
    parent: str = "",
    host: Host | None = None,
    info: CgroupInfo | None = None,
) -> Leaf | None:
    """A leaf cgroup for a container, with ``limits`` written, or None when there is none to have.

    ``root``: the delegated subtree the engine was configured with (default: detected);
    ``parent``: a relative path under it for the leaves (created, controllers enabled top-down).
    No limits: a leaf when the host offers one (for stats, pause, kill), else None, silently.
    Limits the host can't honour: HostError with the admin's fix (mode "error"), or a warning and
    None (mode "warn"). The leaf must be empty or new: a leftover leaf is reused when empty.
    """
    host = host or Host()
    info = info or detect(host, root)
    if limits.empty():
        if not info.usable:
            return None
        try:
            return _make_leaf(host, info, container_id, limits, parent)
        except (HostError, OSError) as error:
            log.debug("cgroups: no leaf for %s: %s", container_id[:12], error)
            return None
    if problem(info, limits.controllers(), limits.flags()) is not None:
        no_cgroup(info, limits, mode)
        return None
    try:
        return _make_leaf(host, info, container_id, limits, parent)
    except HostError as error:
        if mode == "warn":
            log.warning("%s; running the container without limits", error.line())
            return None
        raise


def _make_leaf(host: Host, info: CgroupInfo, container_id: str, limits: Limits, parent: str) -> Leaf:
    assert info.delegated is not None
    wanted = [c for c in RL_CONTROLLERS if c in info.controllers]
    parts = [p for p in parent.split("/") if p]
    refused: dict[str, str] = {}
    try:
        directory, enabled = enable_path(host, info.delegated, parts, wanted, refused)
    except OSError as error:
        raise HostError(
            f"cannot prepare cgroup {info.delegated}/{parent}: {_why(error)}",
            "the delegated subtree must be owned by the user",
        ) from error
    missing = [c for c in limits.controllers() if c not in enabled]
    if missing:
        why = "; ".join(f"{c}: {refused[c]}" for c in missing if c in refused)
        raise HostError(
            f"cannot apply {', '.join(limits.flags())}: could not enable {' '.join(missing)} in {directory}"
            f"/cgroup.subtree_control ({why + '; ' if why else ''}enabled: {' '.join(enabled) or 'none'})",
            "an admin must enable the controllers in every ancestor's cgroup.subtree_control"
            " (helpers/enable-cgroup-delegation.sh does); cpuset also refuses (EPERM) while processes of"
            " other users are in the subtree",
        )
    path = f"{directory}/{leaf_name(container_id)}"
    try:
        created = host.mkdir(path)
    except OSError as error:
        raise HostError(
            f"cannot create cgroup {path}: {_why(error)}", "the delegated subtree must be writable"
        ) from error
    leaf = Leaf(path, host)
    if not created and leaf.pids():
        raise ConflictError(f"cgroup {path} already holds processes", "stop the container that uses it first")
    try:
        leaf.apply(limits)
    except BaseException:
        with contextlib.suppress(RuntimeSetupError):
            leaf.remove(timeout=0.2)
        raise
    return leaf


def describe(host: Host | None = None, root: str | None = None) -> dict[str, object]:
    """For ``rl info``: layout, delegated subtree, controllers available there, and why not."""
    return detect(host, root).describe()
