"""Real containers from a busybox rootfs: launch() inside a user namespace the test makes for itself.

Each test forks a child that unshares a user + mount namespace, maps itself (one id, or rltest's
subordinate ranges through newuidmap/newgidmap), runs the scenario there and sends the result back
pickled. The test process itself never changes namespaces.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import CannotInvokeError, CommandNotFoundError, RuntimeSetupError
from rootless.runtime import capabilities, idmap
from rootless.runtime.process import ContainerProcess, forward_signals, launch, relay_tty
from rootless.runtime.spec import HOST, ContainerSpec, Mount, Rlimit, User, default_mounts
from rootless.runtime.syscalls import CLONE_NEWUSER, SYSCALLS
from tests.support import BUSYBOX, busybox_rootfs, read_all, read_pty
from tests.support import in_new_userns as in_userns

pytestmark = pytest.mark.integration

UID = os.getuid()
USER = pwd.getpwuid(UID).pw_name
SUBUID = idmap.read_subids(idmap.SUBUID, USER, UID)
SUBGID = idmap.read_subids(idmap.SUBGID, USER, UID)
DEFAULT_CAPS_MASK = 0xA80425FB


def _userns_works() -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            SYSCALLS.unshare(CLONE_NEWUSER)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


if not os.path.exists(BUSYBOX):
    pytest.skip("busybox is not installed", allow_module_level=True)
if UID == 0:
    pytest.skip("run as an unprivileged user (CI: rltest)", allow_module_level=True)
if not _userns_works():
    pytest.skip("unprivileged user namespaces are disabled", allow_module_level=True)

needs_ranges = pytest.mark.skipif(
    not SUBUID or not SUBGID or not shutil.which("newuidmap"),
    reason=f"needs /etc/subuid+subgid ranges for {USER} and newuidmap/newgidmap",
)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs", extra_dirs=("home/alice",),
                          passwd="root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\n",
                          group="root:x:0:\ntty:x:5:\nalice:x:1234:\n")
    (root / "etc/notexec").write_text("just data\n")
    (root / "etc/notexec").chmod(0o644)
    gcc = shutil.which("gcc")
    if gcc:
        source = root.parent / "keyctl.c"
        source.write_text(KEYCTL_C)
        built = subprocess.run([gcc, "-static", "-O1", "-o", str(root / "bin/keytest"), str(source)],
                               capture_output=True)
        if built.returncode != 0:
            (root / "bin/keytest").unlink(missing_ok=True)
    return root


KEYCTL_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long r;
    r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
    printf("keyctl %ld %s\n", r, r < 0 ? strerror(errno) : "ok");
    r = syscall(SYS_add_key, "user", "k", "v", 1, -3);
    printf("add_key %ld %s\n", r, r < 0 ? strerror(errno) : "ok");
    r = syscall(SYS_request_key, "user", "k", 0, 0);
    printf("request_key %ld %s\n", r, r < 0 ? strerror(errno) : "ok");
    return 0;
}
"""


def make_spec(rootfs: Path, *args: str, **changes: Any) -> ContainerSpec:
    spec = ContainerSpec(rootfs=str(rootfs), args=list(args), hostname="box",
                         mounts=default_mounts(pts_gid=None))
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def run_here(spec: ContainerSpec) -> tuple[int, str]:
    """Launch ``spec`` (already in a user namespace); (exit code, stdout+stderr)."""
    r, w = os.pipe()
    null = os.open("/dev/null", os.O_RDONLY)
    proc = launch(spec, stdin=null, stdout=w, stderr=w)
    os.close(w)
    os.close(null)
    return proc.wait(), read_all(r).decode(errors="replace")


def run(spec: ContainerSpec, full_mapping: bool = False) -> tuple[int, str]:
    """Launch ``spec`` in a fresh user namespace; (exit code, stdout+stderr)."""
    result: tuple[int, str] = in_userns(lambda: run_here(spec), full_mapping)
    return result


# ------------------------------------------------------------------------------------------- tests


def test_echo_hi(rootfs: Path) -> None:
    assert run(make_spec(rootfs, "echo", "hi")) == (0, "hi\n")


