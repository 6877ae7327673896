"""`rl exec`: start another process in a running container.

Called inside rl's user namespace (after ``pause.enter``), with the container's saved spec::

    from rootless.runtime.exec import ExecOptions, exec_in
    from rootless.runtime import process

    proc = exec_in(state["pid"], spec, ExecOptions(args=["sh", "-c", "echo hi"], env=["A=1"], tty=False),
                   pid_start_time=state["pid_start_time"], cgroup=leaf_path_or_None)
    with process.forward_signals(proc):
        code = process.relay_tty(proc) if proc.pty is not None else proc.wait()

What it does, like ``runc exec``::

    rl (subreaper) --fork--> join: [write itself into the container's cgroup]; setns user (only when the
                                   container has its own, e.g. --userns=keep-id), cgroup, ipc, uts, net,
                                   pid, mnt (the container's root and cwd) --fork--> the process
                             <- {"type": "ready", "pid": N}; exits; N is re-parented to rl
    the process: stdio or a pty from the container's devpts (made its controlling terminal), chdir,
                 seccomp (before the user switch when no_new_privs is off, as runc), bounding set,
                 user and groups, capability sets, no_new_privs, seccomp, execve

Namespaces the container shares with rl (``--network host``) are skipped. The process gets the
container's environment plus ``ExecOptions.env`` (``TERM=xterm`` with a tty unless set), the container's
user unless ``user`` is given (a non-root user keeps only the bounding set, as at start), the
container's capabilities and seccomp profile unless ``privileged``, and its working directory unless
``cwd``. Failures come back typed: ``ConflictError`` (the container is not running),
``CommandNotFoundError`` (127), ``CannotInvokeError`` (126), ``RuntimeSetupError`` (125). The result
is a ``ContainerProcess``: wait, signal, relay_tty and forward_signals work as for ``launch``.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import os
import termios
from socket import socket
from typing import NoReturn

from rootless.errors import ConflictError, RuntimeSetupError, UsageError
from rootless.procfs import start_time as _start_time
from rootless.records import field, record
from rootless.runtime import capabilities, messages, process
from rootless.runtime.process import ContainerProcess
from rootless.runtime.spec import DEFAULT_PATH, ContainerSpec, User
from rootless.runtime.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    SYSCALLS,
    Syscalls,
)

# the order of the joins: the user namespace first (it owns the others), the mount namespace last
NAMESPACES: tuple[tuple[str, int], ...] = (
    ("user", CLONE_NEWUSER), ("cgroup", CLONE_NEWCGROUP), ("ipc", CLONE_NEWIPC), ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET), ("pid", CLONE_NEWPID), ("mnt", CLONE_NEWNS),
)


@record
class ExecOptions:
    args: list[str]
    env: list[str] = field(default_factory=list)  # KEY=VALUE, or KEY to take rl's value; added last
    user: User | None = None  # None: the container's user
    cwd: str | None = None  # None: the container's working directory
    tty: bool = False
    privileged: bool = False  # every capability, no seccomp (docker exec --privileged)
    console_size: tuple[int, int] | None = None  # (rows, columns) with tty


def _not_running(pid: int) -> ConflictError:
    return ConflictError(f"the container is not running (its process {pid} is gone)", "start it first")


def open_namespaces(pid: int, pid_start_time: int | None = None) -> list[tuple[int, int]]:
    """(fd, nstype) of each namespace of ``pid`` that differs from ours, in join order.

    The files are opened before the start time is checked, so a recycled pid cannot slip in."""
    fds: list[tuple[int, int]] = []
    try:
        for kind, nstype in NAMESPACES:
            try:
                fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError):
                raise _not_running(pid) from None
            except PermissionError as e:
                raise RuntimeSetupError(
                    f"cannot open the {kind} namespace of the container's process {pid}: {e.strerror}",
                    "rl exec must run in rl's user namespace",
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino
            except FileNotFoundError:  # the kernel lacks this namespace type
                same = True
            if same:
                os.close(fd)
            else:
                fds.append((fd, nstype))
        start = _start_time(pid)
        if start is None or (pid_start_time is not None and start != pid_start_time):
            raise _not_running(pid)
    except BaseException:
        for fd, _ in fds:
            os.close(fd)
        raise
    return fds


def _env(spec: ContainerSpec, options: ExecOptions) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in [*spec.env, *options.env]:
        key, sep, value = item.partition("=")
        if key:
            env[key] = value if sep else os.environ.get(key, "")
    env.setdefault("PATH", DEFAULT_PATH)
    if options.tty:
        env.setdefault("TERM", "xterm")
    return env


def exec_spec(spec: ContainerSpec, options: ExecOptions) -> ContainerSpec:
    """The container's spec changed into the exec'd process's (args, env, user, cwd, tty, caps, seccomp)."""
    if not options.args:
        raise UsageError("no command specified", "give the command to run in the container")
    child = copy.copy(spec)
    child.args = list(options.args)
    child.tty = options.tty
    child.init = False
    child.cwd = options.cwd or spec.cwd or "/"
    if not child.cwd.startswith("/"):
        raise UsageError(f"the working directory {child.cwd!r} is not an absolute path")
    user = options.user or spec.user
    child.user = user
    if options.privileged:
        child.capabilities = capabilities.for_user(capabilities.CAPABILITIES, user.uid)
        child.seccomp = None
    elif user.uid != spec.user.uid:
        child.capabilities = capabilities.for_user(spec.capabilities.bounding, user.uid)
    return child


