"""The per-container monitor: what keeps a detached container company after rl exits (docker's shim,
podman's conmon).

The engine calls ``start_monitor`` from inside rl's user namespace (after ``pause.enter``)::

    cfg = MonitorConfig(container_id=cid, spec=spec, run_dir=f"{runroot}/containers/{cid}",
                        log_path=f"{store}/containers/{cid}/container.log", log_max_size=10 << 20,
                        log_max_files=3, exit_file=f"{store}/containers/{cid}/exit.json",
                        on_exit="rootless.engine.lifecycle:container_exited" if rm else "")
    try:
        started = start_monitor(cfg)          # returns once the command was exec'd in the container
    except CommandNotFoundError: ...          # 127; CannotInvokeError 126; RuntimeSetupError 125
    try:
        record running, Pid=started.pid, pid_start_time=started.pid_start_time, monitor_pid=...
    finally:
        started.release()                     # the monitor may now record the exit and run on_exit

``rl create`` + ``rl start -a``: ``MonitorConfig(hold=True)`` sets the container up and stops before
exec; attach first (``rootless.runtime.attach``), then ``started.start()`` (raises like launch).

How it runs: rl forks, the child calls setsid and forks the monitor (the middle process exits: the
monitor has its own session, no controlling terminal and no parent to die with; it survives rl and
the user's shell). The monitor ignores SIGHUP/SIGINT/SIGQUIT/SIGTERM, chdirs to /, puts /dev/null on
0-2, closes every inherited descriptor, and launches the container with
``rootless.runtime.process.launch`` (pipes for stdout/stderr, a pipe for stdin with ``stdin``, the
container's pty with ``spec.tty``). It writes the state file, answers rl over the readiness channel
(the pid, or the typed failure), and then *re-executes* itself as a fresh ``python -I -S`` that
imports only os/json/selectors/signal/socket and ``rootless.runtime.logs``: the container stays its
child across execve, and the idle monitor does not carry rl's memory or the launch code (about
10 MB RSS, 5 MB PSS instead of ~30 MB; ``bench/monitor_memory.py`` measures it).

The event loop (selectors, no threads): container output goes to the log (``rootless.runtime.logs``,
docker's json-file or k8s-file, size-capped rotation) and to every attached client; clients' stdin
goes to the container; resize requests go to the pty. When the container exits the monitor drains
its output (at most ``DRAIN_SECONDS`` more when a process outside the container's PID namespace still
holds the pipes), closes the log, writes the exit file atomically::

    {"exit_code": 137, "signal": 9, "pid": 4242, "started_at": "...Z", "finished_at": "...Z",
     "oom_killed": false}

(exit code as docker: 128+N for signal N), tells attached clients, waits until rl released the
readiness channel (so rl's own record update comes first), calls ``on_exit`` ("module:function",
imported only now, with rl's sys.path restored: ``function(container_id, exit_status)``, e.g. --rm
cleanup), and finally execs ``cleanup_argv`` if given, or exits.

Files in ``run_dir``: ``state.json`` {pid, pid_start_time, started_at, monitor_pid,
monitor_start_time}; ``attach`` (SOCK_SEQPACKET socket, protocol below); ``monitor.log`` (only the
monitor's own errors). ``exit_file`` defaults to ``run_dir/exit.json``; put it in the persistent
store to keep exit codes across reboots.

When the monitor dies (SIGKILL, OOM): nothing kills the container (as with conmon: no PDEATHSIG,
which could not work anyway since the container's parent at fork time is the short-lived setup
process). It is re-parented to the user's subreaper or init and keeps running; its output pipes have
no reader any more, so its next write gets SIGPIPE/EPIPE. The truth stays visible: ``status()`` says
running while the pid exists with the recorded start time, and once it is gone without an exit file
it reports exit code 255 with an error ("vanished"), which is what ``ContainerStore.refresh`` does.
``rl stop``/``rl rm -f`` signal the recorded pid (checking the start time) either way.

Attach protocol (``attach`` socket, SOCK_SEQPACKET, one message per packet, the first byte its type):

    client -> monitor  b"H" + JSON {"stdin": bool, "stdout": bool, "stderr": bool}  first, optional
                       b"0" + data   stdin for the container (ignored unless the monitor has stdin)
                       b"C"          the client's stdin ended (closes the container's stdin when
                                     ``stdin_once``, docker's StdinOnce)
                       b"R" + b"ROWS COLS"   resize the container's terminal
    monitor -> client  b"1" + data   stdout (all terminal output with a tty)
                       b"2" + data   stderr
                       b"X" + JSON {"exit_code": N}   the container exited; the monitor closes next

This module is what the idle monitor runs: its module-level imports must stay light (no dataclasses,
typing, ctypes or rl's launch code); ``start_monitor`` imports those lazily in rl's process.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time

from rootless.procfs import start_time as _start_time
from rootless.runtime import logs

TYPE_CHECKING = False  # typing would cost the idle monitor ~1 MB
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from rootless.runtime.process import ContainerProcess
    from rootless.runtime.spec import ContainerSpec

STATE_FILE = "state.json"
EXIT_FILE = "exit.json"
ATTACH_SOCKET = "attach"
MONITOR_LOG = "monitor.log"
PROCESS_NAME = "rl-monitor"
DRAIN_SECONDS = 2.0  # after the exit, how long output pipes held open by others are still read
RELEASE_SECONDS = 30.0  # after the exit, how long to wait for rl to release the readiness channel
READY_TIMEOUT = 300.0  # how long start_monitor waits for the container to start
VANISHED_EXIT_CODE = 255
NO_REEXEC_ENV = "RL_MONITOR_NO_REEXEC"  # "1": the monitor keeps running in the forked rl image (benchmarks)
CLIENT_FLUSH_SECONDS = 5.0  # at the exit, how long a slow attach client gets to take its last output
CLIENT_BACKLOG = 4 << 20  # bytes queued for a slow attach client before it is dropped
STDIN_BACKLOG = 4 << 20  # bytes of attach clients' input queued for a container that does not read it

# attach protocol message types
HELLO = b"H"
STDIN = b"0"
CLOSE_STDIN = b"C"
RESIZE = b"R"
STDOUT = b"1"
STDERR = b"2"
EXIT = b"X"
MAX_PACKET = 65536 + 1


def now_rfc3339() -> str:
    return logs.format_time(time.time_ns())


# ---------------------------------------------------------------- configuration and paths


class Paths:
    """Where one container's monitor keeps its files (all but ``exit_file`` live in ``run_dir``)."""

    def __init__(self, run_dir: str, exit_file: str = "") -> None:
        self.run_dir = str(run_dir)
        self.exit_file = str(exit_file) or os.path.join(self.run_dir, EXIT_FILE)

    @property
    def state_file(self) -> str:
        return os.path.join(self.run_dir, STATE_FILE)

    @property
    def attach_socket(self) -> str:
        return os.path.join(self.run_dir, ATTACH_SOCKET)

    @property
    def monitor_log(self) -> str:
        return os.path.join(self.run_dir, MONITOR_LOG)

    def __repr__(self) -> str:
        return f"Paths({self.run_dir!r}, {self.exit_file!r})"


