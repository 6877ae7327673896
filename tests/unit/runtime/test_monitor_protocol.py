"""The monitor's event loop, attach protocol and status files, without namespaces.

The lean monitor (what runs after the re-exec) is started in a forked child supervising an ordinary
process, so the protocol is tested fast and without privileges; test_monitor.py does it for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import CannotInvokeError, CommandNotFoundError, ConflictError, RuntimeSetupError
from rootless.runtime import attach, logs, monitor
from rootless.runtime.monitor import MonitorConfig, Paths
from rootless.runtime.spec import ContainerSpec


class Spawned:
    def __init__(self, monitor_pid: int, pid: int, paths: Paths, log_path: str, chan: socket.socket) -> None:
        self.monitor_pid = monitor_pid
        self.pid = pid
        self.paths = paths
        self.log_path = log_path
        self.chan: socket.socket | None = chan

    def release(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None

    def wait_monitor(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.monitor_pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            assert time.monotonic() < deadline, "the monitor did not exit"
            time.sleep(0.01)

    def entries(self) -> list[tuple[str, bytes]]:
        return [(e.stream, e.data) for e in logs.read_logs(self.log_path)]


def spawn(tmp_path: Path, argv: list[str], *, stdin: bool = False, **extra: Any) -> Spawned:
    """The lean monitor in a forked child, supervising ``argv`` (its child) through pipes."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    log_path = str(tmp_path / "c.log")
    listener = monitor._bind_attach(str(run_dir))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if stdin else (os.open(os.devnull, os.O_RDONLY), -1)
    ready_r, ready_w = os.pipe()
    mpid = os.fork()
    if mpid == 0:  # pragma: no cover - the monitor
        try:
            ours.close()
            os.close(ready_r)
            child = os.fork()
            if child == 0:
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.execv(argv[0], argv)
            for fd in (in_r, out_w, err_w):
                os.close(fd)
            os.write(ready_w, str(child).encode())
            os.close(ready_w)
            args = {
                "id": "f" * 64, "pid": child, "tty": False, "run_dir": str(run_dir),
                "exit_file": str(run_dir / "exit.json"), "started_at": monitor.now_rfc3339(),
                "fds": {"out": out_r, "err": err_r, "in": in_w, "listen": listener.fileno(), "chan": theirs.fileno()},
                "log_path": log_path, "log_driver": "json-file", "log_max_size": 0, "log_max_files": 1,
                "stdin_once": False, "on_exit": "", "cleanup_argv": [], "sys_path": [], **extra,
            }
            monitor._lean_main(json.dumps(args))
        finally:
            os._exit(99)
    listener.close()
    theirs.close()
    for fd in (out_r, out_w, err_r, err_w, in_r, ready_w, *([in_w] if in_w >= 0 else [])):
        os.close(fd)
    child = int(os.read(ready_r, 64))
    os.close(ready_r)
    return Spawned(mpid, child, Paths(str(run_dir)), log_path, ours)


