"""The seam between the cgroup code and the machine: every /proc and /sys access goes through ``Host``.

``Host()`` is the real machine. Unit tests pass ``FakeHost(root=tmp_path, statfs=..., uid=...)`` with a
fake tree (``tmp_path/proc/self/cgroup``, ``tmp_path/sys/fs/cgroup/...``); paths handed to the methods
are always absolute host paths ("/sys/fs/cgroup/x") and are resolved under ``root``.

Writes to cgroup files are one ``write(2)`` each, so the kernel's answer (EBUSY, EINVAL, ENOENT...) comes
back as the ``OSError`` of that write.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rootless.records import field, record

CGROUP_ROOT = "/sys/fs/cgroup"

StatfsType = Callable[[str], int]


def _real_statfs(path: str) -> int:
    from rootless.runtime.syscalls import SYSCALLS

    return SYSCALLS.statfs_type(path)


@record
class Host:
    """Reads and writes under ``root``; ``statfs`` returns f_type of a host path (raises OSError)."""

    root: Path = Path("/")
    statfs: StatfsType | None = None
    uid: int = field(default_factory=os.getuid)
    pid: int = field(default_factory=os.getpid)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def path(self, host_path: str) -> Path:
        if self.root == Path("/"):
            return Path(host_path)
        return self.root / host_path.lstrip("/")

    def statfs_type(self, host_path: str) -> int:
        if self.statfs is not None:
            return self.statfs(host_path)
        if self.root != Path("/"):
            raise OSError(38, f"statfs({host_path!r}): no statfs in a fake tree")
        return _real_statfs(host_path)

    def read(self, host_path: str) -> str:
        return self.path(host_path).read_text()

    def read_or(self, host_path: str, default: str = "") -> str:
        try:
            return self.read(host_path)
        except OSError:
            return default

    def write(self, host_path: str, text: str) -> None:
        fd = os.open(self.path(host_path), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def owner(self, host_path: str) -> int | None:
        try:
            return self.path(host_path).stat().st_uid
        except OSError:
            return None

    def mkdir(self, host_path: str) -> bool:
        """Create a directory; False when it already existed."""
        try:
            os.mkdir(self.path(host_path))
        except FileExistsError:
            return False
        return True

    def rmdir(self, host_path: str) -> None:
        os.rmdir(self.path(host_path))

    def listdir(self, host_path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError:
            return []

    def sd_booted(self) -> bool:
        """systemd's own test: /run/systemd/system exists."""
        return self.path("/run/systemd/system").is_dir()


@record
class FakeHost(Host):
    """A cgroupfs imitation in a plain directory tree, for unit tests.

    mkdir creates the interface files (cgroup.controllers = the parent's cgroup.subtree_control);
    "+x"/"-x" writes edit cgroup.subtree_control; a pid written to cgroup.procs leaves every other
    cgroup; cgroup.freeze sets "frozen" in cgroup.events; cgroup.kill empties cgroup.procs.
    Every write is recorded in ``writes`` as (host path, text).
    """

    root: Path = Path("/nonexistent")
    writes: list[tuple[str, str]] = field(default_factory=list)
    refuse: dict[str, int] = field(default_factory=dict)  # host path -> errno its writes fail with
    owners: dict[str, int] = field(default_factory=dict)  # host path -> the owner stat would show

    def owner(self, host_path: str) -> int | None:
        if host_path in self.owners:
            return self.owners[host_path]
        return super().owner(host_path)

    def write(self, host_path: str, text: str) -> None:
        if host_path in self.refuse:
            err = self.refuse[host_path]
            raise OSError(err, f"{os.strerror(err)}: {host_path}")
        self.writes.append((host_path, text))
        path = self.path(host_path)
        if not path.exists():
            raise FileNotFoundError(2, f"No such file or directory: {host_path}")
        name = path.name
        if name == "cgroup.subtree_control":
            enabled = path.read_text().split()
            for token in text.split():
                if token[0] == "+" and token[1:] not in enabled:
                    enabled.append(token[1:])
                elif token[0] == "-" and token[1:] in enabled:
                    enabled.remove(token[1:])
            path.write_text(" ".join(enabled))
        elif name == "cgroup.procs":
            for other in self.path(CGROUP_ROOT).rglob("cgroup.procs"):
                pids = other.read_text().split()
                if text in pids:
                    other.write_text("\n".join(p for p in pids if p != text))
            path.write_text(path.read_text() + text + "\n")
        elif name == "cgroup.freeze":
            events = path.with_name("cgroup.events")
            lines = [ln for ln in events.read_text().splitlines() if not ln.startswith("frozen ")]
            events.write_text("\n".join([*lines, f"frozen {text.strip()}"]) + "\n")
            path.write_text(text)
        elif name == "cgroup.kill":
            path.with_name("cgroup.procs").write_text("")
        else:
            path.write_text(text)

    def mkdir(self, host_path: str) -> bool:
        if not super().mkdir(host_path):
            return False
        parent = host_path.rsplit("/", 1)[0]
        files = {
            "cgroup.procs": "",
            "cgroup.subtree_control": "",
            "cgroup.threads": "",
            "cgroup.events": "populated 0\nfrozen 0\n",
            "cgroup.freeze": "0",
            "cgroup.kill": "",
            "cgroup.controllers": self.read_or(f"{parent}/cgroup.subtree_control"),
        }
        for name, text in files.items():
            self.path(f"{host_path}/{name}").write_text(text)
        for controller in self.read_or(f"{parent}/cgroup.subtree_control").split():
            for name in CONTROLLER_FILES.get(controller, ()):
                self.path(f"{host_path}/{name}").write_text("max" if name.endswith(".max") else "")
        return True

    def rmdir(self, host_path: str) -> None:
        path = self.path(host_path)
        if any(p.is_dir() for p in path.iterdir()) or self.read_or(f"{host_path}/cgroup.procs").split():
            raise OSError(16, f"Device or resource busy: {host_path}")
        for child in path.iterdir():
            child.unlink()
        os.rmdir(path)


CONTROLLER_FILES = {
    "memory": ("memory.max", "memory.swap.max", "memory.low", "memory.current", "memory.events"),
    "cpu": ("cpu.max", "cpu.weight"),
    "cpuset": ("cpuset.cpus", "cpuset.mems"),
    "pids": ("pids.max", "pids.current"),
    "io": ("io.weight", "io.stat"),
}
