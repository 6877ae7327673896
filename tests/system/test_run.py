"""`rl run` as a user types it: real user namespace, real registry, real storage drivers."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Result, RunRl, rl_command

pytestmark = pytest.mark.system

DOCKER_DEFAULT_CAPS = "00000000a80425fb"


def ref(fixture_images: dict[str, Any], name: str) -> str:
    return str(fixture_images[name].reference)


def test_echo_and_exit_codes(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    busybox = ref(fixture_images, "busybox")
    assert rl("run", "--rm", "-q", busybox, "echo", "hello").out == "hello\n"
    rl("run", "--rm", "-q", busybox, "sh", "-c", "exit 3", rc=3)
    # PID 1 is immune to its own SIGKILL, as in docker; under --init the shell is not PID 1
    rl("run", "--rm", "-q", "--init", busybox, "sh", "-c", "kill -9 $$", rc=137)


@pytest.mark.parametrize(
    ("command", "rc", "message"),
    [
        (["nope"], 127, 'exec: "nope": executable file not found in $PATH'),
        (["/etc/passwd"], 126, "permission denied"),
    ],
)
def test_command_errors(rl: RunRl, fixture_images: dict[str, Any], command: list[str], rc: int,
                        message: str) -> None:
    result = rl("run", "--rm", "-q", ref(fixture_images, "busybox"), *command, rc=rc)
    assert result.err.count("\n") == 1
    assert message in result.err
    assert "Traceback" not in result.err


def test_image_defaults_and_layers(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images, "multilayer")
    # the image's Entrypoint is sh -c, its User alice, its WorkingDir /data
    out = rl("run", "--rm", "-q", image, "id -u; id -g; pwd; echo $GREETING").lines
    assert out == ["1234", "1234", "/data", "hello world"]
    script = (
        "test -e /etc/deleteme && echo deleteme-present; "
        "ls /opt/replaced; "
        "stat -c '%u:%g' /data/alice-file; "
        "stat -c '%A' /usr/bin/setuid-tool; "
        "test /data/hardlink-a -ef /data/hardlink-b && echo same-inode; "
        "readlink /data/abs-link; test -p /data/fifo && echo fifo"
    )
    out = rl("run", "--rm", "-q", "-u", "0", image, script).lines
    assert out == ["c", "1234:1234", "-rwsr-xr-x", "same-inode", "/etc/passwd", "fifo"]


def test_root_with_full_range(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    out = rl("run", "--rm", "-q", ref(fixture_images, "busybox"), "sh", "-c", "id -u; cat /proc/self/uid_map").lines
    assert out[0] == "0"
    maps = [line.split() for line in out[1:]]
    assert maps[0][:3] == ["0", str(os.getuid()), "1"] or maps[0][0] == "0"
    assert sum(int(m[2]) for m in maps) > 1, "the subordinate range should be mapped"


def test_single_id_mapping_flattens_and_warns(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    env = {"RL_USERNS_SINGLE_ID": "1"}
    result = rl("run", "--rm", "-q", "-u", "0", ref(fixture_images, "multilayer"),
                "stat -c %u /data/alice-file; cat /proc/self/uid_map | wc -l", env=env,
                warnings=["single-ID", "single ID", "ownership"])
    assert result.lines == ["0", "1"]
    assert any(line.startswith("Warning:") for line in result.err.splitlines())


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])
def test_storage_drivers_keep_layers_intact(rl: RunRl, fixture_images: dict[str, Any], driver: str) -> None:
    image = ref(fixture_images, "busybox")
    out = rl("run", "--rm", "-q", "--storage-driver", driver, image, "sh", "-c",
             "echo changed > /etc/motd; rm /bin/ls; cat /etc/motd").out
    assert out == "changed\n"
    out = rl("run", "--rm", "-q", "--storage-driver", driver, image, "sh", "-c",
             "test -e /etc/motd && echo motd; test -e /bin/ls && echo ls").out
    assert out == "ls\n"


def test_env_workdir_user(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nFROM_FILE=file\nOVERRIDE=file\n")
    out = rl("run", "--rm", "-q", "--env-file", str(env_file), "-e", "OVERRIDE=flag", "-e", "PLAIN=1",
             "-w", "/tmp/work", "-u", "1234:1234", ref(fixture_images, "busybox"), "sh", "-c",
             "echo $FROM_FILE $OVERRIDE $PLAIN; pwd; id -u; id -g").lines
    assert out == ["file flag 1", "/tmp/work", "1234", "1234"]
    assert rl("run", "--rm", "-q", "-u", "alice", ref(fixture_images, "busybox"), "id", "-un").out == "alice\n"
    result = rl("run", "--rm", "-q", "-u", "carol", ref(fixture_images, "busybox"), "true", rc=125)
    assert "unable to find user carol" in result.err


def test_bind_mounts(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "in").write_text("from host\n")
    image = ref(fixture_images, "busybox")
    out = rl("run", "--rm", "-q", "-v", f"{host}:/mnt:ro", image, "sh", "-c",
             "cat /mnt/in; echo x > /mnt/out || echo refused", rc=0).out
    assert out.splitlines()[0] == "from host"
    assert "refused" in out
    assert not (host / "out").exists()
    rl("run", "--rm", "-q", "-v", f"{host}:/mnt", image, "sh", "-c", "echo written > /mnt/out")
    assert (host / "out").read_text() == "written\n"
    missing = tmp_path / "created" / "by" / "rl"
    rl("run", "--rm", "-q", "-v", f"{missing}:/m", image, "true")
    assert missing.is_dir()
    rl("run", "--rm", "-q", "--read-only", "--tmpfs", "/scratch", image, "sh", "-c",
       "echo ok > /scratch/f && ! touch /etc/nope")


def test_security_defaults(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    script = (
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; "
        "echo b > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; "
        "head -c 1 /proc/kcore 2>/dev/null | wc -c; "
        "touch /sys/x 2>/dev/null && echo sys-writable; "
        "unshare -U true 2>/dev/null && echo unshare-allowed; "
        "echo done"
    )
    out = rl("run", "--rm", "-q", ref(fixture_images, "busybox"), "sh", "-c", script).lines
    status = dict(line.split(":\t") for line in out[:3])
    assert status == {"CapEff": DOCKER_DEFAULT_CAPS, "NoNewPrivs": "1", "Seccomp": "2"}
    assert out[3:] == ["0", "done"]


def test_host_file_the_user_cannot_read_stays_unreadable(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    secret = Path("/etc/shadow")
    if os.access(secret, os.R_OK):
        pytest.skip("this test needs an unprivileged user who cannot read /etc/shadow")
    result = rl("run", "--rm", "-q", "-v", "/etc/shadow:/shadow:ro", ref(fixture_images, "busybox"),
                "cat", "/shadow", rc=1)
    assert "Permission denied" in result.err or "can't open" in result.err


def test_sigterm_to_rl_reaches_the_container(rl: RunRl, rl_env: dict[str, str],
                                             fixture_images: dict[str, Any]) -> None:
    rl("pull", "-q", ref(fixture_images, "busybox"))
    proc = subprocess.Popen(
        [*rl_command(), "run", "--rm", ref(fixture_images, "busybox"), "sh", "-c",
         "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done"],
        env=rl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert "got-term" in out


def _read_until(fd: int, needle: bytes, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_interactive_tty_session(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any]) -> None:
    rl("pull", "-q", ref(fixture_images, "busybox"))
    master, slave = pty.openpty()
    proc = subprocess.Popen([*rl_command(), "run", "--rm", "-it", ref(fixture_images, "busybox"), "sh"],
                            env=rl_env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        prompt = _read_until(master, b"# ")
        if b"\x1b[6n" in prompt:  # busybox's line editor asks where the cursor is: answer like a terminal
            os.write(master, b"\x1b[1;3R")
            time.sleep(0.5)
        os.write(master, b"tty; echo $((6*7))\n")
        out = _read_until(master, b"42")
        assert b"/dev/pts/0" in out
        os.write(master, b"exit 5\n")
        assert proc.wait(timeout=30) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _pause_pid(rl: RunRl) -> int | None:
    import json

    ns = json.loads(rl("info", "--format", "json").out)["userNamespace"]
    return int(ns["pausePid"]) if ns["running"] else None


def test_no_leftovers_after_rm(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any]) -> None:
    rl("run", "--rm", "-q", ref(fixture_images, "busybox"), "true")
    storage = Path(rl_env["XDG_DATA_HOME"]) / "rl" / "storage"
    containers = storage / "containers"
    assert not containers.exists() or not [p for p in containers.iterdir() if not p.name.startswith(".")]
    pause = _pause_pid(rl)
    assert pause is not None
    mountinfo = Path(f"/proc/{pause}/mountinfo").read_text()
    assert str(storage) not in mountinfo
    children = Path(f"/proc/{pause}/task/{pause}/children").read_text().split()
    assert children == []


def test_debian_image(rl: RunRl, debian_image: Any) -> None:
    result: Result = rl("run", "--rm", "-q", str(debian_image.reference), "sh", "-c",
                        "cat /etc/debian_version; id -u; ls -ld /var/cache/apt | cut -c1")
    lines = result.lines
    assert lines[0].startswith("12")
    assert lines[1:] == ["0", "d"]


def test_network_none_has_only_loopback(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    out = rl("run", "--rm", "-q", "--network", "none", ref(fixture_images, "busybox"), "ls", "/sys/class/net").out
    assert out.split() == ["lo"]


def test_keep_id(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    share = tmp_path / "home-share"
    share.mkdir()
    (share / "mine").write_text("data\n")
    out = rl("run", "--rm", "-q", "--userns=keep-id", "-v", f"{share}:/share", ref(fixture_images, "busybox"),
             "sh", "-c", "id -u; id -g; stat -c %u /share/mine; touch /share/made-inside").lines
    assert out == [str(os.getuid()), str(os.getgid()), str(os.getuid())]
    assert (share / "made-inside").stat().st_uid == os.getuid()
    result = rl("run", "--rm", "-q", "--userns=frob", ref(fixture_images, "busybox"), "true", rc=125)
    assert "--userns" in result.err


KEEP_ID_WARNING = "--userns=keep-id: the image's root-owned files appear owned by you"


def _fuse_daemons(word: str) -> list[int]:
    """Live fuse-overlayfs processes whose arguments mention ``word``."""
    from rootless.storage.fuse_overlayfs import all_daemons

    found = []
    for pid in all_daemons():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if word.encode() in args:
            found.append(pid)
    return found


@pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs is not installed")
def test_keep_id_shows_the_image_owners(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    uid, gid = os.getuid(), os.getgid()
    out = rl("run", "--rm", "-q", "--userns=keep-id", ref(fixture_images, "busybox"), "sh", "-c",
             "id -u; stat -c %u:%g /etc/passwd /bin /bin/busybox /home/alice").lines
    assert out == [str(uid), "0:0", "0:0", "0:0", "1234:1234"]
    out = rl("run", "--rm", "-q", "--userns=keep-id", ref(fixture_images, "multilayer"),
             "id -u; id -g; stat -c %u:%g /data/alice-file /data/alice-dir /etc/passwd /data").lines
    assert out == [str(uid), str(gid), "1234:1234", "1234:1234", "0:0", "0:0"]


@pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs is not installed")
def test_keep_id_files_made_inside_stay_the_users(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    uid = os.getuid()
    script = "mkdir -p /tmp/d; echo mine > /tmp/d/mine; stat -c %u:%g /tmp/d/mine /tmp/d /etc/passwd"
    expected = [f"{uid}:{os.getgid()}", f"{uid}:{os.getgid()}", "0:0"]
    rl("run", "-q", "--name", "k1", "--userns=keep-id", ref(fixture_images, "busybox"), "sh", "-c", script)
    assert rl("inspect", "-f", "{{.Driver}}", "k1").out.strip() == "fuse-overlayfs"
    # a second start mounts the container's files as before
    assert rl("start", "-a", "k1").lines == expected
    assert "A /tmp/d/mine" in rl("diff", "k1").lines
    rl("cp", "k1:/tmp/d/mine", str(tmp_path / "got"))
    assert (tmp_path / "got").read_text() == "mine\n"
    assert (tmp_path / "got").stat().st_uid == uid
    # the new layer stores the file as the user's id inside, as a Dockerfile's chown would
    rl("commit", "k1", "localhost/keepid:1")
    out = rl("run", "--rm", "-q", "--userns=keep-id", "localhost/keepid:1", "stat", "-c", "%u %n",
             "/tmp/d/mine", "/etc/passwd").lines
    assert out == [f"{uid} /tmp/d/mine", "0 /etc/passwd"]
    out = rl("run", "--rm", "-q", "localhost/keepid:1", "stat", "-c", "%u %n", "/tmp/d/mine", "/etc/passwd").lines
    assert out == [f"{uid} /tmp/d/mine", "0 /etc/passwd"]


@pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs is not installed")
def test_keep_id_export_and_cp_use_the_containers_owners(rl: RunRl, rl_env: dict[str, str],
                                                         fixture_images: dict[str, Any], tmp_path: Path) -> None:
    """Through the mount a keep-id container's files show rl's ids; export and cp give the container's."""
    import io
    import subprocess
    import tarfile

    from tests.system.conftest import rl_command

    uid, gid = os.getuid(), os.getgid()
    rl("run", "-d", "-q", "--name", "k2", "--userns=keep-id", ref(fixture_images, "busybox"), "sh", "-c",
       "echo mine > /tmp/mine; touch /tmp/ready; sleep 300")
    rl("exec", "k2", "sh", "-c", "while [ ! -e /tmp/ready ]; do sleep 0.1; done")

    def tar_of(*args: str) -> dict[str, tuple[int, int]]:
        out = subprocess.run([*rl_command(), *args], env=rl_env, capture_output=True, check=True, timeout=120).stdout
        with tarfile.open(fileobj=io.BytesIO(out)) as tf:
            return {m.name.lstrip("./"): (m.uid, m.gid) for m in tf.getmembers()}

    exported = tar_of("export", "k2")
    assert exported["etc/passwd"] == (0, 0) and exported["tmp/mine"] == (uid, gid)
    assert tar_of("cp", "k2:/etc/passwd", "-")["passwd"] == (0, 0)
    # in: a host file belongs to the container's root; a tar's owners are the container's ids
    (tmp_path / "host-file").write_text("x")
    rl("cp", str(tmp_path / "host-file"), "k2:/tmp/in")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tf:
        info = tarfile.TarInfo("t1234")
        info.uid = info.gid = 1234
        tf.addfile(info, io.BytesIO(b""))
    subprocess.run([*rl_command(), "cp", "-", "k2:/tmp"], env=rl_env, input=data.getvalue(), check=True,
                   capture_output=True, timeout=120)
    assert rl("exec", "k2", "stat", "-c", "%u:%g %n", "/tmp/in", "/tmp/t1234").lines == \
        ["0:0 /tmp/in", "1234:1234 /tmp/t1234"]
    rl("rm", "-f", "-t", "0", "k2")


