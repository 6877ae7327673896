"""Detached containers and their lifecycle, as a user types the commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.system.conftest import RunRl

pytestmark = pytest.mark.system


def ref(fixture_images: dict[str, Any], name: str = "busybox") -> str:
    return str(fixture_images[name].reference)


def _inspect(rl: RunRl, cid: str) -> dict[str, Any]:
    docs = json.loads(rl("inspect", cid).out)
    assert len(docs) == 1
    return dict(docs[0])


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def test_detached_outlives_rl_and_logs(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("run", "-d", "-q", "--name", "web", ref(fixture_images), "sh", "-c",
             "echo first; printf no-newline; sleep 300").out.strip()
    assert len(cid) == 64
    doc = _inspect(rl, cid)
    assert doc["State"]["Status"] == "running" and doc["State"]["Running"] is True
    assert _alive(doc["State"]["Pid"])
    assert doc["Name"] == "/web"
    assert rl("ps", "-q").out.split() == [cid[:12]]
    assert rl("ps", "--format", "{{.Names}} {{.State}}").out == "web running\n"
    _until(lambda: "no-newline" in rl("logs", "web").out)
    assert rl("logs", "web").out == "first\nno-newline"  # as docker: no newline added
    assert rl("container", "exists", "web", rc=0)
    rl("container", "exists", "nope", rc=1)
    # a unique prefix works; an unknown name says so, exit 125 as podman
    assert rl("inspect", "-f", "{{.Name}}", cid[:5]).out == "/web\n"
    err = rl("stop", "nope", rc=125).err
    assert "no such container: nope" in err


def test_logs_follow_ends_with_container(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("run", "-d", "-q", ref(fixture_images), "sh", "-c",
             "for i in 1 2 3; do echo line$i; sleep 0.3; done").out.strip()
    started = time.monotonic()
    out = rl("logs", "-f", cid, timeout=30).out
    assert out == "line1\nline2\nline3\n"
    assert time.monotonic() - started < 10
    assert rl("wait", cid).out == "0\n"
    assert rl("logs", "--tail", "1", cid).out == "line3\n"


def test_exec_shares_pid_namespace_files_env(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("run", "-d", "-q", "-e", "FOO=bar", ref(fixture_images), "sh", "-c",
             "echo data > /tmp/file; exec sleep 300").out.strip()
    _until(lambda: rl("exec", cid, "cat", "/tmp/file", rc=None).out == "data\n")
    assert rl("exec", cid, "sh", "-c", "echo $FOO").out == "bar\n"
    assert rl("exec", "-e", "X=1", "-w", "/tmp", cid, "sh", "-c", "echo $X $(pwd)").out == "1 /tmp\n"
    ps = rl("exec", cid, "ps", "-o", "pid,comm").out
    assert "    1 sleep" in ps or " 1 sleep" in ps
    assert rl("exec", "-u", "nobody", cid, "id", "-un").out == "nobody\n"
    rl("exec", cid, "sh", "-c", "exit 7", rc=7)
    rl("exec", cid, "nope", rc=127)
    top = rl("top", cid).out
    assert "sleep 300" in top and top.startswith("UID")


def test_exec_into_stopped_container(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("create", "-q", ref(fixture_images), "true").out.strip()
    err = rl("exec", cid, "true", rc=125).err
    assert f"container {cid} is not running" in err
    assert err.count("\n") == 1


def test_stop_signal_and_timeout(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    # the trap answers the stop signal: a clean exit within the timeout
    cid = rl("run", "-d", "-q", "--stop-signal", "USR1", image, "sh", "-c",
             "trap 'echo got-usr1; exit 42' USR1; echo ready; while true; do sleep 0.1; done").out.strip()
    _until(lambda: "ready" in rl("logs", cid).out)
    started = time.monotonic()
    rl("stop", "-t", "5", cid)
    assert time.monotonic() - started < 4
    doc = _inspect(rl, cid)
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 42
    assert "got-usr1" in rl("logs", cid).out
    # PID 1 without a handler ignores SIGTERM: SIGKILL after -t
    cid2 = rl("run", "-d", "-q", image, "sleep", "300").out.strip()
    started = time.monotonic()
    rl("stop", "-t", "1", cid2)
    assert 0.9 < time.monotonic() - started < 8
    assert _inspect(rl, cid2)["State"]["ExitCode"] == 137
    assert rl("wait", cid2).out == "137\n"
    # kill: invalid signal, not running
    assert "invalid signal" in rl("kill", "-s", "NOPE", cid2, rc=125).err
    assert "is not running" in rl("kill", cid2, rc=125).err
    # start again, restart
    rl("start", cid2)
    assert _inspect(rl, cid2)["State"]["Running"] is True
    rl("restart", "-t", "0", cid2)
    assert _inspect(rl, cid2)["State"]["Running"] is True
    rl("kill", cid2)
    _until(lambda: _inspect(rl, cid2)["State"]["Status"] == "exited")


def test_rm_force_leaves_nothing(rl: RunRl, fixture_images: dict[str, Any], rl_env: dict[str, str]) -> None:
    cid = rl("run", "-d", "-q", ref(fixture_images), "sleep", "300").out.strip()
    doc = _inspect(rl, cid)
    pid = doc["State"]["Pid"]
    merged = doc["GraphDriver"]["Data"]["MergedDir"]
    assert "is running" in rl("rm", cid, rc=125).err
    rl("rm", "-f", cid)
    assert not _alive(pid)
    with open("/proc/self/mountinfo") as f:
        assert merged not in f.read()
    assert rl("ps", "-aq").out == ""
    assert not any(cid in p for p in _processes())
    storage = os.path.join(rl_env["XDG_DATA_HOME"], "rl", "storage", "containers")
    assert not os.path.exists(os.path.join(storage, cid))
    err = rl("rm", cid, rc=1).err
    assert "no such container" in err


def _processes() -> list[str]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return out


def test_run_detached_exit_codes(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    cid = rl("run", "-d", "-q", image, "sh", "-c", "exit 3").out.strip()
    assert rl("wait", cid).out == "3\n"
    err = rl("run", "-d", "-q", image, "nope", rc=127).err
    assert 'exec: "nope": executable file not found in $PATH' in err
    # the failed container stays, as in docker
    assert len(rl("ps", "-aq").out.split()) == 2


def test_create_start_attach(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("create", "-q", "--name", "c1", ref(fixture_images), "sh", "-c", "echo out; echo err >&2; exit 5").out
    cid = cid.strip()
    assert _inspect(rl, "c1")["State"]["Status"] == "created"
    assert "Created" in rl("ps", "-a").out
    result = rl("start", "-a", "c1", rc=5)
    assert result.out == "out\n" and result.err == "err\n"
    assert _inspect(rl, cid)["State"]["ExitCode"] == 5
    out = rl("create", "-q", "-i", "--name", "cat", ref(fixture_images), "cat").out.strip()
    assert rl("start", "-a", "-i", out, input="hello stdin\n").out == "hello stdin\n"
    rl("rename", "c1", "c2")
    assert rl("ps", "-a", "--filter", "name=c2", "--format", "{{.Names}}").out == "c2\n"
    assert "Deleted Containers" in rl("container", "prune", "-f").out
    assert rl("ps", "-aq").out == ""


def test_parallel_detached(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    rl("pull", "-q", image)

    def one(_: int) -> str:
        return rl("run", "-d", "-q", image, "sleep", "300", timeout=180).out.strip()

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(one, range(20)))
    assert len(set(ids)) == 20
    names = rl("ps", "--format", "{{.Names}}").out.split()
    assert len(names) == 20 and len(set(names)) == 20


def test_killed_monitor(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    cid = rl("run", "-d", "-q", ref(fixture_images), "sleep", "300").out.strip()
    pid = _inspect(rl, cid)["State"]["Pid"]
    with open(f"/proc/{pid}/stat") as f:
        monitor = int(f.read().split(") ", 1)[1].split()[1])
    with open(f"/proc/{monitor}/comm") as f:
        assert f.read().strip() == "rl-monitor"
    os.kill(monitor, signal.SIGKILL)
    _until(lambda: not _alive(monitor))
    assert rl("ps", "-q").out == ""
    assert "Exited" in rl("ps", "-a").out
    assert not _alive(pid)
    rl("rm", cid)
    assert rl("ps", "-aq").out == ""


def test_errors(rl: RunRl) -> None:
    assert "no such container: x" in rl("logs", "x", rc=125).err
    assert "no such object: x" in rl("inspect", "x", rc=1).err
    err = rl("ps", "--bogus", rc=125).err
    assert "no such option" in err.lower()
    subprocess.run(["true"], check=True)


def test_log_drivers_and_rotation(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    # k8s-file: podman's format on disk, read back by rl logs
    cid = rl("run", "-d", "-q", "--log-driver", "k8s-file", image, "sh", "-c", "echo out; echo err >&2").out.strip()
    assert rl("wait", cid).out == "0\n"
    doc = _inspect(rl, cid)
    assert doc["HostConfig"]["LogConfig"] == {"Type": "k8s-file", "Config": {}}
    with open(doc["LogPath"]) as f:
        first = f.readline().split(" ")
    assert first[1] in ("stdout", "stderr") and first[2] == "F"
    res = rl("logs", cid)
    assert res.out == "out\n" and res.err == "err\n"
    # none: nothing to read, docker's error
    cid = rl("run", "-d", "-q", "--log-driver", "none", image, "echo", "hidden").out.strip()
    assert rl("wait", cid).out == "0\n"
    assert "does not support reading" in rl("logs", cid, rc=125).err
    assert not os.path.exists(_inspect(rl, cid)["LogPath"])
    # json-file with rotation: max-size/max-file
    cid = rl("run", "-d", "-q", "--log-opt", "max-size=2k", "--log-opt", "max-file=2", image, "sh", "-c",
             "i=0; while [ $i -lt 300 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done").out.strip()
    assert rl("wait", cid).out == "0\n"
    doc = _inspect(rl, cid)
    assert doc["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "2k", "max-file": "2"}}
    path = doc["LogPath"]
    assert os.path.getsize(path) <= 2048 + 200
    assert os.path.exists(path + ".1") and not os.path.exists(path + ".2")
    lines = rl("logs", cid).lines
    assert lines[-1] == "line-299-xxxxxxxxxxxxxxxxxxxx" and len(lines) < 300
    # errors: one line with a hint, exit 125
    assert "unknown log driver 'syslog'" in rl("run", "--log-driver", "syslog", image, "true", rc=125).err
    assert "max-size" in rl("run", "--log-opt", "max-size=big", image, "true", rc=125).err
    assert "unknown log opt" in rl("create", "--log-opt", "tag=x", image, "true", rc=125).err