@pytest.fixture
def spawned() -> Iterator[list[Spawned]]:
    started: list[Spawned] = []
    yield started
    for s in started:
        s.release()
        for pid in (s.pid, s.monitor_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(s.monitor_pid, 0)


def test_output_stdin_exit_and_files(tmp_path: Path, spawned: list[Spawned]) -> None:
    s = spawn(tmp_path, ["/bin/sh", "-c", "read x; echo out:$x; echo err >&2; exit 3"], stdin=True,
              stdin_once=True)
    spawned.append(s)
    with attach.connect(s.paths, stdin=True) as client:
        client.send_stdin(b"hi\n")
        got = [client.recv(), client.recv()]
        assert sorted(got, key=str) == [("stderr", b"err\n"), ("stdout", b"out:hi\n")]
        assert client.recv() == ("exit", {"exit_code": 3})
        assert client.recv() is None
    result = monitor.read_exit(s.paths)
    assert result is not None
    assert result["exit_code"] == 3 and result["signal"] is None and result["pid"] == s.pid
    assert result["finished_at"].endswith("Z") and result["oom_killed"] is False
    assert sorted(s.entries()) == [("stderr", b"err\n"), ("stdout", b"out:hi\n")]
    assert not os.path.exists(s.paths.attach_socket)
    s.release()
    assert s.wait_monitor() == 0


def test_killed_by_a_signal_is_128_plus_n(tmp_path: Path, spawned: list[Spawned]) -> None:
    s = spawn(tmp_path, ["/bin/sleep", "30"])
    spawned.append(s)
    os.kill(s.pid, signal.SIGKILL)
    result = monitor.wait_exit(s.paths, 10)
    assert result is not None and result["exit_code"] == 137 and result["signal"] == 9


def test_clients_choose_their_streams(tmp_path: Path, spawned: list[Spawned]) -> None:
    s = spawn(tmp_path, ["/bin/sh", "-c", "while read l; do echo o$l; echo e$l >&2; done"], stdin=True)
    spawned.append(s)
    errors_only = attach.connect(s.paths, stdout=False)
    writer = attach.connect(s.paths, stdin=True, stderr=False)
    writer.send_stdin(b"1\n")
    assert writer.recv() == ("stdout", b"o1\n")
    assert errors_only.recv() == ("stderr", b"e1\n")
    writer.close()  # without stdin_once the container's stdin stays open
    again = attach.connect(s.paths, stdin=True, stderr=False)
    again.send_stdin(b"2\n")
    assert again.recv() == ("stdout", b"o2\n")
    again.close_stdin()  # no stdin_once: ignored
    again.send_stdin(b"3\n")
    assert again.recv() == ("stdout", b"o3\n")
    # e2 and e3, before the kill (the shell echoes e3 after o3); the pipe may hand both over in one read
    received = b""
    while received != b"e2\ne3\n":
        stream, data = errors_only.recv()
        assert stream == "stderr" and b"e2\ne3\n".startswith(received + data), (stream, data, received)
        received += data
    os.kill(s.pid, signal.SIGTERM)
    assert errors_only.recv() == ("exit", {"exit_code": 143})
    errors_only.close()
    again.close()


def test_on_exit_waits_for_release(tmp_path: Path, spawned: list[Spawned]) -> None:
    marker = tmp_path / "cleaned"
    s = spawn(tmp_path, ["/bin/true"], cleanup_argv=["/bin/sh", "-c", f"echo $0 > {marker}", "done"])
    spawned.append(s)
    assert monitor.wait_exit(s.paths, 10) is not None
    time.sleep(0.2)
    assert not marker.exists(), "cleanup ran before rl released the monitor"
    s.release()
    assert s.wait_monitor() == 0
    assert marker.read_text() == "done\n"


def test_output_held_by_a_stray_process_is_drained_briefly(tmp_path: Path, spawned: list[Spawned]) -> None:
    s = spawn(tmp_path, ["/bin/sh", "-c", "sleep 30 & echo $!; echo bye"])
    spawned.append(s)
    s.release()
    began = time.monotonic()
    assert s.wait_monitor() == 0
    assert time.monotonic() - began < monitor.DRAIN_SECONDS + 2
    stray, bye = s.entries()
    os.kill(int(stray[1]), signal.SIGKILL)
    assert bye == ("stdout", b"bye\n")


def test_detach_keys_leave_the_container_running(tmp_path: Path, spawned: list[Spawned]) -> None:
    s = spawn(tmp_path, ["/bin/cat"], stdin=True)
    spawned.append(s)
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    os.write(w, b"ab\x10c\x10\x11ignored")
    code = attach.attach(s.paths, stdin=True, stdin_fd=r, stdout_fd=out_w, stderr_fd=out_w)
    assert code is None
    os.close(w)
    os.close(r)
    os.close(out_w)
    os.close(out_r)
    assert monitor.is_running(s.pid, monitor._start_time(s.pid))
    with attach.connect(s.paths, stdin=True) as client:
        client.send_stdin(b"\n")
        echoed = b""  # the echo of the first client's input may still be on its way: read to the newline
        while not echoed.endswith(b"\n"):
            msg = client.recv()
            assert msg is not None and msg[0] == "stdout", msg
            echoed += msg[1]
    os.kill(s.pid, signal.SIGKILL)
    assert monitor.wait_exit(s.paths, 10) is not None
    assert b"".join(data for _, data in s.entries()) == b"ab\x10c\n"  # a lone ctrl-p goes through


def test_connect_errors(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path / "nothing"))
    with pytest.raises(Exception, match="does not exist"):
        attach.connect(paths)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ConflictError, match="monitor is not running"):
        attach.connect(paths)
    Path(paths.exit_file).write_text('{"exit_code": 0}')
    with pytest.raises(ConflictError, match="stopped container"):
        attach.connect(paths)


