"""Container records: one JSON file per container, written atomically, changed under locks.

Layout under the store root S:
  S/containers/<id>/container.json   the record (configuration and last known state)
  S/containers/<id>/lock             per-container lock for state changes
  S/containers.lock                  taken to create, rename or remove (names stay unique)

A record that says "running" is only believed while its process exists with the start time that
was recorded: after a crash of the monitor or of the whole machine, ``refresh`` tells the truth.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rootless.errors import ConflictError, NotFoundError, StorageError, UsageError
from rootless.procfs import start_time
from rootless.records import asdict, field, fields, record
from rootless.state import atomic, locks
from rootless.timefmt import now_rfc3339

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
CGROUP_KEY = "cgroup"  # record.extra: the container's cgroup leaf (absolute path), when it has one

_ADJECTIVES = (
    "agile", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "eager", "fair", "fancy",
    "gentle", "happy", "hardy", "jolly", "keen", "kind", "lucid", "merry", "nimble", "noble", "patient",
    "quick", "quiet", "sharp", "shy", "steady", "sunny", "swift", "tender", "upbeat", "vivid", "witty",
    "zealous",
)
_NOUNS = (
    "babbage", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "fermi", "galois", "gauss",
    "hopper", "hypatia", "kepler", "knuth", "lamport", "liskov", "lovelace", "maxwell", "meitner",
    "noether", "pascal", "ritchie", "shannon", "thompson", "torvalds", "turing", "wozniak", "yonath",
)


def new_id() -> str:
    # secrets.token_hex(32) is os.urandom(32).hex(); importing secrets costs ~3 ms (hmac, OpenSSL's hashlib)
    return os.urandom(32).hex()


def generate_name(taken: set[str]) -> str:
    def pick(words: tuple[str, ...]) -> str:
        return words[int.from_bytes(os.urandom(4), "little") % len(words)]  # no random module: 0.4 ms

    for _ in range(100):
        name = f"{pick(_ADJECTIVES)}_{pick(_NOUNS)}"
        if name not in taken:
            return name
    return f"{pick(_ADJECTIVES)}_{pick(_NOUNS)}_{os.urandom(3).hex()}"


def empty_state() -> dict[str, Any]:
    return {
        "Status": "created",
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "0001-01-01T00:00:00Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }


@record
class ContainerRecord:
    id: str
    name: str
    image: str  # the image as the user named it, normalised
    image_id: str  # sha256:<config digest>
    created: str
    config: dict[str, Any] = field(default_factory=dict)  # docker's Config
    host_config: dict[str, Any] = field(default_factory=dict)  # docker's HostConfig
    state: dict[str, Any] = field(default_factory=empty_state)
    driver: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # rl's own: pid start time, monitor, runtime paths

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def running(self) -> bool:
        return bool(self.state.get("Running"))


def boot_id() -> str:
    """This boot's ID: a record from another boot describes no process that still runs."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start_time(pid: int, proc: Path = Path("/proc")) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when there is no such process."""
    return start_time(pid, str(proc))


