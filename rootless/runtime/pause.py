"""The pause process: one user namespace (and a mount namespace it owns) per user, kept alive
between rl commands, as podman's pause process does.

Container root is the user, container 1..N are the user's subordinate ids (or only the user's own
id, "single-ID mode", when /etc/subuid has none). Every rl command that acts as root over the store
joins it in-process (``enter``): after that ``os.getuid() == 0`` and the process has every capability
in the namespace, and mounts it makes there are seen by every later rl command.

State in the runtime directory:

    pause.lock    flock(2) held while a pause process is created or stopped
    pause.json    pid, start time and namespace inodes of the pause process, and its maps
    pause.warned  pid and start time of the pause process the single-ID warning was given for

The pause process is a forked child (detached by a double fork and setsid) that unshares the user
namespace, waits for newuidmap/newgidmap (or writes a single-ID map itself), becomes root there,
unshares the mount namespace, makes / a recursive slave and execs ``sleep infinity`` under the
name "rl-pause": about 1 MB instead of a Python interpreter. It keeps no fd of rl's (store, lock),
and its environment is only RL_PAUSE_RUNROOT=<runroot> (``ps eww`` tells which runroot it serves).
SIGHUP, SIGINT and SIGQUIT are ignored; SIGTERM ends it (``migrate``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rootless.config.dirs import ensure_private_dir
from rootless.errors import HostError, RuntimeSetupError
from rootless.log import log
from rootless.records import record
from rootless.runtime import idmap, userns
from rootless.runtime.syscalls import CLONE_NEWNS, CLONE_NEWUSER, MS_REC, MS_SLAVE, SYSCALLS
from rootless.runtime.userns import NamespaceGone, NamespaceInfo

STATE_FILE = "pause.json"
LOCK_FILE = "pause.lock"
WARNED_FILE = "pause.warned"
PROCESS_NAME = "rl-pause"
# The pause process gets only this variable (no secrets of rl's environment): which runroot it serves.
RUNROOT_ENV = "RL_PAUSE_RUNROOT"
# Set to 1 to map only the user's own ids even when /etc/subuid has ranges (tests, debugging).
FORCE_SINGLE_ENV = "RL_USERNS_SINGLE_ID"
STATE_VERSION = 1
WAITERS = ("/bin/sleep", "/usr/bin/sleep")


# ---------------------------------------------------------------- /proc helpers


def parse_stat(text: str) -> tuple[str, int]:
    """(state, start time in clock ticks) from the text of /proc/PID/stat."""
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])  # fields 3 and 22


def proc_stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except (OSError, ValueError, IndexError):
        return None


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (VmRSS), for tests and rl info."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


# ---------------------------------------------------------------- handle and state


@record(frozen=True)
class PauseHandle:
    """A live pause process as recorded in the runtime directory."""

    runroot: Path
    pid: int
    start_time: int  # /proc/PID/stat field 22: tells a recycled pid apart
    userns: int  # inode of /proc/PID/ns/user
    mntns: int  # inode of /proc/PID/ns/mnt
    plan: idmap.MappingPlan
    single_reason: str | None
    host_uid: int
    host_gid: int
    subuid: tuple[idmap.IdRange, ...] = ()
    subgid: tuple[idmap.IdRange, ...] = ()
    created: bool = False  # this call started it

    @property
    def single_id(self) -> bool:
        return self.plan.single

    def info(self) -> NamespaceInfo:
        return NamespaceInfo(
            pause_pid=self.pid,
            uid_map=self.plan.uid_map,
            gid_map=self.plan.gid_map,
            single_id=self.plan.single,
            single_reason=self.single_reason,
            host_uid=self.host_uid,
            host_gid=self.host_gid,
            subuid=list(self.subuid),
            subgid=list(self.subgid),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "pid": self.pid,
            "startTime": self.start_time,
            "userns": self.userns,
            "mntns": self.mntns,
            "single": self.plan.single,
            "singleReason": self.single_reason,
            "uidMap": self.plan.uid_map.as_lists(),
            "gidMap": self.plan.gid_map.as_lists(),
            "hostUid": self.host_uid,
            "hostGid": self.host_gid,
            "subuid": [[r.start, r.count] for r in self.subuid],
            "subgid": [[r.start, r.count] for r in self.subgid],
        }

    @classmethod
    def from_json(cls, runroot: Path, data: dict[str, Any]) -> PauseHandle:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state version {data.get('version')!r}")
        plan = idmap.MappingPlan(
            idmap.IdMap.from_lists(data["uidMap"]), idmap.IdMap.from_lists(data["gidMap"]), bool(data["single"])
        )
        return cls(
            runroot=runroot,
            pid=int(data["pid"]),
            start_time=int(data["startTime"]),
            userns=int(data["userns"]),
            mntns=int(data["mntns"]),
            plan=plan,
            single_reason=data.get("singleReason"),
            host_uid=int(data["hostUid"]),
            host_gid=int(data["hostGid"]),
            subuid=tuple(idmap.IdRange(int(s), int(c)) for s, c in data.get("subuid", [])),
            subgid=tuple(idmap.IdRange(int(s), int(c)) for s, c in data.get("subgid", [])),
        )


def _load(runroot: Path) -> PauseHandle | None:
    try:
        data = json.loads((runroot / STATE_FILE).read_text())
        return PauseHandle.from_json(runroot, data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.debug("ignoring unreadable %s: %s", runroot / STATE_FILE, e)
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _start_time_matches(handle: PauseHandle) -> bool:
    st = proc_stat(handle.pid)
    return st is not None and st[0] not in ("Z", "X", "x") and st[1] == handle.start_time


def is_live(handle: PauseHandle) -> bool:
    """The recorded process still runs, is the one we started, and holds a namespace not ours."""
    if not _start_time_matches(handle):
        return False
    try:
        ino = userns.ns_inode(handle.pid, "user")
        own = userns.ns_inode("self", "user")
    except OSError:
        return False
    if ino != handle.userns:
        return False
    return ino != own or _joined is not None


def _load_live(runroot: Path) -> PauseHandle | None:
    handle = _load(runroot)
    return handle if handle is not None and is_live(handle) else None


@contextlib.contextmanager
def _locked(runroot: Path) -> Iterator[None]:
    fd = os.open(runroot / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def status(runroot: Path) -> PauseHandle | None:
    """The live pause process of ``runroot``, or None; starts nothing (for rl info)."""
    return _load_live(runroot)


# ---------------------------------------------------------------- choosing the maps


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return os.environ.get("USER", str(uid))


def _force_single_from_env() -> bool:
    return os.environ.get(FORCE_SINGLE_ENV, "").strip().lower() in ("1", "true", "yes")


@record(frozen=True)
class _Choice:
    plan: idmap.MappingPlan
    single_reason: str | None
    subuid: list[idmap.IdRange]
    subgid: list[idmap.IdRange]
    warning: str | None


def choose_plan(
    uid: int,
    gid: int,
    user: str,
    subuid: list[idmap.IdRange],
    subgid: list[idmap.IdRange],
    force_single: bool,
) -> _Choice:
    """Full mapping when the user has both uid and gid ranges, else single-ID with a warning."""
    if force_single:
        reason = f"single-ID mapping forced by {FORCE_SINGLE_ENV}=1"
        warning = (
            f"{reason}: only your own uid and gid exist in containers; unset {FORCE_SINGLE_ENV} and run "
            "'rl system migrate' for the full mapping"
        )
        return _Choice(idmap.single_mapping(uid, gid), reason, subuid, subgid, warning)
    missing = [name for name, ranges in ((str(idmap.SUBUID), subuid), (str(idmap.SUBGID), subgid)) if not ranges]
    if missing:
        reason = f"no subordinate ids for {user} in {' and '.join(missing)}"
        warning = (
            f"{reason}: running with a single-ID mapping (files of other users in images become root's); "
            + idmap.GRANT_HINT.format(user=user)
        )
        return _Choice(idmap.single_mapping(uid, gid), reason, subuid, subgid, warning)
    return _Choice(idmap.full_mapping(uid, gid, subuid, subgid), None, subuid, subgid, None)


def _warn_once(handle: PauseHandle, warning: str | None) -> None:
    if not warning:
        return
    marker = handle.runroot / WARNED_FILE
    stamp = f"{handle.pid} {handle.start_time}\n"
    try:
        if marker.read_text() == stamp:
            return
    except OSError:
        pass
    log.warning("%s", warning)
    with contextlib.suppress(OSError):
        _write_atomic(marker, stamp)


# ---------------------------------------------------------------- ensure


_joined: NamespaceInfo | None = None
_joined_handle: PauseHandle | None = None


def ensure(
    runroot: Path,
    *,
    force_single: bool | None = None,
    timeout: float = 30.0,
) -> PauseHandle:
    """The live pause process of ``runroot``, started if there is none.

    Two rl processes starting at once create one pause process (flock on runroot/pause.lock).
    ``force_single`` (default: $RL_USERNS_SINGLE_ID) maps only the user's own ids; it only matters
    when a pause process is created. Raises HostError (host problem, with the admin's fix) or
    RuntimeSetupError.
    """
    runroot = Path(os.path.abspath(runroot))
    if _joined_handle is not None and _joined_handle.runroot == runroot:
        return _joined_handle
    uid, gid = os.getuid(), os.getgid()
    ensure_private_dir(runroot, uid)
    handle = _load_live(runroot)
    if handle is None:
        if _joined is not None:
            raise RuntimeSetupError(
                f"cannot start a pause process for {runroot}: this process is already inside a user namespace",
                "this is a bug in rl: please report it",
            )
        with _locked(runroot):
            handle = _load_live(runroot)
            if handle is None:
                user = _user_name(uid)
                choice = choose_plan(
                    uid, gid, user,
                    idmap.read_subids(idmap.SUBUID, user, uid),
                    idmap.read_subids(idmap.SUBGID, user, uid),
                    _force_single_from_env() if force_single is None else force_single,
                )
                for stale in (STATE_FILE, WARNED_FILE):
                    with contextlib.suppress(FileNotFoundError):
                        (runroot / stale).unlink()
                handle = _create(runroot, choice, uid, gid, user, timeout)
                try:
                    _write_atomic(runroot / STATE_FILE, json.dumps(handle.to_json()) + "\n")
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.kill(handle.pid, signal.SIGKILL)
                    raise
                _warn_once(handle, choice.warning)
                return handle
    if handle.single_id and handle.single_reason:
        # normally given by the creator; here only when it crashed before writing the marker
        _warn_once(handle, f"{handle.single_reason}: running with a single-ID mapping")
    return handle


def _waiter_argv() -> list[str]:
    """The program to exec, then its argv (argv[0] is the name ps shows)."""
    for path in WAITERS:
        if os.access(path, os.X_OK):
            return [path, PROCESS_NAME, "infinity"]
    # no coreutils: a Python interpreter (~10 MB) that waits forever
    return [sys.executable, PROCESS_NAME, "-S", "-c", "import signal\nwhile True: signal.pause()"]


def _send(fd: int, msg: dict[str, Any]) -> None:
    os.write(fd, json.dumps(msg).encode())


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    """The next message from the child, or None at end of file (its end closed on exec or exit)."""
    data = sock.recv(65536)
    if not data:
        return None
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError(f"bad message {data!r}")
    return msg


def _create(runroot: Path, choice: _Choice, uid: int, gid: int, user: str, timeout: float) -> PauseHandle:
    plan = choice.plan
    argv = _waiter_argv()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # both close-on-exec
    try:
        first = os.fork()
    except OSError as e:
        ours.close()
        theirs.close()
        raise RuntimeSetupError(f"cannot start the pause process: fork failed: {e.strerror}") from None
    if first == 0:  # pragma: no cover - runs in the intermediate child
        code = 1
        try:
            ours.close()
            os.setsid()
            if os.fork() == 0:
                _pause_main(theirs.fileno(), plan, argv, {RUNROOT_ENV: str(runroot)})
            code = 0
        except BaseException as e:
            with contextlib.suppress(BaseException):
                _send(theirs.fileno(), {"error": "fork", "errno": getattr(e, "errno", None), "message": str(e)})
        finally:
            os._exit(code)
    theirs.close()
    os.waitpid(first, 0)
    pid: int | None = None
    try:
        ours.settimeout(timeout)
        msg = _expect(ours, "unshared")
        pid = int(msg["pid"])
        if not plan.single:
            try:
                idmap.run_map_helper("newuidmap", pid, plan.uid_map, user)
                idmap.run_map_helper("newgidmap", pid, plan.gid_map, user)
            except HostError as e:
                host = userns.diagnose_setup_failure(e.message, errno.EPERM) if "refused" in e.message else None
                raise (host or e) from None
        ours.send(json.dumps({"cmd": "go"}).encode())
        _expect(ours, "exec")
        end = _recv(ours)
        if end is not None:
            _raise_child_error(end)
        # exec done: the child's end of the socket closed with it
        st = proc_stat(pid)
        if st is None or st[0] in ("Z", "X", "x"):
            raise RuntimeSetupError(
                f"the pause process {pid} exited right after it started", "run 'rl system migrate' and try again"
            )
        handle = PauseHandle(
            runroot=runroot,
            pid=pid,
            start_time=st[1],
            userns=userns.ns_inode(pid, "user"),
            mntns=userns.ns_inode(pid, "mnt"),
            plan=plan,
            single_reason=choice.single_reason,
            host_uid=uid,
            host_gid=gid,
            subuid=tuple(choice.subuid),
            subgid=tuple(choice.subgid),
            created=True,
        )
        got_uid, got_gid = idmap.read_map(pid, "uid_map"), idmap.read_map(pid, "gid_map")
        if got_uid != plan.uid_map or got_gid != plan.gid_map:
            raise RuntimeSetupError(
                f"the pause process {pid} has uid map {got_uid.as_lists()} and gid map {got_gid.as_lists()}, "
                f"not {plan.uid_map.as_lists()} and {plan.gid_map.as_lists()}",
                "run 'rl system migrate' and try again",
            )
        return handle
    except BaseException:
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        raise
    finally:
        ours.close()


def _expect(sock: socket.socket, stage: str) -> dict[str, Any]:
    try:
        msg = _recv(sock)
    except TimeoutError:
        raise RuntimeSetupError(
            f"the pause process did not report '{stage}' in time", "run 'rl system migrate' and try again"
        ) from None
    except (OSError, ValueError) as e:
        raise RuntimeSetupError(f"cannot read from the starting pause process: {e}") from None
    if msg is None:
        raise RuntimeSetupError(
            f"the pause process exited before '{stage}' without saying why",
            "run 'rl system migrate' and try again",
        )
    if msg.get("stage") != stage:
        _raise_child_error(msg)
    return msg


def _raise_child_error(msg: dict[str, Any]) -> None:
    stage = msg.get("error", "?")
    err = msg.get("errno")
    if stage == "unshare" and isinstance(err, int):
        raise userns.diagnose_unshare_failure(err)
    detail = msg.get("message") or (os.strerror(err) if isinstance(err, int) else "unknown error")
    host = userns.diagnose_setup_failure(f"cannot start the pause process: {stage} failed", err)
    if host is not None:
        raise host
    raise RuntimeSetupError(
        f"cannot start the pause process: {stage} failed: {detail}",
        "run 'rl system migrate' and try again",
    )


def _pause_main(
    fd: int, plan: idmap.MappingPlan, argv: list[str], env: dict[str, str]
) -> None:  # pragma: no cover - runs in the pause process
    """The pause process until it execs the waiter. Never returns; every failure goes to the parent."""
    stage = "setup"
    try:
        for name in os.listdir("/proc/self/fd"):
            n = int(name)
            if n > 2 and n != fd:
                with contextlib.suppress(OSError):
                    os.close(n)
        null = os.open("/dev/null", os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(null, n)
        if null > 2:
            os.close(null)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        stage = "unshare"
        SYSCALLS.unshare(CLONE_NEWUSER)
        _send(fd, {"stage": "unshared", "pid": os.getpid()})
        stage = "wait for maps"
        reply = os.read(fd, 4096)
        if not reply or json.loads(reply).get("cmd") != "go":
            os._exit(1)  # the parent gave up (newuidmap failed): it reports why
        if plan.single:
            stage = "maps"
            idmap.write_maps("self", plan)
        stage = "become root"
        if not plan.single:
            os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        stage = "mount namespace"
        SYSCALLS.unshare(CLONE_NEWNS)
        SYSCALLS.mount(None, "/", None, MS_REC | MS_SLAVE)
        os.chdir("/")
        stage = "exec"
        _send(fd, {"stage": "exec"})
        os.execve(argv[0], argv[1:], env)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            text = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            _send(fd, {"error": stage, "errno": getattr(e, "errno", None), "message": text})
    finally:
        os._exit(1)


# ---------------------------------------------------------------- join / enter / migrate


def join(handle: PauseHandle) -> NamespaceInfo:
    """Join the pause process's user namespace, then its mount namespace, in this process.

    Afterwards ``os.getuid() == 0`` with every capability in the namespace, and the working
    directory is the same path as before. Must run before any thread starts. A second call is a
    no-op returning the same info. Raises ``NamespaceGone`` (nothing changed) when the pause
    process died since ``ensure``; ``enter`` retries then.
    """
    global _joined, _joined_handle
    if _joined is not None:
        return _joined
    userns.join_namespaces(handle.pid, handle.userns, handle.mntns, lambda: _start_time_matches(handle))
    _joined, _joined_handle = handle.info(), handle
    return _joined


def enter(runroot: Path, *, force_single: bool | None = None) -> NamespaceInfo:
    """ensure + join: start or reuse the pause process of ``runroot`` and join its namespaces."""
    if _joined is not None:
        return _joined
    handle = ensure(runroot, force_single=force_single)
    try:
        return join(handle)
    except NamespaceGone:
        handle = ensure(runroot, force_single=force_single)  # it died in between: start a new one
    try:
        return join(handle)
    except NamespaceGone as e:
        raise RuntimeSetupError(
            f"cannot join the pause process of {runroot}: {e}", "run 'rl system migrate' and try again"
        ) from None


def current() -> NamespaceInfo | None:
    """The namespace this process joined, or None."""
    return _joined


def _wait_gone(pidfd: int, seconds: float) -> bool:
    readable, _, _ = select.select([pidfd], [], [], seconds)
    return bool(readable)


def stop(handle: PauseHandle, timeout: float = 5.0) -> bool:
    """SIGTERM the pause process, SIGKILL after ``timeout``. False when it was already gone."""
    try:
        pidfd = os.pidfd_open(handle.pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd_open (Linux < 5.3): signal by pid, re-checking the start time
        return _stop_by_pid(handle, timeout)
    try:
        if not _start_time_matches(handle):  # checked after pidfd_open: the pidfd pins this process
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                return True
            if _wait_gone(pidfd, wait):
                return True
        raise RuntimeSetupError(
            f"cannot stop the pause process {handle.pid}: it survived SIGKILL",
            f"check 'cat /proc/{handle.pid}/status'",
        )
    finally:
        os.close(pidfd)


def _stop_by_pid(handle: PauseHandle, timeout: float) -> bool:
    if not _start_time_matches(handle):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not _start_time_matches(handle):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _start_time_matches(handle):
                return True
            time.sleep(0.01)
    raise RuntimeSetupError(
        f"cannot stop the pause process {handle.pid}: it survived SIGKILL", f"check 'cat /proc/{handle.pid}/status'"
    )


def migrate(runroot: Path, timeout: float = 5.0) -> int | None:
    """Stop the pause process of ``runroot`` and forget it (``rl system migrate``), so the next
    command maps ids again, e.g. after /etc/subuid changed. Returns the pid stopped, or None."""
    runroot = Path(os.path.abspath(runroot))
    if not runroot.is_dir():
        return None
    stopped = None
    with _locked(runroot):
        handle = _load(runroot)
        if handle is not None and is_live(handle) and stop(handle, timeout):
            stopped = handle.pid
        for name in (STATE_FILE, WARNED_FILE):
            with contextlib.suppress(FileNotFoundError):
                (runroot / name).unlink()
    return stopped


__all__ = [
    "FORCE_SINGLE_ENV",
    "NamespaceGone",
    "NamespaceInfo",
    "PauseHandle",
    "current",
    "ensure",
    "enter",
    "join",
    "migrate",
    "rss_kib",
    "status",
    "stop",
]