@pytest.mark.skipif(not shutil.which("fuse-overlayfs"), reason="fuse-overlayfs is not installed")
def test_keep_id_rm_leaves_no_fuse_overlayfs(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any]) -> None:
    busybox = ref(fixture_images, "busybox")
    cid = rl("run", "-d", "-q", "--name", "k2", "--userns=keep-id", busybox, "sleep", "300").out.strip()
    assert len(_fuse_daemons(cid)) == 1
    rl("rm", "-f", "-t", "0", "k2")
    assert _fuse_daemons(cid) == []
    rl("run", "--rm", "-q", "--userns=keep-id", busybox, "true")
    assert _fuse_daemons(os.path.realpath(rl_env["XDG_DATA_HOME"])) == []


def test_keep_id_without_fuse_overlayfs_warns(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    path = os.path.dirname(sys.executable)  # the venv: rl and python, no fuse-overlayfs
    busybox = ref(fixture_images, "busybox")
    for flags in ([], ["--storage-driver", "vfs"]):
        result = rl("run", "--rm", "-q", "--network", "none", "--userns=keep-id", *flags, busybox,
                    "stat", "-c", "%u", "/etc/passwd", env={"PATH": path}, warnings=[KEEP_ID_WARNING])
        assert result.out == f"{os.getuid()}\n"  # as before: the image's root files appear as the user's
        warnings = [line for line in result.err.splitlines() if line.startswith("Warning:")]
        assert len(warnings) == 1 and "fuse-overlayfs" in warnings[0], result.err
    # a driver asked for by name stays, with the same warning, whatever is installed
    for driver in ("vfs", "overlay"):
        result = rl("run", "--rm", "-q", "--network", "none", "--userns=keep-id", "--storage-driver", driver,
                    busybox, "stat", "-c", "%u", "/etc/passwd", warnings=[KEEP_ID_WARNING])
        assert f"the {driver} storage driver was asked for" in result.err
        assert result.out == f"{os.getuid()}\n"


def _http_body(port: int, path: str, expected: str) -> str:
    """GET ``path`` and return the body once ``expected`` has arrived, without waiting for the close
    (Debian 12's pasta can lose a FIN under load; the bytes are what this test is about)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            data = b""
            while expected.encode() not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode(errors="replace") if head.startswith(b"HTTP/1.") and b" 200 " in head else ""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("network", ["pasta", "slirp4netns"])
def test_published_port_serves_http(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any],
                                    tmp_path: Path, network: str) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello over " + network + "\n")
    port = _free_port()
    image = ref(fixture_images, "busybox")
    rl("pull", "-q", image)
    proc = subprocess.Popen(
        [*rl_command(), "run", "--rm", "--init", "--network", network, "-p", f"127.0.0.1:{port}:80",
         "-v", f"{www}:/www:ro", image, "httpd", "-f", "-p", "80", "-h", "/www"],
        env=rl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not body:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"rl run exited with {proc.returncode} before serving: {err}")
            body = _http_body(port, "/index.html", f"hello over {network}\n")
            if not body:
                time.sleep(0.2)
        assert body == f"hello over {network}\n"
        taken = rl("run", "--rm", "-q", "--network", network, "-p", f"127.0.0.1:{port}:80", image, "true", rc=125)
        assert "already in use" in taken.err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    # the port is free again once the container is gone
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_default_network_is_private_with_dns(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    out = rl("run", "--rm", "-q", ref(fixture_images, "busybox"), "sh", "-c",
             "echo $(ls /sys/class/net); grep -c nameserver /etc/resolv.conf; "
             "grep -c host.containers.internal /etc/hosts").lines
    assert "lo" in out[0].split() and len(out[0].split()) == 2
    assert out[1:] == ["1", "1"]


def test_host_network_shares_interfaces(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    out = rl("run", "--rm", "-q", "--network", "host", ref(fixture_images, "busybox"), "ls", "/sys/class/net").out
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))