class ContainerStore:
    def __init__(self, root: Path, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.dir = root / "containers"
        self.proc = proc

    # paths
    def path(self, cid: str) -> Path:
        return self.dir / cid

    def record_path(self, cid: str) -> Path:
        return self.dir / cid / "container.json"

    def _global_lock(self) -> locks.FileLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return locks.exclusive(self.root / "containers.lock", what="the container list")

    def lock(self, cid: str) -> locks.FileLock:
        return locks.exclusive(self.path(cid) / "lock", what=f"container {cid[:12]}")

    # reading
    def _load(self, cid: str) -> ContainerRecord | None:
        data = atomic.read_json(self.record_path(cid), default=None, what="container record")
        if data is None:
            return None
        return ContainerRecord.from_json(data)

    def ids(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.dir) if e.is_dir() and len(e.name) == 64)
        except FileNotFoundError:
            return []

    def list(self) -> list[ContainerRecord]:
        records = []
        for cid in self.ids():
            try:
                record = self._load(cid)
            except StorageError:
                continue
            if record is not None:
                records.append(self.refresh(record))
        return sorted(records, key=lambda r: r.created, reverse=True)

    def names(self) -> set[str]:
        return {r.name for r in self.list()}

    def get(self, ref: str) -> ContainerRecord:
        """By name, full ID, or unique ID prefix (docker's rules)."""
        ref = ref.lstrip("/")
        records = self.list()
        for r in records:
            if r.name == ref or r.id == ref:
                return r
        if ref and re.fullmatch(r"[0-9a-f]+", ref):
            matches = [r for r in records if r.id.startswith(ref)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(
                    f"container ID prefix {ref!r} is ambiguous: it matches {len(matches)} containers",
                    "give more characters of the ID, or the name",
                )
        raise NotFoundError(f"no such container: {ref}", "list containers with 'rl ps -a'")

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except NotFoundError:
            return False
        return True

    # the truth about "running"
    def refresh(self, record: ContainerRecord) -> ContainerRecord:
        """The record as things are now. A record that says "running" is believed only while its
        process exists with the recorded start time (same boot) and, for a detached container, while
        its monitor lives: a container whose monitor died is stopped here (nothing would read its
        output or record its end). The end comes from the monitor's exit file when there is one."""
        if not record.state.get("Running"):
            return record
        pid = int(record.state.get("Pid") or 0)
        started = record.extra.get("pid_start_time")
        same_boot = record.extra.get("boot_id") in (None, "", boot_id())
        alive = same_boot and pid > 0 and process_start_time(pid, self.proc) == started
        monitor_pid = int(record.extra.get("monitor_pid") or 0)
        monitor_alive = same_boot and monitor_pid > 0 and \
            process_start_time(monitor_pid, self.proc) == record.extra.get("monitor_start_time")
        if monitor_alive and (alive or self._exit_file(record.id) is None):
            return record  # running, or ended a moment ago: the monitor writes the exit file next
        if alive and monitor_pid:
            if self._exit_file(record.id) is None:
                # the monitor died (SIGKILL, OOM): stop the orphaned container so that "exited" is true
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                alive = False
        elif alive:
            return record
        state = dict(record.state)
        exit_status = self._exit_file(record.id) if same_boot else None
        if exit_status is not None and not alive:
            state.update(Status="exited", Running=False, Paused=False, Pid=0,
                         ExitCode=int(exit_status.get("exit_code", 0)),
                         FinishedAt=str(exit_status.get("finished_at") or now_rfc3339()))
        elif not alive:
            state.update(Status="exited", Running=False, Paused=False, Pid=0, FinishedAt=now_rfc3339())
            if state.get("ExitCode", 0) == 0:
                state["ExitCode"] = 255
            state["Error"] = state.get("Error") or "container process vanished without a recorded exit"
        else:  # pragma: no cover - alive and no monitor: unreachable
            return record
        record.state = state
        self._persist_state(record, pid)
        return record

    def _exit_file(self, cid: str) -> dict[str, Any] | None:
        try:
            data = atomic.read_json(self.path(cid) / "exit.json", default=None, what="exit file")
        except StorageError:
            return None
        return data if isinstance(data, dict) else None

    def _persist_state(self, record: ContainerRecord, old_pid: int) -> None:
        """Best effort: save the corrected state unless someone holds the record's lock right now."""
        try:
            lock = locks.FileLock(self.path(record.id) / "lock", timeout=0, create=True)
            if not lock.try_acquire():
                return
        except (StorageError, OSError):
            return
        try:
            current = self._load(record.id)
            if current is not None and current.state.get("Running") and int(current.state.get("Pid") or 0) == old_pid:
                current.state = record.state
                self.save(current)
        except (StorageError, OSError):
            pass
        finally:
            lock.release()

    # writing
    def create(self, record: ContainerRecord) -> ContainerRecord:
        if record.name and not NAME_RE.match(record.name):
            raise UsageError(
                f"invalid container name {record.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                "choose another --name",
            )
        with self._global_lock():
            taken = self.names()
            if not record.name:
                record.name = generate_name(taken)
            elif record.name in taken:
                other = next(r for r in self.list() if r.name == record.name)
                raise ConflictError(
                    f'the container name "{record.name}" is already in use by container {other.id[:12]}',
                    "remove that container or choose another --name",
                )
            self.path(record.id).mkdir(parents=True, exist_ok=False)
            self.save(record)
        return record

    def save(self, record: ContainerRecord) -> None:
        # Atomic, not durable: after a crash the record may be a step behind, and refresh() makes
        # "running" tell the truth anyway. An fsync per state change would cost rl run ~10 ms.
        atomic.atomic_write_json(self.record_path(record.id), record.to_json(), durable=False)

    @contextmanager
    def update(self, cid: str) -> Iterator[ContainerRecord]:
        """Read-modify-write one record under its lock."""
        with self.lock(cid):
            record = self._load(cid)
            if record is None:
                raise NotFoundError(f"no such container: {cid}")
            yield record
            self.save(record)

    def set_state(self, cid: str, change: Callable[[dict[str, Any]], None]) -> ContainerRecord:
        with self.update(cid) as record:
            change(record.state)
        return record

    def rename(self, ref: str, new_name: str) -> ContainerRecord:
        if not NAME_RE.match(new_name):
            raise UsageError(f"invalid container name {new_name!r}", "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        with self._global_lock():
            record = self.get(ref)
            if new_name in self.names() - {record.name}:
                raise ConflictError(f'the container name "{new_name}" is already in use', "choose another name")
            record.name = new_name
            self.save(record)
        return record

    def remove(self, cid: str, background: bool = False) -> None:
        """Delete a container's directory. The record disappears at once (an atomic rename); with
        ``background`` the files are deleted by a detached child, so the caller can return."""
        with self._global_lock():
            target = self.path(cid)
            if not target.exists():
                return
            trash = self.dir / f".removing-{cid}-{os.getpid()}"
            os.rename(target, trash)
        if background and os.fork() == 0:  # pragma: no cover - the child
            try:
                os.setsid()
                import shutil  # in the child: `rl run --rm` returns without paying for it

                shutil.rmtree(trash, onerror=_force_remove)
            finally:
                os._exit(0)
        if not background:
            import shutil

            shutil.rmtree(trash, onerror=_force_remove)

    def remove_leftovers(self) -> None:
        """Directories of removals that a crash interrupted."""
        import shutil

        for entry in self.dir.glob(".removing-*") if self.dir.exists() else []:
            shutil.rmtree(entry, onerror=_force_remove)


def _force_remove(func: Callable[..., Any], path: str, exc_info: Any) -> None:
    """rmtree's onerror: make a directory writable and try again (layers may hold 0555 dirs)."""
    import shutil

    parent = os.path.dirname(path)
    try:
        os.chmod(parent, 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, onerror=_force_remove)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
