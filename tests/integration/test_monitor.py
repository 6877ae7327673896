"""Detached containers under the per-container monitor, with real namespaces.

Every test has its own runroot and pause process. What must run inside rl's user namespace (starting a
container) runs in a forked child that calls ``pause.enter`` and sends its result back pickled; the
child exits right after, as `rl run -d` does, while the container keeps running under its monitor. The
test process itself reads the files, attaches and signals from outside, like later rl commands. At the
end every pause process, monitor and container the test started is gone (checked, then killed).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import CommandNotFoundError
from rootless.runtime import attach, logs, monitor, userns
from rootless.runtime.spec import ContainerSpec, default_mounts
from tests.support import BUSYBOX, busybox_rootfs, end_started, in_pause, memory_kib, wait_until

pytestmark = pytest.mark.integration

UID = os.getuid()

# the monitor imports this module to call record_exit (as root of the user namespace): no skips then
IN_MONITOR = "RL_TEST_ON_EXIT_DIR" in os.environ and UID == 0

if not os.path.exists(BUSYBOX):
    pytest.skip("busybox is not installed", allow_module_level=True)
if UID == 0 and not IN_MONITOR:
    pytest.skip("run as an unprivileged user (CI: rltest)", allow_module_level=True)
if userns.userns_problems():
    pytest.skip(f"user namespaces are disabled: {userns.userns_problems()[0].message}", allow_module_level=True)


# ---------------------------------------------------------------- helpers


def alive(pid: int, start_time: int | None) -> bool:
    return monitor.is_running(pid, start_time)


class World:
    """One test's runroot, rootfs and the processes it started (killed at the end if still there)."""

    def __init__(self, base: Path, rootfs: Path) -> None:
        self.base = base
        self.rootfs = rootfs
        self.runroot = base / "run"
        self.runroot.mkdir(mode=0o700)
        self.started: list[tuple[int, int | None]] = []
        self.count = 0

    def spec(self, *args: str, **changes: Any) -> ContainerSpec:
        spec = ContainerSpec(rootfs=str(self.rootfs), args=list(args), hostname="box",
                             mounts=default_mounts(pts_gid=None), env=["PATH=/bin", "FOO=bar"])
        for key, value in changes.items():
            setattr(spec, key, value)
        return spec

    def config(self, spec: ContainerSpec, **kw: Any) -> monitor.MonitorConfig:
        self.count += 1
        cid = f"{self.count:064x}"
        kw.setdefault("log_path", str(self.base / f"c{self.count}.log"))
        return monitor.MonitorConfig(cid, spec, str(self.runroot / "containers" / cid), **kw)

    def start(self, cfg: monitor.MonitorConfig) -> dict[str, Any]:
        """start_monitor in a child that then exits, as `rl run -d`; the state it reported."""

        def body() -> dict[str, Any]:
            started = monitor.start_monitor(cfg)
            started.release()
            return {"pid": started.pid, "pid_start_time": started.pid_start_time,
                    "monitor_pid": started.monitor_pid, "monitor_start_time": started.monitor_start_time}

        state: dict[str, Any] = in_pause(self.runroot, body)
        self.started += [(state["pid"], state["pid_start_time"]),
                         (state["monitor_pid"], state["monitor_start_time"])]
        return state

    def wait(self, cfg: monitor.MonitorConfig, timeout: float = 20) -> dict[str, Any]:
        result = monitor.wait_exit(cfg.paths, timeout)
        assert result is not None, "the container did not exit in time"
        return result

    def wait_monitor_gone(self, state: dict[str, Any], timeout: float = 10) -> None:
        wait_until(lambda: not alive(state["monitor_pid"], state["monitor_start_time"]), timeout,
                   "the monitor did not exit", 0.02)

    def close(self) -> list[int]:
        return end_started(self.runroot, self.started)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture
def world(tmp_path: Path, rootfs: Path) -> Iterator[World]:
    w = World(tmp_path, rootfs)
    try:
        yield w
    finally:
        left = w.close()
    assert not left, f"processes left running: {left}"