def test_exit_codes_propagate(rootfs: Path) -> None:
    assert run(make_spec(rootfs, "sh", "-c", "exit 3"))[0] == 3
    # PID 1 ignores signals it has no handler for, even SIGKILL from inside; the command under --init doesn't
    assert run(make_spec(rootfs, "sh", "-c", "kill -9 $$", init=True))[0] == 137


def test_killed_by_signal_from_rl_is_128_plus_n(rootfs: Path) -> None:
    def scenario() -> int:
        proc = launch(make_spec(rootfs, "sleep", "30"))
        proc.signal(signal.SIGKILL)
        return proc.wait()

    assert in_userns(scenario) == 137


def test_pid_1_hostname_and_namespaces(rootfs: Path) -> None:
    code, out = run(make_spec(rootfs, "sh", "-c", "echo $$; hostname; cat /etc/passwd | head -1"))
    assert code == 0
    assert out.splitlines() == ["1", "box", "root:x:0:0:root:/root:/bin/sh"]


def test_proc_protections(rootfs: Path) -> None:
    script = (
        "{ echo h > /proc/sysrq-trigger; } 2>/dev/null && echo sysrq-writable;"
        "echo 1 > /proc/sys/kernel/ns_last_pid 2>&1;"
        "echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c);"
        "echo timer_list=$(cat /proc/timer_list | wc -c);"
        "echo keys=$(cat /proc/keys 2>/dev/null | wc -c);"
        "ls /proc/acpi | wc -l;"
        "touch /sys/kernel/x 2>/dev/null && echo sys-writable;"
        "grep -E ' /sys | /proc/sys ' /proc/mounts | cut -d' ' -f2,3,4 | cut -d, -f1"
    )
    _, out = run(make_spec(rootfs, "sh", "-c", script))
    lines = out.splitlines()
    assert "sysrq-writable" not in out and "sys-writable" not in out
    assert "Read-only file system" in lines[0]  # /proc/sys is read-only
    # masked: a file reads as /dev/null, a directory is an empty tmpfs (this kernel may lack kcore)
    assert lines[1:5] == ["kcore=0", "timer_list=0", "keys=0", "0"]
    assert "/sys sysfs ro" in out
    assert "/proc/sys proc ro" in out


def test_sys_read_only_without_netns(rootfs: Path) -> None:
    spec = make_spec(rootfs, "sh", "-c", "mkdir /sys/kernel/x 2>&1; grep ' /sys ' /proc/mounts | cut -d' ' -f4")
    spec.namespaces.net = HOST
    _code, out = run(spec)
    assert "Read-only file system" in out
    assert out.splitlines()[-1].startswith("ro,")


def test_capabilities_of_root_match_docker(rootfs: Path) -> None:
    _code, out = run(make_spec(rootfs, "grep", "-E", "^Cap|^NoNewPrivs|^Seccomp:", "/proc/self/status"))
    fields = dict(line.split(":\t") for line in out.splitlines())
    assert int(fields["CapEff"], 16) == DEFAULT_CAPS_MASK
    assert int(fields["CapPrm"], 16) == DEFAULT_CAPS_MASK
    assert int(fields["CapBnd"], 16) == DEFAULT_CAPS_MASK
    assert int(fields["CapInh"], 16) == 0
    assert int(fields["CapAmb"], 16) == 0
    assert fields["NoNewPrivs"] == "0"
    assert fields["Seccomp"] == "2"


def test_cap_add_and_drop(rootfs: Path) -> None:
    caps = capabilities.tweak(capabilities.DEFAULT_CAPABILITIES, add=["NET_ADMIN"], drop=["chown"])
    spec = make_spec(rootfs, "grep", "CapEff", "/proc/self/status",
                     capabilities=capabilities.for_user(caps, 0))
    _code, out = run(spec)
    value = int(out.split()[-1], 16)
    assert value == capabilities.mask(caps)
    assert value & 1 << capabilities.CAPABILITIES["CAP_NET_ADMIN"]
    assert not value & 1 << capabilities.CAPABILITIES["CAP_CHOWN"]


