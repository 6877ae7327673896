"""`exec_in`: processes started in a running container, with real namespaces.

The container runs detached under its monitor (``rootless.runtime.monitor``), started from a child
that joined the test's own pause namespace; each exec runs in another such child, as `rl exec` does.
Every process the test started is gone at the end.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import CommandNotFoundError, ConflictError
from rootless.runtime import capabilities, idmap, monitor, pause, userns
from rootless.runtime.exec import ExecOptions, exec_in
from rootless.runtime.spec import ContainerSpec, User, default_mounts
from tests.support import BUSYBOX, busybox_rootfs, end_started, in_pause, read_all, read_pty, wait_until

pytestmark = pytest.mark.integration

UID = os.getuid()
USER = pwd.getpwuid(UID).pw_name

if not os.path.exists(BUSYBOX):
    pytest.skip("busybox is not installed", allow_module_level=True)
if UID == 0:
    pytest.skip("run as an unprivileged user (CI: rltest)", allow_module_level=True)
if userns.userns_problems():
    pytest.skip(f"user namespaces are disabled: {userns.userns_problems()[0].message}", allow_module_level=True)

needs_ranges = pytest.mark.skipif(
    not idmap.read_subids(idmap.SUBUID, USER, UID) or not idmap.read_subids(idmap.SUBGID, USER, UID),
    reason=f"needs /etc/subuid and /etc/subgid ranges for {USER}",
)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs", extra_dirs=("work",),
                          passwd="root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/tmp:/bin/sh\n",
                          group="root:x:0:\nalice:x:1234:\n")


class Box:
    """A running container (`sleep` under its monitor) and a way to exec into it."""

    def __init__(self, base: Path, rootfs: Path) -> None:
        self.runroot = base / "run"
        self.runroot.mkdir(mode=0o700)
        self.spec = ContainerSpec(
            rootfs=str(rootfs), hostname="boxname", mounts=default_mounts(pts_gid=None), cwd="/work",
            env=["PATH=/bin", "FOO=bar"],
            args=["sh", "-c", "echo from-container > /tmp/marker; echo started; exec sleep 60"],
        )
        self.cfg = monitor.MonitorConfig("e" * 64, self.spec, str(self.runroot / "c"), log_path=str(base / "log"))
        self.started: list[tuple[int, int | None]] = []

    def start(self) -> None:
        def body() -> dict[str, Any]:
            with monitor.start_monitor(self.cfg) as started:
                return {"pid": started.pid, "start": started.pid_start_time, "mpid": started.monitor_pid,
                        "mstart": started.monitor_start_time}

        s = in_pause(self.runroot, body)
        self.pid, self.pid_start = s["pid"], s["start"]
        self.started += [(s["pid"], s["start"]), (s["mpid"], s["mstart"])]
        log = Path(self.cfg.log_path)
        wait_until(lambda: log.exists() and log.read_bytes(), 5, "the container did not start its command")

    def exec(self, *args: str, stdin: bytes = b"", **options: Any) -> tuple[int, str]:
        """(exit code, stdout+stderr) of ``args`` exec'd in the container."""
        pid, start, spec = self.pid, self.pid_start, self.spec

        def body() -> tuple[int, str]:
            r, w = os.pipe()
            ir, iw = os.pipe()
            os.write(iw, stdin)
            os.close(iw)
            proc = exec_in(pid, spec, ExecOptions(args=list(args), **options), pid_start_time=start,
                           stdin=ir, stdout=w, stderr=w)
            os.close(w)
            os.close(ir)
            out = read_all(r)
            return proc.wait(), out.decode(errors="replace")

        result: tuple[int, str] = in_pause(self.runroot, body)
        return result

    def stop(self) -> None:
        if monitor.is_running(self.pid, self.pid_start):
            os.kill(self.pid, signal.SIGKILL)
        assert monitor.wait_exit(self.cfg.paths, 10) is not None

    def close(self) -> list[int]:
        return end_started(self.runroot, self.started)


@pytest.fixture
def box(tmp_path: Path, rootfs: Path) -> Iterator[Box]:
    b = Box(tmp_path, rootfs)
    try:
        b.start()
        yield b
    finally:
        if getattr(b, "pid", 0) and monitor.is_running(b.pid, b.pid_start):
            b.stop()
        left = b.close()
    assert not left, f"processes left running: {left}"