def entries(path: str) -> list[tuple[str, bytes]]:
    return [(e.stream, e.data) for e in logs.read_logs(path)]


# ---------------------------------------------------------------- tests


def test_detached_container_outlives_its_starter(world: World) -> None:
    cfg = world.config(world.spec("sh", "-c", "echo out; echo err >&2; sleep 1; echo done"))
    began = time.monotonic()
    state = world.start(cfg)
    assert time.monotonic() - began < 1.0, "start_monitor waited for the container"
    # the process that started it is gone; the container still runs, supervised
    now = monitor.status(cfg.paths)
    assert now["running"] and now["monitor"] and now["exit"] is None
    saved = monitor.read_state(cfg.paths)
    assert saved is not None and saved["pid"] == state["pid"] and saved["started_at"].endswith("Z")
    result = world.wait(cfg)
    assert result["exit_code"] == 0 and result["signal"] is None and result["oom_killed"] is False
    assert logs.parse_time(result["finished_at"]) >= logs.parse_time(saved["started_at"]) + 900_000_000
    assert entries(cfg.log_path) == [("stdout", b"out\n"), ("stderr", b"err\n"), ("stdout", b"done\n")]
    world.wait_monitor_gone(state)
    assert not os.path.exists(cfg.paths.attach_socket)
    # the monitor lives in its own session, without a controlling terminal
    assert saved["monitor_pid"] != os.getpid()