def test_seccomp_blocks_userns_and_keyring(rootfs: Path) -> None:
    _, out = run(make_spec(rootfs, "sh", "-c", "unshare -U true; echo rc=$?"))
    assert "Operation not permitted" in out and "rc=1" in out
    _, out = run(make_spec(rootfs, "sh", "-c", "mount -t tmpfs t /mnt; echo rc=$?"))
    assert "permission denied" in out and "rc=1" in out  # EPERM from seccomp, not from a missing /mnt
    if not (rootfs / "bin/keytest").exists():
        pytest.skip("gcc -static is not available to build the keyctl probe")
    _code, out = run(make_spec(rootfs, "keytest"))
    assert out.splitlines() == [
        "keyctl -1 Operation not permitted",
        "add_key -1 Operation not permitted",
        "request_key -1 Operation not permitted",
    ]


def test_unconfined_allows_userns(rootfs: Path) -> None:
    _code, out = run(make_spec(rootfs, "sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true; echo rc=$?",
                              seccomp=None))
    assert "Seccomp:\t0" in out
    assert "rc=0" in out


def test_no_new_privs(rootfs: Path) -> None:
    _code, out = run(make_spec(rootfs, "grep", "-E", "NoNewPrivs|Seccomp:", "/proc/self/status",
                              no_new_privs=True))
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out


def test_command_not_found_is_127(rootfs: Path) -> None:
    with pytest.raises(CommandNotFoundError) as info:
        run(make_spec(rootfs, "nope"))
    assert info.value.exit_code == 127
    assert info.value.message == 'exec: "nope": executable file not found in $PATH'
    with pytest.raises(CommandNotFoundError, match="stat /bin/nope: no such file"):
        run(make_spec(rootfs, "/bin/nope"))


def test_permission_denied_is_126(rootfs: Path) -> None:
    with pytest.raises(CannotInvokeError) as info:
        run(make_spec(rootfs, "/etc/notexec"))
    assert info.value.exit_code == 126
    assert "permission denied" in info.value.message


def test_unmapped_user_is_a_setup_error(rootfs: Path) -> None:
    with pytest.raises(RuntimeSetupError, match="switch to user 1234:1234 failed: invalid argument"):
        run(make_spec(rootfs, "true", user=User(1234, 1234)))


def test_ignored_signals_are_reset(rootfs: Path) -> None:
    def scenario() -> tuple[int, str]:
        old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            return run_here(make_spec(rootfs, "grep", "SigIgn", "/proc/self/status"))
        finally:
            signal.signal(signal.SIGHUP, old)

    code, out = in_userns(scenario)
    assert code == 0
    assert int(out.split()[-1], 16) == 0


def test_setup_failure_names_the_operation(rootfs: Path, tmp_path: Path) -> None:
    spec = make_spec(rootfs, "true", mounts=[*default_mounts(pts_gid=None),
                                             Mount("/missing", "bind", str(tmp_path / "missing"))])
    with pytest.raises(RuntimeSetupError, match=r"bind .*/missing on /missing failed: no such file or directory"):
        run(spec)


