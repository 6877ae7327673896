"""Start a container's process from a ``ContainerSpec``, and talk to it afterwards.

``launch(spec)`` runs inside rl's user namespace (where rl is root) and works like this::

    rl (child subreaper) --fork--> setup: setns/unshare(mount, uts, ipc, pid, net, cgroup)
                                     --fork--> container PID 1: rootfs ops, pivot_root, hostname,
                                               stdio/pty, caps, user, no_new_privs, seccomp, execve
                                     <- {"type": "ready", "pid": N}; exits
    rl reaps the setup process; PID 1 is re-parented to rl (PR_SET_CHILD_SUBREAPER), so rl waits for it
    directly and signals it by pid: no relay process stays behind and the wait status is exact.

Errors in either child come back as typed messages (``rootless.runtime.messages``) and are raised as
``RuntimeSetupError``, ``CommandNotFoundError`` (127) or ``CannotInvokeError`` (126). The message channel
is close-on-exec: end-of-file means the command was exec'd.

With ``spec.init`` PID 1 stays a small reaper (docker --init, tini's behaviour): it forks the command,
forwards signals to it, reaps every child, and exits with the command's status. With ``spec.tty`` PID 1
opens a pty in the container's devpts, sends the master to rl (SCM_RIGHTS), and makes the slave its
controlling terminal; ``relay_tty`` connects it to the user's terminal.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import selectors
import signal
import stat
import struct
import termios
import tty
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from socket import socket
from typing import NoReturn

from rootless.errors import CannotInvokeError, CommandNotFoundError, ConfigError, RuntimeSetupError, UsageError
from rootless.records import field, record
from rootless.runtime import capabilities, messages, rootfs, seccomp
from rootless.runtime.spec import DEFAULT_PATH, HOST, NEW, ContainerSpec
from rootless.runtime.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_BIND,
    SYSCALLS,
    Syscalls,
)

FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGWINCH,
)
_NAMESPACE_FLAGS = {
    "mount": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET, "cgroup": CLONE_NEWCGROUP,
}
_TIOCSPTLCK = 0x40045431
_TIOCGPTPEER = 0x5441
EXIT_SETUP_FAILED = 125


def exit_code(status: int) -> int:
    """A wait status as docker reports it: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