def test_exec_shares_the_containers_namespaces_and_files(box: Box) -> None:
    code, out = box.exec("cat", "/proc/1/cmdline")
    assert (code, out) == (0, "sleep\x0060\x00")
    code, out = box.exec("ps", "-o", "pid,args")
    assert code == 0
    lines = [line.split(None, 1) for line in out.strip().splitlines()[1:]]
    assert ["1", "sleep 60"] in lines and any(args.startswith("ps") for _, args in lines)
    assert box.exec("cat", "/tmp/marker") == (0, "from-container\n")
    assert box.exec("hostname") == (0, "boxname\n")
    assert box.exec("pwd") == (0, "/work\n")
    assert box.exec("pwd", cwd="/tmp") == (0, "/tmp\n")
    assert box.exec("sh", "-c", "echo $FOO $BAR", env=["BAR=baz"]) == (0, "bar baz\n")
    # what the exec'd process writes, the container sees
    assert box.exec("sh", "-c", "echo new > /tmp/from-exec")[0] == 0
    assert box.exec("cat", "/tmp/from-exec") == (0, "new\n")
    # same mount and network namespaces as PID 1
    code, out = box.exec("sh", "-c", "for n in 1/ns/mnt self/ns/mnt 1/ns/net self/ns/net; do readlink /proc/$n; done")
    mnt1, mnt2, net1, net2 = out.split()
    assert code == 0 and mnt1 == mnt2 and net1 == net2


def test_exec_security_matches_the_container(box: Box) -> None:
    def status_of(pid: str) -> dict[str, str]:
        code, out = box.exec("cat", f"/proc/{pid}/status")
        assert code == 0
        return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)

    container, execd = status_of("1"), status_of("self")
    for key in ("CapBnd", "CapEff", "CapPrm", "Seccomp", "NoNewPrivs"):
        assert execd[key].strip() == container[key].strip(), key
    assert execd["Seccomp"].strip() == "2"
    assert execd["CapEff"].strip() == "00000000a80425fb"
    privileged = box.exec("sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status", privileged=True)[1]
    assert "Seccomp:\t0" in privileged and "00000000a80425fb" not in privileged


def test_exit_codes_and_stdin(box: Box) -> None:
    assert box.exec("sh", "-c", "exit 7") == (7, "")
    assert box.exec("cat", stdin=b"piped\n") == (0, "piped\n")
    assert box.exec("sh", "-c", "kill -9 $$")[0] == 137


def test_missing_command_is_127(box: Box) -> None:
    with pytest.raises(CommandNotFoundError) as info:
        box.exec("no-such-command")
    assert info.value.exit_code == 127
    assert "no-such-command" in info.value.message


def test_exec_into_a_stopped_container_is_refused(box: Box) -> None:
    box.stop()
    with pytest.raises(ConflictError, match="not running"):
        box.exec("true")


@needs_ranges
def test_exec_as_another_user(box: Box) -> None:
    code, out = box.exec("sh", "-c", "id -u; id -g; grep CapEff /proc/self/status", user=User(1234, 1234))
    assert code == 0
    uid, gid, caps = out.splitlines()
    assert (uid, gid) == ("1234", "1234") and caps.split()[1] == "0000000000000000"


@needs_ranges
def test_exec_joins_a_nested_keep_id_user_namespace(tmp_path: Path, rootfs: Path) -> None:
    b = Box(tmp_path, rootfs)
    info = pause.ensure(b.runroot).info()
    plan = idmap.keep_id_mapping(UID, os.getgid(), info.uid_count, outer_gid_size=info.gid_count)
    b.spec.user_namespace = {"uid_map": plan.uid_map.text(), "gid_map": plan.gid_map.text()}
    b.spec.user = User(UID, os.getgid())
    b.spec.capabilities = capabilities.for_user(capabilities.DEFAULT_CAPABILITIES, UID)
    try:
        b.start()
        code, out = b.exec("sh", "-c", "id -u; readlink /proc/1/ns/user; readlink /proc/self/ns/user; cat /tmp/marker")
        assert code == 0
        uid, ns1, ns_self, marker = out.splitlines()
        assert uid == str(UID) and ns1 == ns_self and marker == "from-container"
        assert ns1 != f"user:[{os.stat('/proc/self/ns/user').st_ino}]"
        b.stop()
    finally:
        left = b.close()
    assert not left


def test_exec_with_a_tty(box: Box) -> None:
    pid, start, spec = box.pid, box.pid_start, box.spec

    def body() -> tuple[int, bytes]:
        proc = exec_in(pid, spec, ExecOptions(args=["sh", "-c", "tty; echo $TERM; stty size"], tty=True,
                                              console_size=(33, 101)), pid_start_time=start)
        assert proc.pty is not None
        out = read_pty(proc.pty)
        code = proc.wait()
        proc.close()
        return code, out

    code, out = in_pause(box.runroot, body)
    assert code == 0
    assert out.split(b"\r\n")[:3] == [b"/dev/pts/0", b"xterm", b"33 101"]


def test_exec_speed(box: Box) -> None:
    """exec_in + wait for `true`, inside the namespace (what `rl exec` adds to its own start-up)."""
    pid, start, spec = box.pid, box.pid_start, box.spec

    def body() -> list[float]:
        times = []
        for _ in range(20):
            began = time.perf_counter()
            proc = exec_in(pid, spec, ExecOptions(args=["true"]), pid_start_time=start)
            assert proc.wait() == 0
            times.append(time.perf_counter() - began)
        return sorted(times)

    times = in_pause(box.runroot, body)
    print(f"\nexec_in(true)+wait: median {times[len(times) // 2] * 1000:.1f} ms, min {times[0] * 1000:.1f} ms")
    assert times[len(times) // 2] < 0.5