class MonitorConfig:
    """What the monitor needs; JSON-serialisable (``to_dict``/``from_dict``).

    container_id  the container's ID (for ps, messages, on_exit)
    spec          the ContainerSpec to launch (spec.tty: a pty instead of pipes)
    run_dir       the container's runtime directory (created 0700 if missing)
    exit_file     where the exit status goes (default run_dir/exit.json)
    log_path      the log file ("" or log_driver "none": no log)
    log_driver    "json-file" (docker's), "k8s-file" (podman's) or "none"
    log_max_size  rotate when the file reaches this many bytes (0: never); log_max_files: files kept
    stdin         keep the container's stdin open for attach clients (-i); else /dev/null
    stdin_once    close the container's stdin when an attached client's stdin ends (docker StdinOnce)
    console_size  (rows, columns) of the container's terminal at start
    hold          set up, then wait for MonitorResult.start() before exec (rl create/start -a)
    on_exit       "module:function" called in the monitor after the exit file is written, as
                  function(container_id, exit_status_dict); imported only then
    on_exit_arg   a string passed to on_exit as a third argument when not empty
    cgroup        a cgroup directory the container joins before its namespaces exist ("" : none)
    cleanup_argv  a command the monitor execs at the very end (after on_exit)
    sys_path      the import path on_exit is imported with (default: the caller's sys.path)
    """

    def __init__(
        self,
        container_id: str,
        spec: ContainerSpec | dict[str, Any],
        run_dir: str,
        *,
        exit_file: str = "",
        log_path: str = "",
        log_driver: str = logs.JSON_FILE,
        log_max_size: int = 0,
        log_max_files: int = 1,
        stdin: bool = False,
        stdin_once: bool = False,
        console_size: tuple[int, int] | list[int] | None = None,
        hold: bool = False,
        on_exit: str = "",
        cleanup_argv: list[str] | None = None,
        sys_path: list[str] | None = None,
        on_exit_arg: str = "",
        cgroup: str = "",
    ) -> None:
        if log_driver not in logs.DRIVERS:
            raise ValueError(f"unknown log driver {log_driver!r}: use one of {', '.join(logs.DRIVERS)}")
        if on_exit and ":" not in on_exit:
            raise ValueError(f"on_exit must be 'module:function', not {on_exit!r}")
        self.container_id = container_id
        self.spec = spec
        self.run_dir = str(run_dir)
        self.exit_file = str(exit_file)
        self.log_path = str(log_path)
        self.log_driver = log_driver
        self.log_max_size = int(log_max_size)
        self.log_max_files = int(log_max_files)
        self.stdin = stdin
        self.stdin_once = stdin_once
        self.console_size = tuple(console_size) if console_size else None
        self.hold = hold
        self.on_exit = on_exit
        self.cleanup_argv = list(cleanup_argv or [])
        self.sys_path = list(sys.path if sys_path is None else sys_path)
        self.on_exit_arg = str(on_exit_arg)
        self.cgroup = str(cgroup)

    @property
    def paths(self) -> Paths:
        return Paths(self.run_dir, self.exit_file)

    def spec_object(self) -> ContainerSpec:
        from rootless.runtime.spec import from_dict

        if isinstance(self.spec, dict):
            return from_dict(self.spec)
        return self.spec

    def to_dict(self) -> dict[str, Any]:
        from rootless.records import asdict

        return {
            "container_id": self.container_id,
            "spec": self.spec if isinstance(self.spec, dict) else asdict(self.spec),
            "run_dir": self.run_dir,
            "exit_file": self.exit_file,
            "log_path": self.log_path,
            "log_driver": self.log_driver,
            "log_max_size": self.log_max_size,
            "log_max_files": self.log_max_files,
            "stdin": self.stdin,
            "stdin_once": self.stdin_once,
            "console_size": list(self.console_size) if self.console_size else None,
            "hold": self.hold,
            "on_exit": self.on_exit,
            "cleanup_argv": self.cleanup_argv,
            "sys_path": self.sys_path,
            "on_exit_arg": self.on_exit_arg,
            "cgroup": self.cgroup,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MonitorConfig:
        data = dict(data)
        return cls(data.pop("container_id"), data.pop("spec"), data.pop("run_dir"), **data)


# ---------------------------------------------------------------- small file helpers (no rl imports)


def _write_json_atomic(path: str, obj: dict[str, Any], durable: bool = False) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        data = (json.dumps(obj, sort_keys=True) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------- reading the truth (rl's side)


def read_state(paths: Paths) -> dict[str, Any] | None:
    """The state file: pid, pid_start_time, started_at, monitor_pid, monitor_start_time."""
    return _read_json(paths.state_file)


def read_exit(paths: Paths) -> dict[str, Any] | None:
    """The exit file, or None while the container runs (or when its monitor died)."""
    return _read_json(paths.exit_file)


def exited(paths: Paths) -> bool:
    """The monitor recorded the exit (and wrote the last log entries before): ``read_logs``'s stop_when."""
    return os.path.exists(paths.exit_file)


def is_running(pid: int, start_time: int | None) -> bool:
    """``pid`` is alive and is the process started at ``start_time`` (not a recycled pid)."""
    return pid > 0 and start_time is not None and _start_time(pid) == start_time


def monitor_alive(paths: Paths) -> bool:
    state = read_state(paths)
    if not state:
        return False
    return is_running(int(state.get("monitor_pid") or 0), state.get("monitor_start_time"))


def status(paths: Paths) -> dict[str, Any]:
    """What is true now: {"running": bool, "pid": N, "exit": exit status or None, "monitor": bool}.

    The exit status is the exit file's; when the process is gone and nothing recorded its end (the
    monitor was killed), it is {"exit_code": 255, "error": "...vanished...", ...}.
    """
    state = read_state(paths) or {}
    pid = int(state.get("pid") or 0)
    result: dict[str, Any] = {"running": False, "pid": pid, "exit": read_exit(paths), "monitor": False}
    result["monitor"] = is_running(int(state.get("monitor_pid") or 0), state.get("monitor_start_time"))
    if result["exit"] is not None:
        return result
    if is_running(pid, state.get("pid_start_time")):
        result["running"] = True
        return result
    if result["monitor"]:
        # exited a moment ago: the monitor is draining the output and will write the exit file
        return result
    if exited(paths):  # written between our two reads
        result["exit"] = read_exit(paths)
        return result
    if state:
        result["exit"] = {
            "exit_code": VANISHED_EXIT_CODE, "signal": None, "pid": pid, "oom_killed": False,
            "started_at": state.get("started_at"), "finished_at": None,
            "error": "the container's process vanished without a recorded exit (its monitor died)",
        }
    return result


def wait_exit(paths: Paths, timeout: float | None = None, poll: float = 0.02) -> dict[str, Any] | None:
    """Block until the container has exited and return its exit status (see ``status``); None on timeout.

    Waits on a pidfd of the container's process (no polling while it runs), then for the exit file
    the monitor writes after draining the output.
    """
    import select

    deadline = None if timeout is None else time.monotonic() + timeout
    state = read_state(paths) or {}
    pid = int(state.get("pid") or 0)
    if pid > 0 and read_exit(paths) is None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            try:
                if is_running(pid, state.get("pid_start_time")):
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    ready, _, _ = select.select([pidfd], [], [], left)
                    if not ready:
                        return None
            finally:
                os.close(pidfd)
    while True:
        now = status(paths)
        if now["exit"] is not None:
            return dict(now["exit"])
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(poll)


# ---------------------------------------------------------------- starting (rl's side)


class MonitorResult:
    """The started container: ``pid`` (in rl's namespace), ``pid_start_time``, ``started_at``,
    ``monitor_pid``. Call ``release()`` once rl recorded the start (the monitor waits for it before
    it records the exit and runs on_exit); with ``hold``, ``start()`` lets the command exec."""

    def __init__(self, data: dict[str, Any], chan: socket.socket, paths: Paths, fds: list[int] | None = None) -> None:
        self.netns_fd: int | None = fds[0] if fds else None  # held with a new network namespace: its fd
        for extra in (fds or [])[1:]:
            os.close(extra)
        self.pid = int(data["pid"])
        self.pid_start_time = int(data["pid_start_time"])
        self.started_at = str(data["started_at"])
        self.monitor_pid = int(data["monitor_pid"])
        self.monitor_start_time = int(data["monitor_start_time"])
        self.paths = paths
        self.held = bool(data.get("held"))
        self._chan: socket.socket | None = chan

    def start(self) -> None:
        """Let a held container exec its command; raises CommandNotFoundError etc. as launch does."""
        if self._chan is None or not self.held:
            from rootless.errors import RuntimeSetupError

            raise RuntimeSetupError("the container is not waiting to be started")
        self._chan.send(b"start")
        reply = _recv_json(self._chan, READY_TIMEOUT)
        if reply is None or not reply.get("ok"):
            self.release()
            _raise_failure(reply)
        self.held = False
        self.started_at = str(reply.get("started_at", self.started_at))

    def release(self) -> None:
        self.close_netns()
        if self._chan is not None:
            self._chan.close()
            self._chan = None

    def close_netns(self) -> None:
        if self.netns_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.netns_fd)
            self.netns_fd = None

    def __enter__(self) -> MonitorResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _recv_json(chan: socket.socket, timeout: float, fds: list[int] | None = None) -> dict[str, Any] | None:
    chan.settimeout(timeout)
    try:
        data, received, _, _ = socket.recv_fds(chan, MAX_PACKET, 4)
        if fds is not None:
            fds.extend(received)
        else:
            for fd in received:
                os.close(fd)
    except TimeoutError:
        from rootless.errors import RuntimeSetupError

        raise RuntimeSetupError(f"the container's monitor did not answer within {timeout:.0f} s") from None
    finally:
        chan.settimeout(None)
    if not data:
        return None
    msg = json.loads(data)
    return msg if isinstance(msg, dict) else None


def _raise_failure(reply: dict[str, Any] | None) -> NoReturn:
    from rootless.errors import CannotInvokeError, CommandNotFoundError, HostError, RuntimeSetupError, UsageError

    if reply is None:
        raise RuntimeSetupError("the container's monitor exited before the container started",
                                "see the monitor's log in the container's runtime directory")
    kinds: dict[str, type[Exception]] = {
        "not_found": CommandNotFoundError, "cannot_invoke": CannotInvokeError, "host": HostError,
        "usage": UsageError,
    }
    kind = kinds.get(str(reply.get("kind")), RuntimeSetupError)
    raise kind(str(reply.get("message", "starting the container failed")), reply.get("hint"))


def start_monitor(config: MonitorConfig) -> MonitorResult:
    """Start the container under a new monitor; return once its command was exec'd (with ``hold``:
    once it waits for ``start()``). Must be called inside rl's user namespace (after pause.enter),
    single-threaded. Raises CommandNotFoundError (127), CannotInvokeError (126), RuntimeSetupError."""
    from rootless.errors import RuntimeSetupError

    if os.getuid() != 0:
        raise RuntimeSetupError("start_monitor must run inside rl's user namespace (call pause.enter first)",
                                "this is a bug in rl: please report it")
    spec = config.spec_object()
    paths = config.paths
    os.makedirs(paths.run_dir, mode=0o700, exist_ok=True)
    for stale in (paths.exit_file, paths.state_file, paths.attach_socket):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        try:
            ours.close()
            os.setsid()
            if os.fork() == 0:
                _first_stage(config, spec, theirs)
        finally:
            os._exit(0)
    theirs.close()
    os.waitpid(middle, 0)
    fds: list[int] = []
    try:
        reply = _recv_json(ours, READY_TIMEOUT, fds)
    except BaseException:
        ours.close()
        raise
    if reply is None or not reply.get("ok"):
        ours.close()
        for fd in fds:
            os.close(fd)
        _raise_failure(reply)
    return MonitorResult(reply, ours, paths, fds)


# ---------------------------------------------------------------- the monitor, first stage (forked from rl)


def _failure_message(e: BaseException) -> dict[str, Any]:
    from rootless.errors import CannotInvokeError, CommandNotFoundError, HostError, RLError, UsageError

    kind = "setup"
    if isinstance(e, CommandNotFoundError):
        kind = "not_found"
    elif isinstance(e, CannotInvokeError):
        kind = "cannot_invoke"
    elif isinstance(e, HostError):
        kind = "host"
    elif isinstance(e, UsageError):
        kind = "usage"
    if isinstance(e, RLError):
        return {"ok": False, "kind": kind, "message": e.message, "hint": e.hint}
    return {"ok": False, "kind": kind, "message": f"starting the container failed: {type(e).__name__}: {e}"}


def _send(chan: socket.socket, obj: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        chan.send(json.dumps(obj).encode())


def _detach_process(keep: set[int]) -> None:  # pragma: no cover - monitor process
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP,
                   signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _bind_attach(run_dir: str) -> socket.socket:
    """The listening attach socket, bound through /proc/self/fd so long paths fit (sun_path: 108)."""
    dfd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(f"/proc/self/fd/{dfd}/{ATTACH_SOCKET}")
        os.chmod(os.path.join(run_dir, ATTACH_SOCKET), 0o600)
        sock.listen(16)
        return sock
    finally:
        os.close(dfd)


def _first_stage(config: MonitorConfig, spec: ContainerSpec, chan: socket.socket) -> None:  # pragma: no cover
    """In the monitor before its re-exec: launch the container, report, then exec the lean monitor."""
    paths = config.paths
    try:
        _detach_process({chan.fileno()})
        from rootless.runtime import process

        if config.stdin:
            stdin_r, stdin_w = os.pipe()
        else:
            stdin_r, stdin_w = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC), -1
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        listener = _bind_attach(paths.run_dir)
        procs_fd = None
        if config.cgroup:
            procs_fd = os.open(os.path.join(config.cgroup, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        try:
            proc = process.launch(
                spec, stdin=stdin_r, stdout=out_w, stderr=err_w, hold=config.hold,
                console_size=tuple(config.console_size) if config.console_size else None,  # type: ignore[arg-type]
                cgroup_procs=procs_fd,
            )
        finally:
            if procs_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(procs_fd)
        for fd in (stdin_r, out_w, err_w):
            os.close(fd)
        if proc.pty is not None:  # tty: the pipes are unused, the terminal carries everything
            os.close(out_r)
            os.close(err_r)
            out_r, err_r = proc.pty, -1
            if config.stdin:
                os.close(stdin_w)
                stdin_w = os.dup(proc.pty)
    except BaseException as e:
        with contextlib.suppress(OSError):  # before reporting: the caller may look right after
            os.unlink(paths.attach_socket)
        _send(chan, _failure_message(e))
        os._exit(1)
    try:
        started_at = now_rfc3339()
        state = {
            "pid": proc.pid, "pid_start_time": _start_time(proc.pid) or 0, "started_at": started_at,
            "monitor_pid": os.getpid(), "monitor_start_time": _start_time(os.getpid()),
            "container_id": config.container_id, "tty": proc.pty is not None, "held": config.hold,
        }
        _write_json_atomic(paths.state_file, state)
        netns = getattr(proc, "netns", None)
        if config.hold and netns is not None:
            with contextlib.suppress(OSError):
                socket.send_fds(chan, [json.dumps({"ok": True, **state}).encode()], [netns])
        else:
            _send(chan, {"ok": True, **state})
        if config.hold:
            if chan.recv(16) != b"start":
                _kill_and_exit(proc)
            try:
                proc.start()
            except BaseException as e:
                _send(chan, _failure_message(e))
                _kill_and_exit(proc)
            if proc.netns is not None:  # the network is attached: the namespace lives with the container
                with contextlib.suppress(OSError):
                    os.close(proc.netns)
                proc.netns = None
            started_at = now_rfc3339()
            _write_json_atomic(paths.state_file, {**state, "started_at": started_at, "held": False})
            _send(chan, {"ok": True, "started_at": started_at})
        _exec_lean(config, proc, {"out": out_r, "err": err_r, "in": stdin_w, "listen": listener.fileno(),
                                   "chan": chan.fileno()}, started_at)
    except BaseException as e:
        _log_error(paths, f"monitor start-up failed: {type(e).__name__}: {e}")
        _kill_and_exit(proc)


def _kill_and_exit(proc: ContainerProcess) -> None:  # pragma: no cover - monitor process
    proc.close()
    try:
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
    except OSError:
        pass
    os._exit(1)


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_BOOT = ("import sys;sys.path.insert(0,sys.argv[3]);"
         "from rootless.runtime.monitor import _lean_main;_lean_main(sys.argv[4])")


def _exec_lean(config: MonitorConfig, proc: ContainerProcess, fds: dict[str, int],
               started_at: str) -> None:  # pragma: no cover - monitor process
    for fd in fds.values():
        if fd >= 0:
            os.set_inheritable(fd, True)
    args = {
        "id": config.container_id, "pid": proc.pid, "fds": fds, "tty": proc.pty is not None,
        "run_dir": config.run_dir, "exit_file": config.paths.exit_file, "started_at": started_at,
        "log_path": config.log_path if config.log_driver != logs.NONE else "", "log_driver": config.log_driver,
        "log_max_size": config.log_max_size, "log_max_files": config.log_max_files,
        "stdin_once": config.stdin_once, "on_exit": config.on_exit, "cleanup_argv": config.cleanup_argv,
        "sys_path": config.sys_path, "on_exit_arg": config.on_exit_arg,
    }
    if os.environ.get(NO_REEXEC_ENV) == "1":  # bench/monitor_memory.py: what the re-exec saves
        _lean_main(json.dumps(args))
    argv = [sys.executable, "-I", "-S", "-c", _BOOT, PROCESS_NAME, config.container_id[:12], _package_root(),
            json.dumps(args)]
    os.execv(sys.executable, argv)


def _log_error(paths: Paths | str, message: str) -> None:
    path = paths.monitor_log if isinstance(paths, Paths) else paths
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{now_rfc3339()} {message}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


# ---------------------------------------------------------------- the monitor, after the re-exec


class _Client:
    __slots__ = ("backlog", "out", "queue", "sock", "stderr", "stdin", "stdout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # nothing is sent to a client before its hello says what it wants
        self.stdin = False
        self.stdout = False
        self.stderr = False
        self.queue: list[bytes] = []
        self.backlog = 0
        self.out = False  # registered for EVENT_WRITE


class _Monitor:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.pid = int(args["pid"])
        fds = args["fds"]
        self.tty = bool(args["tty"])
        self.run_dir = str(args["run_dir"])
        self.log_file = os.path.join(self.run_dir, MONITOR_LOG)
        self.sel = selectors.DefaultSelector()
        self.streams: dict[int, str] = {}
        for key, name in (("out", "stdout"), ("err", "stderr")):
            if fds[key] >= 0:
                os.set_blocking(fds[key], False)
                self.streams[fds[key]] = name
                self.sel.register(fds[key], selectors.EVENT_READ, "stream")
        self.stdin_fd = int(fds["in"])
        self.stdin_buf = b""
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)
        self.stdin_once = bool(args.get("stdin_once"))
        self.listener = socket.socket(fileno=fds["listen"])
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.chan: socket.socket | None = socket.socket(fileno=fds["chan"])
        self.sel.register(self.chan, selectors.EVENT_READ, "chan")
        self.clients: dict[int, _Client] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.log: logs.LogWriter | None = None
        if args.get("log_path"):
            try:
                self.log = logs.LogWriter(args["log_path"], args.get("log_driver") or logs.JSON_FILE,
                                          int(args.get("log_max_size") or 0), int(args.get("log_max_files") or 1))
            except (OSError, ValueError) as e:
                _log_error(self.log_file, f"cannot open the log {args['log_path']}: {e}")
        self.status: int | None = None
        self.exited_at = 0.0

    # -- events
    def run(self) -> dict[str, Any]:
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        signal.set_wakeup_fd(self.wake_w)
        self._reap()  # it may have exited before the handler existed
        self._accept()  # clients that connected before the re-exec see all output
        while True:
            if self.status is not None and (not self.streams or time.monotonic() - self.exited_at > DRAIN_SECONDS):
                break
            timeout: float | None = None
            if self.log is not None and (deadline := self.log.next_deadline()) is not None:
                timeout = max(0.0, deadline - time.time())
            if self.status is not None:
                left = max(0.0, DRAIN_SECONDS - (time.monotonic() - self.exited_at))
                timeout = left if timeout is None else min(timeout, left)
            for key, events in self.sel.select(timeout):
                what = key.data
                if what == "stream":
                    self._read_stream(key.fd)
                elif what == "listen":
                    self._accept()
                elif what == "wake":
                    self._drain_wake()
                    self._reap()
                elif what == "chan":
                    self._chan_event()
                elif what == "stdin":
                    self._flush_stdin()
                elif isinstance(what, _Client):
                    if events & selectors.EVENT_WRITE:
                        self._flush_client(what)
                    if events & selectors.EVENT_READ and what.sock.fileno() in self.clients:
                        self._client_message(what)
            if self.log is not None:
                self.log.flush_partial()
        return self._finish()

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid and self.status is None:  # others: orphans of a --pid host container
                self.status = status
                self.exited_at = time.monotonic()

    def _read_stream(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: the pty's last slave closed
            if e.errno != errno.EIO:
                _log_error(self.log_file, f"reading the container's output failed: {e}")
            data = b""
        if not data:
            self.sel.unregister(fd)
            del self.streams[fd]
            if self.tty and self.stdin_fd >= 0:
                self._close_stdin()
            os.close(fd)
            return
        stream = self.streams[fd]
        if self.log is not None:
            self.log.write(stream, data)
        kind = STDOUT if stream == "stdout" else STDERR
        for client in list(self.clients.values()):
            if client.stdout if kind == STDOUT else client.stderr:
                self._send(client, kind + data)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                _log_error(self.log_file, f"accepting an attach client failed: {e}")
                return
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[sock.fileno()] = client
            self.sel.register(sock, selectors.EVENT_READ, client)
            # read the hello now, so output read later reaches this client as it asked
            self._client_message(client)

    def _chan_event(self) -> None:
        assert self.chan is not None
        try:
            data = self.chan.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # rl released us
            self.sel.unregister(self.chan)
            self.chan.close()
            self.chan = None

    # -- clients
    def _send(self, client: _Client, packet: bytes) -> None:
        if client.queue:
            client.queue.append(packet)
            client.backlog += len(packet)
            if client.backlog > CLIENT_BACKLOG:
                self._drop(client)
            return
        try:
            client.sock.send(packet)
        except BlockingIOError:
            client.queue.append(packet)
            client.backlog += len(packet)
            if not client.out:
                client.out = True
                self.sel.modify(client.sock, self._client_events(client), client)
        except OSError:
            self._drop(client)

    def _client_events(self, client: _Client) -> int:
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)

    def _flush_client(self, client: _Client) -> None:
        while client.queue:
            try:
                client.sock.send(client.queue[0])
            except BlockingIOError:
                return
            except OSError:
                self._drop(client)
                return
            client.backlog -= len(client.queue.pop(0))
        client.out = False
        self.sel.modify(client.sock, self._client_events(client), client)

    def _drop(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if fd in self.clients:
            del self.clients[fd]
            self.sel.unregister(client.sock)
        client.sock.close()
        if client.stdin and self.stdin_once and not any(c.stdin for c in self.clients.values()):
            self._close_stdin()

    def _client_message(self, client: _Client) -> None:
        try:
            packet = client.sock.recv(MAX_PACKET)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if not packet:
            self._drop(client)
            return
        kind, payload = packet[:1], packet[1:]
        if kind == HELLO:
            try:
                opts = json.loads(payload)
            except ValueError:
                opts = {}
            client.stdin = bool(opts.get("stdin", False))
            client.stdout = bool(opts.get("stdout", True))
            client.stderr = bool(opts.get("stderr", True))
            self._send(client, HELLO)  # the client waits for this: output from now on reaches it
        elif kind == STDIN:
            if self.stdin_fd >= 0 and payload:
                if len(self.stdin_buf) > STDIN_BACKLOG:
                    _log_error(self.log_file, "the container does not read its stdin: input dropped")
                    return
                self.stdin_buf += payload
                self._flush_stdin()
        elif kind == CLOSE_STDIN:
            client.stdin = False
            if self.stdin_once:
                self._close_stdin()
        elif kind == RESIZE and self.tty:
            self._resize(payload)

    def _resize(self, payload: bytes) -> None:
        import fcntl
        import struct
        import termios

        try:
            rows, cols = (int(x) for x in payload.split())
            master = next(fd for fd in self.streams)  # with a tty the only stream is the master
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except (ValueError, OSError, StopIteration):
            pass

    def _flush_stdin(self) -> None:
        while self.stdin_buf and self.stdin_fd >= 0:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # the container closed its stdin
                self.stdin_buf = b""
                self._close_stdin()
                break
            self.stdin_buf = self.stdin_buf[n:]
        if self.stdin_fd < 0:
            return
        if self.stdin_buf:
            if self.stdin_fd not in self.sel.get_map():
                self.sel.register(self.stdin_fd, selectors.EVENT_WRITE, "stdin")
        elif self.stdin_fd in self.sel.get_map():
            self.sel.unregister(self.stdin_fd)

    def _close_stdin(self) -> None:
        if self.stdin_fd < 0:
            return
        if self.stdin_fd in self.sel.get_map():
            self.sel.unregister(self.stdin_fd)
        os.close(self.stdin_fd)
        self.stdin_fd = -1
        self.stdin_buf = b""

    # -- the end
    def _finish(self) -> dict[str, Any]:
        for fd in list(self.streams):
            self.sel.unregister(fd)
            os.close(fd)
        self.streams.clear()
        self._close_stdin()
        if self.log is not None:
            self.log.close()
            if self.log.errors:
                _log_error(self.log_file, f"{self.log.errors} writes to the log failed")
        status = self.status if self.status is not None else 0
        result = {
            "exit_code": _exit_code(status),
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "pid": self.pid,
            "started_at": self.args.get("started_at"),
            "finished_at": now_rfc3339(),
            "oom_killed": False,
        }
        try:
            _write_json_atomic(str(self.args["exit_file"]), result, durable=True)
        except OSError as e:
            _log_error(self.log_file, f"cannot write the exit file {self.args['exit_file']}: {e}")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self.run_dir, ATTACH_SOCKET))
        self.listener.close()
        packet = EXIT + json.dumps({"exit_code": result["exit_code"]}).encode()
        for client in list(self.clients.values()):
            client.sock.setblocking(True)
            client.sock.settimeout(CLIENT_FLUSH_SECONDS)
            try:
                for queued in client.queue:
                    client.sock.send(queued)
                client.sock.send(packet)
                client.sock.shutdown(socket.SHUT_WR)
                # Read what the client still sends (its stdin, its close) until it hangs up: a unix
                # socket closed with unread data resets its peer, which then loses the exit code it
                # has not read yet.
                client.sock.settimeout(1.0)
                while client.sock.recv(MAX_PACKET):
                    pass
            except OSError:
                pass
            client.sock.close()
        self.clients.clear()
        if self.chan is not None:  # rl has not recorded the start yet: let it go first
            self.chan.setblocking(True)
            self.chan.settimeout(RELEASE_SECONDS)
            try:
                while self.chan.recv(64):
                    pass
            except OSError:
                pass
            self.chan.close()
            self.chan = None
        return result


def _run_on_exit(args: dict[str, Any], result: dict[str, Any], log_file: str) -> None:
    target = str(args.get("on_exit") or "")
    if not target:
        return
    module_name, _, function = target.partition(":")
    try:
        sys.path[:] = list(args.get("sys_path") or sys.path)
        import importlib

        module = importlib.import_module(module_name)
        if args.get("on_exit_arg"):
            getattr(module, function)(str(args["id"]), result, str(args["on_exit_arg"]))
        else:
            getattr(module, function)(str(args["id"]), result)
    except BaseException as e:
        _log_error(log_file, f"on_exit {target} failed: {type(e).__name__}: {e}")


def _lean_main(raw: str) -> None:  # pragma: no cover - the monitor process
    """Entry point after the re-exec (argv: the JSON made by ``_exec_lean``)."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(PROCESS_NAME)
    except OSError:
        pass
    args = json.loads(raw)
    log_file = os.path.join(str(args["run_dir"]), MONITOR_LOG)
    try:
        monitor = _Monitor(args)
        result = monitor.run()
    except BaseException as e:
        _log_error(log_file, f"the monitor failed: {type(e).__name__}: {e}")
        raise
    _run_on_exit(args, result, log_file)
    argv = [str(a) for a in args.get("cleanup_argv") or []]
    if argv:
        for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE,
                       signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            _log_error(log_file, f"cleanup command {argv[0]} failed: {e}")
            os._exit(1)
    os._exit(0)


__all__ = [
    "MonitorConfig", "MonitorResult", "Paths", "exited", "is_running", "monitor_alive", "read_exit",
    "read_state", "start_monitor", "status", "wait_exit",
]