@record
class ContainerProcess:
    """The container's PID 1, a child of rl."""

    pid: int
    pty: int | None = None  # master side of the container's terminal (spec.tty)
    netns: int | None = None  # an fd of the container's new network namespace, for the network driver
    returncode: int | None = None
    _start_fd: int | None = field(default=None, repr=False)
    _channel: socket | None = field(default=None, repr=False)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = exit_code(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = exit_code(status)
        return self.returncode

    def signal(self, signum: int) -> None:
        """Send ``signum`` to PID 1 (the kernel drops signals PID 1 has no handler for, as in docker)."""
        if self.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def start(self) -> None:
        """Let a process launched with ``hold=True`` exec its command; raises if the exec fails."""
        if self._start_fd is None or self._channel is None:
            raise RuntimeSetupError("the container was not launched with hold=True or has started")
        os.write(self._start_fd, b"s")
        os.close(self._start_fd)
        self._start_fd = None
        sock, self._channel = self._channel, None
        try:
            _finish(self, sock, None)
        finally:
            sock.close()

    def close(self) -> None:
        if self.pty is not None:
            os.close(self.pty)
            self.pty = None
        if self.netns is not None:
            os.close(self.netns)
            self.netns = None
        if self._start_fd is not None:
            os.close(self._start_fd)
            self._start_fd = None


# ---- parent side -------------------------------------------------------------------------------------


@record
class _Plan:
    """Everything the children need, computed before the first fork."""

    spec: ContainerSpec
    ops: list[rootfs.Op]
    program: seccomp.Program | None
    unshare_flags: int
    joins: list[tuple[str, int]]
    env: dict[str, str]
    stdio: tuple[int | None, int | None, int | None]
    console_size: tuple[int, int] | None
    pass_fds: tuple[int, ...]
    hold: bool
    sys: Syscalls
    cgroup_procs: int | None = None


def seccomp_program(spec: ContainerSpec) -> seccomp.Program | None:
    """The BPF program for ``spec.seccomp`` (None when unconfined)."""
    caps = spec.capabilities.bounding
    if spec.seccomp is None:
        return None
    if spec.seccomp == "default":
        return seccomp.default_program(caps)
    if isinstance(spec.seccomp, dict):
        if "program" in spec.seccomp:
            return [(int(c), int(jt), int(jf), int(k)) for c, jt, jf, k in spec.seccomp["program"]]
        return seccomp.compile_profile(spec.seccomp, caps)
    raise ConfigError(f"seccomp: expected None, 'default' or a profile, not {spec.seccomp!r}")


def _namespaces(spec: ContainerSpec) -> tuple[int, list[tuple[str, int]]]:
    flags = 0
    joins = []
    for name, flag in _NAMESPACE_FLAGS.items():
        value = getattr(spec.namespaces, name)
        if value == NEW:
            flags |= flag
        elif value != HOST:
            joins.append((value, flag))
    return flags, joins


def _env(spec: ContainerSpec) -> dict[str, str]:
    env = {}
    for item in spec.env:
        key, sep, value = item.partition("=")
        if key:
            env[key] = value if sep else os.environ.get(key, "")
    env.setdefault("PATH", DEFAULT_PATH)
    return env


_subreaper = False


def _become_subreaper(sys: Syscalls) -> None:
    global _subreaper
    if not _subreaper:
        sys.set_child_subreaper()
        _subreaper = True


def launch(
    spec: ContainerSpec,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    hold: bool = False,
    console_size: tuple[int, int] | None = None,
    pass_fds: Sequence[int] = (),
    cgroup_procs: int | None = None,
    on_pid: Callable[[int], None] | None = None,
    sys: Syscalls = SYSCALLS,
) -> ContainerProcess:
    """Start ``spec``'s process; returns once it has exec'd its command (or, with ``hold``, is waiting
    for ``start()``). ``on_pid`` is called with PID 1's pid as soon as it exists, while it still sets
    itself up (rl records it then, off the critical path). stdin/stdout/stderr are file descriptors
    for the container (default: rl's own);
    ``console_size`` is (rows, columns) for a tty. ``cgroup_procs`` is an open ``cgroup.procs`` of the
    container's cgroup: the setup process joins it before it creates the namespaces, so everything
    the container runs is counted there and its cgroup namespace is rooted at it.

    Example::

        proc = launch(ContainerSpec(rootfs="/run/user/1000/rl/overlay/abc/merged", args=["echo", "hi"]))
        with forward_signals(proc):
            code = proc.wait()
    """
    if not spec.args:
        raise UsageError("no command specified")
    flags, joins = _namespaces(spec)
    plan = _Plan(spec, rootfs.plan(spec), seccomp_program(spec), flags, joins, _env(spec),
                 (stdin, stdout, stderr), console_size, tuple(pass_fds), hold, sys, cgroup_procs)
    parent_end, child_end = messages.channel()
    start_r, start_w = os.pipe() if hold else (-1, -1)
    _become_subreaper(sys)
    setup_pid = os.fork()
    if setup_pid == 0:  # pragma: no cover - runs in the child
        try:
            parent_end.close()
            if start_w >= 0:
                os.close(start_w)
            _setup_process(plan, child_end, start_r)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    child_end.close()
    if start_r >= 0:
        os.close(start_r)
    proc = ContainerProcess(pid=-1, _start_fd=start_w if hold else None)
    try:
        done = _finish(proc, parent_end, setup_pid, on_pid)
    except BaseException:
        parent_end.close()
        proc.close()
        _abandon(proc, setup_pid)
        raise
    if done:
        parent_end.close()
    else:
        proc._channel = parent_end
    return proc


def _abandon(proc: ContainerProcess, setup_pid: int) -> None:
    """After an error or an interrupt in rl: leave no container and no zombie behind."""
    if proc.pid > 0 and proc.returncode is None:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    for pid in (setup_pid, proc.pid if proc.returncode is None else -1):
        if pid > 0:
            with suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _finish(proc: ContainerProcess, sock: socket, setup_pid: int | None,
            on_pid: Callable[[int], None] | None = None) -> bool:
    """Read messages until exec (EOF: True) or, with hold, until ``created`` (False); raise on errors."""
    failure: messages.SetupFailed | messages.ExecFailed | None = None
    created = False
    while True:
        got = messages.recv(sock)
        if got is None:
            break
        msg, fds = got
        if isinstance(msg, messages.Ready):
            proc.pid = msg.pid
            if fds:
                proc.netns, fds = fds[0], fds[1:]
            if setup_pid is not None:
                os.waitpid(setup_pid, 0)  # after this PID 1 is our child (we are its subreaper)
                setup_pid = None
            if on_pid is not None:
                on_pid(proc.pid)
        elif isinstance(msg, messages.Pty) and fds:
            proc.pty = fds[0]
        elif isinstance(msg, messages.Created):
            created = True
            break
        elif isinstance(msg, messages.SetupFailed | messages.ExecFailed):
            failure = msg
            break
        for extra in fds[1:] if isinstance(msg, messages.Pty) else fds:
            os.close(extra)
    if setup_pid is not None:
        _, status = os.waitpid(setup_pid, 0)
        if failure is None and proc.pid < 0:
            failure = messages.SetupFailed("setup", f"container setup exited with status {exit_code(status)}")
    if failure is None:
        return not created
    if proc.pid > 0:
        proc.wait()
    proc.close()
    if isinstance(failure, messages.ExecFailed):
        if failure.errno == errno.ENOENT:
            raise CommandNotFoundError(failure.message)
        raise CannotInvokeError(failure.message)
    raise RuntimeSetupError(failure.message)


@contextmanager
def forward_signals(proc: ContainerProcess, signals: Sequence[int] = FORWARDED_SIGNALS) -> Iterator[None]:
    """While active, signals rl receives are sent on to the container (docker's sig-proxy)."""

    def handler(signum: int, _frame: object) -> None:
        proc.signal(signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _winsize(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def relay_tty(proc: ContainerProcess, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Connect the user's terminal to the container's pty until the container exits; returns its code.

    The user's terminal is put in raw mode (the container's line discipline does the work) and its size
    follows SIGWINCH. No threads: one selector loop.
    """
    master = proc.pty
    if master is None:
        raise RuntimeSetupError("the container has no terminal (spec.tty is false)")
    saved = termios.tcgetattr(stdin_fd) if os.isatty(stdin_fd) else None

    def resize(_signum: int = 0, _frame: object = None) -> None:
        size = _winsize(stdin_fd)
        if size is not None:
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)

    previous = signal.signal(signal.SIGWINCH, resize)
    sel = selectors.DefaultSelector()
    try:
        if saved is not None:
            tty.setraw(stdin_fd)
            resize()
        sel.register(master, selectors.EVENT_READ)
        sel.register(stdin_fd, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError as e:
                        if e.errno != errno.EIO:
                            raise
                        data = b""  # every slave is closed: the container is gone
                    if not data:
                        return proc.wait()
                    _write_all(stdout_fd, data)
                else:
                    data = os.read(stdin_fd, 65536)
                    if not data:
                        sel.unregister(stdin_fd)
                        continue
                    _write_all(master, data)
    finally:
        sel.close()
        signal.signal(signal.SIGWINCH, previous)
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


# ---- child side --------------------------------------------------------------------------------------


class _ExecError(Exception):
    def __init__(self, err: int, path: str, message: str) -> None:
        super().__init__(message)
        self.errno = err
        self.path = path
        self.message = message


def _why(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e)


def _enter_nested_userns(plan: _Plan) -> None:  # pragma: no cover - child
    """Create the container's own user namespace inside rl's and have it mapped.

    A process cannot give its own new namespace a map of many ranges, but its parent namespace's
    root can: a helper forked before the unshare stays behind in rl's namespace and writes the maps.
    """
    maps = plan.spec.user_namespace or {}
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(go_w)
        os.close(done_r)
        reply = b"ok"
        try:
            if os.read(go_r, 1) == b"u":
                target = os.getppid()
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{target}/{name}", "w") as f:
                        f.write(maps[name])
            else:
                reply = b"the namespace was not created"
        except OSError as e:
            reply = f"writing the nested {getattr(e, 'filename', '') or 'id map'} failed: {_why(e)}".encode()
        os.write(done_w, reply)
        os._exit(0)
    os.close(go_r)
    os.close(done_w)
    try:
        plan.sys.unshare(CLONE_NEWUSER)
        os.write(go_w, b"u")
    finally:
        os.close(go_w)
        reply = os.read(done_r, 4096)
        os.close(done_r)
        os.waitpid(helper, 0)
    if reply != b"ok":
        raise OSError(errno.EPERM, reply.decode(errors="replace"))
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _setup_process(plan: _Plan, chan: socket, start_r: int) -> NoReturn:  # pragma: no cover - child
    """Between rl and PID 1: enter/create the namespaces, fork PID 1, report its pid, exit."""
    if plan.cgroup_procs is not None:
        try:
            os.write(plan.cgroup_procs, b"0")  # join the container's cgroup before anything else
            os.close(plan.cgroup_procs)
        except OSError as e:
            messages.send(chan, messages.SetupFailed("cgroup", f"join the container's cgroup failed: {_why(e)}",
                                                     e.errno))
            os._exit(EXIT_SETUP_FAILED)
    try:
        if plan.spec.user_namespace:
            _enter_nested_userns(plan)
        for path, nstype in plan.joins:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                plan.sys.setns(fd, nstype)
            finally:
                os.close(fd)
        plan.sys.unshare(plan.unshare_flags)
        if plan.unshare_flags & CLONE_NEWNET:
            from rootless.network.netns import lo_up

            lo_up()  # every network mode wants lo up; doing it here spares the driver a process
    except OSError as e:
        messages.send(chan, messages.SetupFailed("namespaces", f"create namespaces failed: {_why(e)}",
                                                 e.errno))
        os._exit(EXIT_SETUP_FAILED)
    # The network driver needs the new network namespace; /proc/PID/ns/net of PID 1 may be closed to
    # rl once PID 1 has switched to the container's user, so hand over a descriptor instead. Opened
    # before the fork: PID 1's pivot_root also moves this process's root, and /proc with it.
    fds = [os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)] if plan.unshare_flags & CLONE_NEWNET else []
    pid = os.fork()
    if pid == 0:
        for fd in fds:
            os.close(fd)
        _container_process(plan, chan, start_r)
    messages.send(chan, messages.Ready(pid), fds)
    os._exit(0)


def _container_process(plan: _Plan, chan: socket, start_r: int) -> NoReturn:  # pragma: no cover - child
    stage = ["setup"]
    code = EXIT_SETUP_FAILED
    try:
        _setup_and_exec(plan, chan, start_r, stage)
    except _ExecError as e:
        code = 127 if e.errno == errno.ENOENT else 126
        _try_send(chan, messages.ExecFailed(e.errno, e.path, e.message))
    except RuntimeSetupError as e:
        _try_send(chan, messages.SetupFailed(stage[0], e.message))
    except OSError as e:
        _try_send(chan, messages.SetupFailed(stage[0], f"{stage[0]} failed: {_why(e)}", e.errno))
    except BaseException as e:
        _try_send(chan, messages.SetupFailed(stage[0], f"{stage[0]} failed: {type(e).__name__}: {e}"))
    os._exit(code)


def _try_send(chan: socket, msg: messages.Message) -> None:
    with suppress(OSError):
        messages.send(chan, msg)


def _close_fds(keep: set[int]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _open_pty(plan: _Plan) -> tuple[int, int]:
    """A pty from the container's own devpts: (master, slave)."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if plan.console_size is not None:
        rows, cols = plan.console_size
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def _bind_console(slave: int, sys: Syscalls) -> None:
    """Bind the pty slave onto /dev/console, as runc does; best effort."""
    try:
        name = os.readlink(f"/proc/self/fd/{slave}")
        if not os.path.lexists("/dev/console"):
            os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        sys.mount(name, "/dev/console", None, MS_BIND)
    except OSError:
        pass


def _switch_user(plan: _Plan) -> None:
    user = plan.spec.user
    try:
        with open("/proc/self/setgroups") as f:
            groups_allowed = f.read().strip() == "allow"
    except OSError:
        groups_allowed = True
    try:
        if user.additional_gids or groups_allowed:
            os.setgroups(user.additional_gids)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        hint = " (is the id mapped in rl's user namespace?)" if e.errno in (errno.EINVAL, errno.EPERM) else ""
        raise RuntimeSetupError(f"switch to user {user.uid}:{user.gid} failed: {_why(e)}{hint}") from None


def _setup_and_exec(plan: _Plan, chan: socket, start_r: int, stage: list[str]) -> None:
    # nothing here may import a module: after pivot_root the host's Python library is out of reach
    spec, sys = plan.spec, plan.sys
    stage[0] = "stdio"
    for target, fd in enumerate(plan.stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)
    _close_fds({chan.fileno(), start_r, *plan.pass_fds})

    stage[0] = "rootfs"
    rootfs.apply(plan.ops, spec.rootfs, sys)

    stage[0] = "hostname"
    if spec.hostname and spec.namespaces.uts == NEW:
        sys.sethostname(spec.hostname)
    os.umask(0o022)

    stage[0] = "rlimits"
    if spec.rlimits:
        for limit in spec.rlimits:
            name = limit.type.upper()
            resource.setrlimit(getattr(resource, name if name.startswith("RLIMIT_") else f"RLIMIT_{name}"),
                               (limit.soft, limit.hard))

    stage[0] = "terminal"
    if spec.tty:
        master, slave = _open_pty(plan)
        messages.send(chan, messages.Pty(), [master])
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        _bind_console(slave, sys)
        if spec.user.uid != 0:
            os.fchown(slave, spec.user.uid, -1)
        for target in (0, 1, 2):
            os.dup2(slave, target)
        os.close(slave)
    else:
        os.setsid()  # terminal signals go to rl, which forwards them; none arrive twice

    stage[0] = "cwd"
    try:
        os.chdir(spec.cwd)
    except FileNotFoundError:
        os.makedirs(spec.cwd, exist_ok=True)
        os.chdir(spec.cwd)

    stage[0] = "seccomp"
    if plan.program is not None and not spec.no_new_privs:
        # without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we have it (runc does)
        sys.seccomp_load(plan.program)
    stage[0] = "capabilities"
    capabilities.drop_bounding(spec.capabilities, sys, spec.user.uid)
    stage[0] = "user"
    _switch_user(plan)
    stage[0] = "capabilities"
    capabilities.apply_sets(spec.capabilities, sys)
    stage[0] = "no_new_privs"
    if spec.no_new_privs:
        sys.set_no_new_privs()
    stage[0] = "seccomp"
    if plan.program is not None and spec.no_new_privs:
        sys.seccomp_load(plan.program)  # the last step before exec: rl's own setup is not filtered

    if plan.hold:
        stage[0] = "start"
        messages.send(chan, messages.Created())
        if os.read(start_r, 1) != b"s":
            os._exit(EXIT_SETUP_FAILED)  # rl went away without starting us
        os.close(start_r)

    stage[0] = "exec"
    if spec.init:
        _run_init(plan, chan)
    _exec(plan)


def _lookup(name: str, path_env: str) -> str:
    """argv[0] as Go's exec.LookPath finds it (runc, so docker): an executable non-directory in $PATH."""
    if "/" in name:
        return name
    for directory in path_env.split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise _ExecError(errno.ENOENT, name, f'exec: "{name}": executable file not found in $PATH')


def _exec(plan: _Plan) -> NoReturn:
    args = plan.spec.args
    path = _lookup(args[0], plan.env.get("PATH", DEFAULT_PATH))
    # ignored signals stay ignored across exec (Python ignores SIGPIPE and SIGXFSZ; rl's caller may
    # ignore more): the command starts with every disposition at its default, as under docker
    for signum in range(1, signal.NSIG):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            with suppress(OSError, ValueError):
                signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    try:
        os.execve(path, args, plan.env)
    except OSError as e:
        if e.errno == errno.ENOENT:
            message = f'exec: "{args[0]}": stat {path}: no such file or directory'
        else:
            message = f'exec: "{args[0]}": {_why(e)}'
        raise _ExecError(e.errno or errno.EACCES, path, message) from None


def _run_init(plan: _Plan, chan: socket) -> NoReturn:
    """PID 1 as a reaper (docker --init): fork the command, forward signals, reap, exit with its code."""
    waited = {*FORWARDED_SIGNALS, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        if plan.spec.tty:
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(0, os.getpgrp())  # the command runs in the terminal's foreground
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        _exec(plan)
    chan.close()  # the command's exec (or its failure message) is what rl waits for
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            with suppress(ProcessLookupError):
                os.kill(child, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                os._exit(exit_code(status))

