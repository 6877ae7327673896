"""Helpers shared by the integration tests and the benchmarks (bench/ imports them too: no pytest here).

- ``busybox_rootfs``: a root filesystem of busybox and its applets in a directory.
- ``call_in_child``, ``in_pause``, ``in_new_userns``: run a function in a forked child (as is, inside rl's
  user namespace through ``pause.enter``, or as root of a fresh user + mount namespace) and get back its
  return value, pickled, or its exception raised here. ``collect_child`` is the parent's side of any
  child that sends one result down a pipe; ``map_single_id`` maps a fresh namespace to our own ids.
- ``read_all``, ``read_pty``: what comes from a pipe or a pty until it is closed.
- ``poll``, ``wait_until``: waiting for a condition with a deadline.
- ``end_started``: what a test started (containers, monitors) and its pause process, gone at the end.
- ``memory_kib``, ``free_port``, ``stop_process``.
"""

from __future__ import annotations

import os
import pickle
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rootless.runtime import idmap, monitor, pause
from rootless.runtime.syscalls import CLONE_NEWNS, CLONE_NEWUSER, SYSCALLS

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
ROOT_PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
ROOT_GROUP = "root:x:0:\n"


# ------------------------------------------------------------------------------ root filesystems


def busybox_rootfs(root: Path, *, extra_dirs: Sequence[str] = (), passwd: str = ROOT_PASSWD,
                   group: str = ROOT_GROUP) -> Path:
    """``root`` (created) with /bin/busybox and a symlink per applet, the usual top-level directories
    (/tmp sticky and world-writable) and /etc/passwd, /etc/group."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", *extra_dirs):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(group)
    return root


# ------------------------------------------------------------------------------ forked children


class ChildDied(AssertionError):
    """A forked child ended without sending its result."""


def read_all(fd: int) -> bytes:
    """All that comes from ``fd`` (a pipe's read end) until every writer closed it; ``fd`` is closed."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def read_pty(fd: int) -> bytes:
    """All that comes from a pty's controlling side until the other side is closed (EIO) or EOF."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def collect_child(pid: int, fd: int) -> bytes:
    """All a child wrote to ``fd`` until it closed it (``fd`` is closed), once the child is reaped."""
    data = read_all(fd)
    os.waitpid(pid, 0)
    if not data:
        raise ChildDied("the child died without a result")
    return data


def call_in_child(fn: Callable[[], Any], *, prepare: Callable[[], object] | None = None,
                  parent: Callable[[int], object] | None = None) -> Any:
    """Run ``prepare()`` then ``fn()`` in a forked child; return fn's result or raise the error of either.

    ``parent(pid)``, if given, runs here meanwhile, before the result is read (to map the child's
    namespace, say); it must close whatever the child might wait for, even when it fails."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            try:
                if prepare is not None:
                    prepare()
                outcome: tuple[str, Any] = ("ok", fn())
            except BaseException as e:
                outcome = ("error", e)
            try:
                data = pickle.dumps(outcome)
            except Exception as e:
                data = pickle.dumps(("error", RuntimeError(f"unpicklable result: {e!r}")))
            os.write(w, data)
        finally:
            os._exit(0)
    os.close(w)
    try:
        if parent is not None:
            parent(pid)
    except BaseException:
        os.close(r)
        os.waitpid(pid, 0)
        raise
    kind, value = pickle.loads(collect_child(pid, r))
    if kind == "error":
        raise value
    return value


def in_pause(runroot: Path, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child that joined the pause namespace of ``runroot``; its result or error."""
    return call_in_child(fn, prepare=lambda: pause.enter(runroot))


def map_single_id(uid: int, gid: int) -> None:
    """In a fresh user namespace: map its root to ``uid``/``gid`` outside (no setgroups)."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")


def in_new_userns(fn: Callable[[], Any], full_mapping: bool = False) -> Any:
    """Run ``fn`` in a forked child that is root of a new user + mount namespace; return (or raise) its
    result. The namespace maps our own ids only, or with ``full_mapping`` also the user's first
    subordinate ranges (``0 UID 1 1 START COUNT`` through newuidmap/newgidmap)."""
    uid, gid = os.getuid(), os.getgid()
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()

    def prepare() -> None:
        os.close(go_w)
        os.close(ready_r)
        SYSCALLS.unshare(CLONE_NEWUSER | CLONE_NEWNS)
        if full_mapping:
            os.write(ready_w, b"u")
            if os.read(go_r, 1) != b"g":
                os._exit(3)
        else:
            map_single_id(uid, gid)

    def map_child(pid: int) -> None:
        os.close(go_r)
        os.close(ready_w)
        try:
            if full_mapping:
                if os.read(ready_r, 1) != b"u":
                    raise ChildDied("the child did not make its user namespace")
                user = pwd.getpwuid(uid).pw_name
                subuid = idmap.read_subids(idmap.SUBUID, user, uid)[0]
                subgid = idmap.read_subids(idmap.SUBGID, user, uid)[0]
                uid_args = ["0", str(uid), "1", "1", str(subuid.start), str(subuid.count)]
                gid_args = ["0", str(gid), "1", "1", str(subgid.start), str(subgid.count)]
                subprocess.run(["newuidmap", str(pid), *uid_args], check=True)
                subprocess.run(["newgidmap", str(pid), *gid_args], check=True)
                os.write(go_w, b"g")
        finally:
            os.close(go_w)
            os.close(ready_r)

    return call_in_child(fn, prepare=prepare, parent=map_child)


# ------------------------------------------------------------------------------ waiting


def poll(done: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Whether ``done()`` turned true within ``timeout`` seconds (asked every ``interval``)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(done: Callable[[], object], timeout: float, message: str, interval: float = 0.01) -> None:
    """Until ``done()`` is true; AssertionError(``message``) after ``timeout`` seconds."""
    if not poll(done, timeout, interval):
        raise AssertionError(message)


# ------------------------------------------------------------------------------ processes


def end_started(runroot: Path, started: Iterable[tuple[int, int | None]], grace: float = 3.0) -> list[int]:
    """End what a test started, (pid, start time) pairs: ``grace`` seconds to exit by themselves (a
    monitor finishing its exit work: on_exit, unlinks), then SIGKILL; then the pause process of
    ``runroot`` (``pause.migrate``). The pids that were still running after the grace time."""
    started = list(started)
    poll(lambda: not any(monitor.is_running(pid, start) for pid, start in started), grace, 0.02)
    left = [pid for pid, start in started if monitor.is_running(pid, start)]
    for pid, start in started:
        if monitor.is_running(pid, start):
            os.kill(pid, signal.SIGKILL)
    pause.migrate(runroot)
    return left


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, 10 s, then SIGKILL; reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def memory_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and Private_Dirty of ``pid`` in KiB (/proc/PID/smaps_rollup)."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Private_Dirty:"):
                found[parts[0].rstrip(":")] = int(parts[1])
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int, proto: str = "tcp") -> bool:
    """Whether ``port`` can be bound on every IPv4 address right now (TIME_WAIT does not count)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def isolated_rl_env(base: Path, passthrough: Iterable[str], default_user: str = "") -> dict[str, str]:
    """An environment for black-box `rl` runs: a fresh home, config, store and private runtime dir
    under ``base``, no system config; ``passthrough`` names variables copied from ours."""
    home = base / "home"
    home.mkdir()
    runtime = base / "xdg-run"
    runtime.mkdir(mode=0o700)
    env = {
        "HOME": str(home),
        "USER": os.environ.get("USER", default_user),
        "LOGNAME": os.environ.get("LOGNAME", default_user),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "RL_SYSTEM_CONFIG": str(base / "etc-rl.toml"),
    }
    env.update({name: os.environ[name] for name in passthrough if name in os.environ})
    return env