def test_bind_read_only_and_tmpfs(rootfs: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    mounts = [
        *default_mounts(pts_gid=None),
        Mount("/data", "bind", str(data), ["ro"]),
        Mount("/scratch", "tmpfs", "tmpfs", ["size=1m", "mode=1777", "nosuid"]),
    ]
    script = ("cat /data/hello; touch /data/x 2>&1; echo ok > /scratch/f && cat /scratch/f;"
              "grep ' /scratch ' /proc/mounts | cut -d' ' -f3")
    _code, out = run(make_spec(rootfs, "sh", "-c", script, mounts=mounts))
    lines = out.splitlines()
    assert lines[0] == "from the host"
    assert "Read-only file system" in lines[1]
    assert lines[2:] == ["ok", "tmpfs"]
    assert not (data / "x").exists()


def test_read_only_rootfs(rootfs: Path) -> None:
    _code, out = run(make_spec(rootfs, "sh", "-c", "touch /etc/x 2>&1; touch /dev/shm/y && echo shm-ok",
                              readonly_rootfs=True))
    assert "Read-only file system" in out and "shm-ok" in out


def test_init_reaps_zombies_and_forwards_signals(rootfs: Path) -> None:
    script = "(sleep 0.1 &); sleep 0.6; grep -h '^State' /proc/[0-9]*/status"
    code, out = run(make_spec(rootfs, "sh", "-c", script, init=True))
    assert code == 0
    assert "zombie" not in out

    def scenario() -> int:
        proc = launch(make_spec(rootfs, "sleep", "30", init=True))
        time.sleep(0.1)
        with forward_signals(proc):
            os.kill(os.getpid(), signal.SIGTERM)  # rl gets it; init passes it on to sleep
            return proc.wait()

    assert in_userns(scenario) == 128 + signal.SIGTERM


@pytest.mark.parametrize("init", [False, True])
def test_pty_session(rootfs: Path, init: bool) -> None:
    def scenario() -> tuple[int, bytes]:
        proc = launch(make_spec(rootfs, "sh", tty=True, init=init), console_size=(24, 80))
        assert proc.pty is not None
        os.write(proc.pty, b"echo $((6*7)); tty; stty size\n")
        os.write(proc.pty, b"exit 5\n")
        output = read_pty(proc.pty)
        return proc.wait(), output

    code, output = in_userns(scenario)
    assert code == 5
    assert b"\r\n42\r\n" in output
    assert b"/dev/pts/0" in output
    assert b"24 80" in output


def test_hold_then_start(rootfs: Path) -> None:
    def scenario() -> tuple[int, int]:
        r, w = os.pipe()
        proc = launch(make_spec(rootfs, "echo", "started"), stdout=w, hold=True)
        os.close(w)
        time.sleep(0.05)
        early = proc.poll()
        proc.start()
        out = os.read(r, 100)
        assert out == b"started\n"
        return early if early is not None else -1, proc.wait()

    assert in_userns(scenario) == (-1, 0)


@needs_ranges
def test_user_1234(rootfs: Path) -> None:
    caps = capabilities.for_user(capabilities.DEFAULT_CAPABILITIES, 1234)
    spec = make_spec(rootfs, "sh", "-c", "id; grep -E '^(Uid|Gid|Groups|CapEff|CapBnd):' /proc/self/status",
                     user=User(1234, 1234, [5]), capabilities=caps, mounts=default_mounts())
    code, out = run(spec, full_mapping=True)
    assert code == 0, out
    fields = dict(line.split(":\t") for line in out.splitlines()[1:])
    assert out.splitlines()[0].startswith("uid=1234(alice) gid=1234(alice)")
    assert fields["Uid"].split() == ["1234"] * 4
    assert fields["Gid"].split() == ["1234"] * 4
    assert fields["Groups"].split() == ["5"]
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapBnd"], 16) == DEFAULT_CAPS_MASK


def test_launch_to_exec_time(rootfs: Path) -> None:
    def scenario() -> list[float]:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            proc: ContainerProcess = launch(make_spec(rootfs, "true"))
            times.append(time.perf_counter() - t0)
            assert proc.wait() == 0
        return times

    times = in_userns(scenario)
    print(f"launch() to exec of true: min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert min(times) < 0.25


def test_relay_tty(rootfs: Path, tmp_path: Path) -> None:
    def scenario() -> tuple[int, bytes]:
        keys_r, keys_w = os.pipe()
        os.write(keys_w, b"echo $((6*7))\nexit 5\n")
        os.close(keys_w)
        out = os.open(tmp_path / "screen", os.O_WRONLY | os.O_CREAT, 0o600)
        proc = launch(make_spec(rootfs, "sh", tty=True))
        code = relay_tty(proc, stdin_fd=keys_r, stdout_fd=out)
        return code, (tmp_path / "screen").read_bytes()

    code, screen = in_userns(scenario)
    assert code == 5
    assert b"\r\n42\r\n" in screen


def test_join_network_namespace_rlimits_cwd_env(rootfs: Path) -> None:
    def scenario() -> tuple[str, str]:
        first = launch(make_spec(rootfs, "sleep", "30"))
        r, w = os.pipe()
        spec = make_spec(rootfs, "sh", "-c", "readlink /proc/self/ns/net; ulimit -n; pwd; echo $GREETING",
                         rlimits=[Rlimit("nofile", 100, 200)], cwd="/home/alice/work",
                         env=["PATH=/bin", "GREETING=hello"])
        spec.namespaces.net = f"/proc/{first.pid}/ns/net"
        second = launch(spec, stdout=w)
        os.close(w)
        out = read_all(r)
        second.wait()
        theirs = os.readlink(f"/proc/{first.pid}/ns/net")
        first.signal(signal.SIGKILL)
        first.wait()
        return theirs, out.decode()

    theirs, out = in_userns(scenario)
    assert out.splitlines() == [theirs, "100", "/home/alice/work", "hello"]