def exec_in(
    container_pid: int,
    spec: ContainerSpec,
    options: ExecOptions,
    *,
    pid_start_time: int | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    cgroup: str | None = None,
    sys: Syscalls = SYSCALLS,
) -> ContainerProcess:
    """Run ``options.args`` in the running container whose PID 1 is ``container_pid`` (rl's pid
    namespace); returns once the command was exec'd. ``spec`` is the container's saved spec;
    ``pid_start_time`` guards against a recycled pid; ``cgroup`` is the container's cgroup directory
    (the process joins it first); stdin/stdout/stderr default to rl's own."""
    child_spec = exec_spec(spec, options)
    plan = process._Plan(
        child_spec, [], process.seccomp_program(child_spec), 0, [], _env(spec, options), (stdin, stdout, stderr),
        options.console_size, (), False, sys,
    )
    fds = open_namespaces(container_pid, pid_start_time)
    parent_end, child_end = messages.channel()
    try:
        process._become_subreaper(sys)
        join_pid = os.fork()
        if join_pid == 0:  # pragma: no cover - child
            try:
                parent_end.close()
                _join_process(plan, fds, cgroup, child_end)
            finally:
                os._exit(process.EXIT_SETUP_FAILED)
    finally:
        child_end.close()
        for fd, _ in fds:
            os.close(fd)
    proc = process.ContainerProcess(pid=-1)
    try:
        process._finish(proc, parent_end, join_pid)
    except BaseException:
        process._abandon(proc, join_pid)
        raise
    finally:
        parent_end.close()
    return proc



# ---- child side --------------------------------------------------------------------------------------


def _join_process(plan: process._Plan, fds: list[tuple[int, int]], cgroup: str | None,
                  chan: socket) -> NoReturn:  # pragma: no cover - child
    stage = "cgroup"
    try:
        if cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
        for fd, nstype in fds:
            stage = f"join namespace {nstype:#x}"
            plan.sys.setns(fd, nstype)
    except OSError as e:
        messages.send(chan, messages.SetupFailed(stage, f"{stage} failed: {process._why(e)}", e.errno))
        os._exit(process.EXIT_SETUP_FAILED)
    pid = os.fork()
    if pid == 0:
        _exec_process(plan, chan)
    messages.send(chan, messages.Ready(pid))
    os._exit(0)


def _exec_process(plan: process._Plan, chan: socket) -> NoReturn:  # pragma: no cover - child
    stage = ["setup"]
    code = process.EXIT_SETUP_FAILED
    try:
        _setup_and_exec(plan, chan, stage)
    except process._ExecError as e:
        code = 127 if e.errno == errno.ENOENT else 126
        process._try_send(chan, messages.ExecFailed(e.errno, e.path, e.message))
    except RuntimeSetupError as e:
        process._try_send(chan, messages.SetupFailed(stage[0], e.message))
    except OSError as e:
        process._try_send(chan, messages.SetupFailed(stage[0], f"{stage[0]} failed: {process._why(e)}", e.errno))
    except BaseException as e:
        process._try_send(chan, messages.SetupFailed(stage[0], f"{stage[0]} failed: {type(e).__name__}: {e}"))
    os._exit(code)


def _setup_and_exec(plan: process._Plan, chan: socket, stage: list[str]) -> None:  # pragma: no cover - child
    spec, sys = plan.spec, plan.sys
    stage[0] = "stdio"
    for target, fd in enumerate(plan.stdio):
        if fd is not None and fd != target:
            os.dup2(fd, target)
    process._close_fds({chan.fileno()})
    stage[0] = "terminal"
    if spec.tty:
        master, slave = process._open_pty(plan)
        messages.send(chan, messages.Pty(), [master])
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        if spec.user.uid != 0:
            os.fchown(slave, spec.user.uid, -1)
        for target in (0, 1, 2):
            os.dup2(slave, target)
        os.close(slave)
    else:
        os.setsid()
    stage[0] = "cwd"
    try:
        os.chdir(spec.cwd)
    except OSError as e:
        raise RuntimeSetupError(f"cannot change to the working directory {spec.cwd}: {process._why(e)}") from None
    stage[0] = "seccomp"
    if plan.program is not None and not spec.no_new_privs:
        sys.seccomp_load(plan.program)
    stage[0] = "capabilities"
    capabilities.drop_bounding(spec.capabilities, sys, spec.user.uid)
    stage[0] = "user"
    process._switch_user(plan)
    stage[0] = "capabilities"
    capabilities.apply_sets(spec.capabilities, sys)
    stage[0] = "no_new_privs"
    if spec.no_new_privs:
        sys.set_no_new_privs()
    stage[0] = "seccomp"
    if plan.program is not None and spec.no_new_privs:
        sys.seccomp_load(plan.program)
    stage[0] = "exec"
    process._exec(plan)


__all__ = ["ExecOptions", "exec_in", "exec_spec", "open_namespaces"]