def test_monitor_session_and_memory(world: World) -> None:
    cfg = world.config(world.spec("sleep", "30"))
    state = world.start(cfg)
    mpid = state["monitor_pid"]
    with open(f"/proc/{mpid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ppid, sid, tty_nr = int(fields[1]), int(fields[3]), int(fields[4])
    assert sid != os.getsid(0) and tty_nr == 0 and ppid != os.getpid()
    # start_monitor returns before the monitor's re-exec is done
    wait_until(lambda: Path(f"/proc/{mpid}/comm").read_text().strip() == monitor.PROCESS_NAME, 5,
               "the monitor did not rename itself")
    with open(f"/proc/{state['pid']}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == mpid, "the container is the monitor's child"
    time.sleep(0.2)
    mem = memory_kib(mpid)
    print(f"\nidle monitor: RSS {mem['Rss']} KiB, PSS {mem['Pss']} KiB, private dirty {mem['Private_Dirty']} KiB")
    assert mem["Rss"] < 16 * 1024, mem  # 12 MB target with compiled bytecode; see bench/monitor_memory.py
    os.kill(state["pid"], signal.SIGKILL)
    assert world.wait(cfg)["exit_code"] == 137
    world.wait_monitor_gone(state)


def test_output_without_newline_is_logged_as_is(world: World) -> None:
    cfg = world.config(world.spec("printf", "no-newline"))
    world.start(cfg)
    assert world.wait(cfg)["exit_code"] == 0
    assert entries(cfg.log_path) == [("stdout", b"no-newline")]
    line = Path(cfg.log_path).read_text()
    assert line.startswith('{"log":"no-newline","stream":"stdout","time":"') and line.endswith('Z"}\n')


def test_exit_code_and_k8s_file(world: World) -> None:
    cfg = world.config(world.spec("sh", "-c", "echo a; printf b; exit 3"), log_driver="k8s-file")
    world.start(cfg)
    assert world.wait(cfg)["exit_code"] == 3
    text = Path(cfg.log_path).read_text().splitlines()
    assert text[0].endswith(" stdout F a") and text[1].endswith(" stdout P b")
    assert entries(cfg.log_path) == [("stdout", b"a\n"), ("stdout", b"b")]


def test_rotation_keeps_max_files(world: World) -> None:
    script = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done"
    cfg = world.config(world.spec("sh", "-c", script), log_max_size=2000, log_max_files=3)
    world.start(cfg)
    assert world.wait(cfg)["exit_code"] == 0
    names = sorted(p.name for p in Path(cfg.log_path).parent.iterdir() if p.name.startswith(Path(cfg.log_path).name))
    base = Path(cfg.log_path).name
    assert names == [base, f"{base}.1", f"{base}.2"]
    for name in names:
        assert (Path(cfg.log_path).parent / name).stat().st_size < 2000 + 200
    got = [data for _, data in entries(cfg.log_path)]
    assert got[-1] == b"line-299\n"
    first = int(got[0].decode().split("-")[1])
    assert first > 0 and got == [f"line-{i}\n".encode() for i in range(first, 300)]
    assert [e.data for e in logs.read_logs(cfg.log_path, tail=2)] == [b"line-298\n", b"line-299\n"]


def test_follow_ends_when_the_container_ends(world: World) -> None:
    cfg = world.config(world.spec("sh", "-c", "for i in 1 2 3 4; do echo $i; sleep 0.3; done"))
    world.start(cfg)
    began = time.monotonic()
    seen = []
    for entry in logs.read_logs(cfg.log_path, follow=True, stop_when=lambda: monitor.exited(cfg.paths)):
        seen.append((entry.data, round(time.monotonic() - began, 1)))
    assert [d for d, _ in seen] == [b"1\n", b"2\n", b"3\n", b"4\n"]
    assert seen[-1][1] > 0.6, "follow did not stream live"
    assert time.monotonic() - began < 5


def test_attach_streams_output_and_forwards_stdin(world: World) -> None:
    cfg = world.config(world.spec("cat"), stdin=True, stdin_once=True)
    state = world.start(cfg)
    with attach.connect(cfg.paths, stdin=True) as client:
        client.send_stdin(b"hello\n")
        assert client.recv() == ("stdout", b"hello\n")
        client.send_stdin(b"again\n")
        assert client.recv() == ("stdout", b"again\n")
        client.close_stdin()
        assert client.recv() == ("exit", {"exit_code": 0})
        assert client.recv() is None
    assert entries(cfg.log_path) == [("stdout", b"hello\n"), ("stdout", b"again\n")]
    world.wait_monitor_gone(state)


def test_two_clients_and_detach(world: World) -> None:
    cfg = world.config(world.spec("sh", "-c", "while read line; do echo got $line; echo err $line >&2; done"),
                       stdin=True)
    world.start(cfg)
    first = attach.connect(cfg.paths, stdin=True)
    second = attach.connect(cfg.paths, stdout=False)
    first.send_stdin(b"x\n")
    assert first.recv() == ("stdout", b"got x\n")
    assert first.recv() == ("stderr", b"err x\n")
    assert second.recv() == ("stderr", b"err x\n")
    first.close()  # detaching does not close the container's stdin without stdin_once
    second.close()
    with attach.connect(cfg.paths, stdin=True) as third:
        third.send_stdin(b"y\n")
        assert third.recv() == ("stdout", b"got y\n")
    os.kill(monitor.read_state(cfg.paths)["pid"], signal.SIGKILL)  # type: ignore[index]
    assert world.wait(cfg)["exit_code"] == 137


def test_attach_relay_function(world: World, tmp_path: Path) -> None:
    cfg = world.config(world.spec("sh", "-c", "read a; echo in:$a; echo oops >&2; exit 5"), stdin=True,
                       stdin_once=True)
    world.start(cfg)
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    r, w = os.pipe()
    os.write(w, b"typed\n")
    os.close(w)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        code = attach.attach(cfg.paths, stdin=True, stdin_fd=r, stdout_fd=out.fileno(), stderr_fd=err.fileno())
    os.close(r)
    assert code == 5
    assert out_path.read_bytes() == b"in:typed\n" and err_path.read_bytes() == b"oops\n"


def test_tty_container(world: World) -> None:
    cfg = world.config(world.spec("sh", "-c", "tty; stty size; read x; echo got:$x", tty=True), stdin=True,
                       console_size=(30, 100))
    world.start(cfg)
    with attach.connect(cfg.paths, stdin=True) as client:
        client.resize(40, 120)
        client.send_stdin(b"abc\n")
        output = b""
        while (got := client.recv()) is not None and got[0] != "exit":
            output += got[1]
    assert b"/dev/pts/0" in output
    assert b"got:abc" in output
    assert world.wait(cfg)["exit_code"] == 0
    logged = b"".join(d for _, d in entries(cfg.log_path))
    assert b"/dev/pts/0\r\n" in logged and all(s == "stdout" for s, _ in entries(cfg.log_path))


def test_hold_until_start_shows_all_output(world: World) -> None:
    cfg = world.config(world.spec("echo", "first words"), hold=True)

    def body() -> dict[str, Any]:
        started = monitor.start_monitor(cfg)
        assert started.held
        client = attach.connect(cfg.paths, held=True)
        started.start()
        started.release()
        got = []
        while (msg := client.recv()) is not None:
            got.append(msg)
        return {"got": got, "pid": started.monitor_pid, "start": started.monitor_start_time}

    result = in_pause(world.runroot, body)
    world.started.append((result["pid"], result["start"]))
    assert result["got"] == [("stdout", b"first words\n"), ("exit", {"exit_code": 0})]


def test_command_not_found_is_typed_and_leaves_nothing(world: World) -> None:
    cfg = world.config(world.spec("no-such-command"))
    with pytest.raises(CommandNotFoundError) as info:
        world.start(cfg)
    assert info.value.exit_code == 127
    assert "no-such-command" in info.value.message
    assert monitor.read_state(cfg.paths) is None
    assert not os.path.exists(cfg.paths.attach_socket)


def test_killed_monitor_leaves_the_truth(world: World) -> None:
    cfg = world.config(world.spec("sleep", "30"))
    state = world.start(cfg)
    os.kill(state["monitor_pid"], signal.SIGKILL)
    world.wait_monitor_gone(state)
    # the container is not killed with its monitor (as with conmon): it runs on, and says so
    now = monitor.status(cfg.paths)
    assert now["running"] and not now["monitor"] and now["exit"] is None
    with pytest.raises(Exception, match="monitor is not running"):
        attach.connect(cfg.paths)
    os.kill(state["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(state["pid"], state["pid_start_time"]), 5, "the container did not exit", 0.02)
    result = monitor.wait_exit(cfg.paths, 5)
    assert result is not None and result["exit_code"] == monitor.VANISHED_EXIT_CODE and "vanished" in result["error"]


def record_exit(container_id: str, status: dict[str, Any]) -> None:
    """on_exit target for the test below: runs in the monitor."""
    target = Path(os.environ["RL_TEST_ON_EXIT_DIR"]) / "on_exit.txt"
    target.write_text(f"{container_id} {status['exit_code']}\n")


def test_on_exit_and_cleanup_command(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RL_TEST_ON_EXIT_DIR", str(tmp_path))
    marker = tmp_path / "cleaned"
    cfg = world.config(world.spec("sh", "-c", "exit 4"), on_exit=f"{__name__}:record_exit",
                       cleanup_argv=["/bin/sh", "-c", f"echo cleaned > {marker}"])
    state = world.start(cfg)
    assert world.wait(cfg)["exit_code"] == 4
    world.wait_monitor_gone(state)
    assert (tmp_path / "on_exit.txt").read_text() == f"{cfg.container_id} 4\n"
    assert marker.read_text() == "cleaned\n"


def test_exit_waits_for_release(world: World) -> None:
    """The monitor records the exit first, but runs on_exit only after rl released it."""
    cfg = world.config(world.spec("true"), cleanup_argv=["/bin/true"])

    def body() -> dict[str, Any]:
        started = monitor.start_monitor(cfg)
        wait_until(lambda: monitor.exited(cfg.paths), 5, "the container did not exit")
        time.sleep(0.2)
        still = monitor.is_running(started.monitor_pid, started.monitor_start_time)
        started.release()
        return {"waiting": still, "pid": started.monitor_pid, "start": started.monitor_start_time}

    result = in_pause(world.runroot, body)
    world.started.append((result["pid"], result["start"]))
    assert result["waiting"]
    world.wait_monitor_gone({"monitor_pid": result["pid"], "monitor_start_time": result["start"]})