# ---------------------------------------------------------------- status files


def write(path: str, obj: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(obj))


def test_status_running_exited_and_vanished(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path))
    assert monitor.status(paths) == {"running": False, "pid": 0, "exit": None, "monitor": False}
    me = os.getpid()
    start = monitor._start_time(me)
    write(paths.state_file, {"pid": me, "pid_start_time": start, "monitor_pid": me, "monitor_start_time": start,
                             "started_at": "2024-01-01T00:00:00Z"})
    now = monitor.status(paths)
    assert now["running"] and now["monitor"] and now["pid"] == me
    assert monitor.wait_exit(paths, 0.05) is None
    # a recycled pid (other start time) is not our container
    write(paths.state_file, {"pid": me, "pid_start_time": (start or 0) + 1, "monitor_pid": 0,
                             "started_at": "2024-01-01T00:00:00Z"})
    vanished = monitor.status(paths)
    assert not vanished["running"] and vanished["exit"]["exit_code"] == 255
    assert "vanished" in vanished["exit"]["error"]
    write(paths.exit_file, {"exit_code": 3})
    assert monitor.status(paths)["exit"] == {"exit_code": 3}
    assert monitor.wait_exit(paths, 1) == {"exit_code": 3}
    assert monitor.exited(paths)


def test_paths_and_config_round_trip(tmp_path: Path) -> None:
    paths = Paths("/run/x")
    assert (paths.state_file, paths.exit_file, paths.attach_socket) == (
        "/run/x/state.json", "/run/x/exit.json", "/run/x/attach")
    assert Paths("/run/x", "/store/x/exit.json").exit_file == "/store/x/exit.json"
    spec = ContainerSpec(rootfs="/r", args=["sh"])
    cfg = MonitorConfig("a" * 64, spec, "/run/x", log_path="/l", log_max_size=10, log_max_files=2, stdin=True,
                        console_size=(24, 80), on_exit="m:f", cleanup_argv=["rl", "rm"])
    data = json.loads(json.dumps(cfg.to_dict()))
    again = MonitorConfig.from_dict(data)
    assert again.to_dict() == cfg.to_dict()
    assert again.spec_object() == spec
    with pytest.raises(ValueError, match="log driver"):
        MonitorConfig("a", spec, "/x", log_driver="syslog")
    with pytest.raises(ValueError, match="module:function"):
        MonitorConfig("a", spec, "/x", on_exit="just_a_name")


def test_failures_are_typed() -> None:
    cases = [({"kind": "not_found", "message": "m"}, CommandNotFoundError),
             ({"kind": "cannot_invoke", "message": "m"}, CannotInvokeError),
             ({"kind": "setup", "message": "m"}, RuntimeSetupError), (None, RuntimeSetupError)]
    for reply, kind in cases:
        with pytest.raises(kind):
            monitor._raise_failure(reply)
    assert monitor._failure_message(CommandNotFoundError("x"))["kind"] == "not_found"
    assert monitor._failure_message(ValueError("boom"))["message"].endswith("ValueError: boom")


def test_the_monitor_module_stays_light() -> None:
    """What the idle monitor imports: no dataclasses, typing, ctypes or rl's launch code."""
    import subprocess
    import sys

    root = str(Path(monitor.__file__).resolve().parents[2])
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import rootless.runtime.monitor; "
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, root], capture_output=True, text=True,
                         check=True).stdout.split()
    for heavy in ("dataclasses", "typing", "ctypes", "rootless.runtime.process", "rootless.errors", "inspect"):
        assert heavy not in out
