"""`rl run --memory/--pids-limit/--cpus`, `rl stats`, `rl pause/unpause`, `rl update` on a real delegated
cgroup v2 subtree (in the VM of ci/vm/run-lane.sh). No registry here: the image is a busybox rootfs
tarball made from the host's /bin/busybox and brought in with `rl import`.

Until `rl run -d` exists, a running container is a foreground `rl run` started in the background;
the other commands find it by name, from other rl processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rootless.cgroups import Leaf, cpu_percent
from rootless.engine import limits as glue
from rootless.state.containers import ContainerRecord, ContainerStore
from tests.fixtures.images import busybox_layer
from tests.support import isolated_rl_env
from tests.system.conftest import rl_command

IMAGE = "rltest/busybox:vm"
BUSY = ["sh", "-c", "echo ready; while :; do :; done"]


class Rl:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._storage: Path | None = None

    def __call__(self, *args: str, rc: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*rl_command(), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if rc is not None:
            assert proc.returncode == rc, f"rl {' '.join(args)}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*rl_command(), *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    @property
    def storage(self) -> Path:
        if self._storage is None:
            self._storage = Path(json.loads(self("info", "--format", "json").stdout)["store"]["root"])
        return self._storage

    def record(self, name: str) -> ContainerRecord:
        return ContainerStore(self.storage).get(name)


@pytest.fixture(scope="module")
def rl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rl]:
    base = tmp_path_factory.mktemp("rl")
    env = {**isolated_rl_env(base, (), default_user="rltest"), "RL_CGROUP_ROOT": os.environ["RL_CGROUPVM_ROOT"]}
    tarball = base / "busybox-rootfs.tar"
    tarball.write_bytes(busybox_layer().tar)
    runner = Rl(env)
    runner("import", str(tarball), IMAGE)
    yield runner
    subprocess.run([*rl_command(), "system", "reset", "--force"], env=env, capture_output=True, timeout=120,
                   stdin=subprocess.DEVNULL)


def run_args(*flags: str) -> list[str]:
    return ["run", "-q", "--network", "none", "--pull", "never", *flags]


def test_info_shows_the_delegated_subtree(rl: Rl, delegated_root: str) -> None:
    data = json.loads(rl("info", "--format", "json").stdout)["cgroups"]
    assert data["version"] == "v2"
    assert data["delegated"] == delegated_root
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= set(data["controllers"])
    table = rl("info").stdout
    assert f"cgroup subtree         {delegated_root}" in table or delegated_root in table


def test_memory_limit_oom_kill_is_reported(rl: Rl) -> None:
    # dd's 64 MiB buffer, filled from /dev/zero, does not fit in 32m (the VM has no swap)
    result = rl(*run_args("--name", "oom", "--memory", "32m"), IMAGE,
                "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1", rc=None)
    assert result.returncode == 137, result.stderr
    record = rl.record("oom")
    assert record.state["OOMKilled"] is True
    assert record.state["ExitCode"] == 137
    assert record.host_config["Memory"] == 32 << 20
    # the leaf went with the container's end
    assert record.extra.get("cgroup")
    assert not Path(record.extra["cgroup"]).exists()


def test_no_oom_without_pressure(rl: Rl) -> None:
    rl(*run_args("--name", "fits", "--memory", "128m"), IMAGE, "dd", "if=/dev/zero", "of=/dev/null", "bs=16M",
       "count=1")
    assert rl.record("fits").state["OOMKilled"] is False


def test_pids_limit_stops_forks_and_the_container_survives(rl: Rl) -> None:
    # The inner shell forks sleepers until fork fails (and exits); PID 1 then finishes normally.
    script = 'sh -c "while :; do sleep 60 & done" 2>/dev/null; echo forks-failed; exit 0'
    result = rl(*run_args("--rm", "--pids-limit", "10"), IMAGE, "sh", "-c", script)
    assert result.stdout.strip() == "forks-failed"


@pytest.fixture(scope="module")
def busy(rl: Rl) -> Iterator[tuple[subprocess.Popen[str], Leaf]]:
    proc = rl.popen(*run_args("--name", "busy", "--cpus", "0.5", "--pids-limit", "50"), IMAGE, *BUSY)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
    record = rl.record("busy")
    assert record.running
    leaf = Leaf.at(record.extra["cgroup"])
    assert leaf.exists()
    yield proc, leaf
    with contextlib.suppress(Exception):
        glue.kill(rl.record("busy"))
    with contextlib.suppress(Exception):
        proc.kill()
    proc.wait(timeout=60)


def read(leaf: Leaf, name: str) -> str:
    return Path(leaf.path, name).read_text().strip()


def test_cpus_half_a_core(busy: tuple[subprocess.Popen[str], Leaf]) -> None:
    _, leaf = busy
    assert read(leaf, "cpu.max") == "50000 100000"
    time.sleep(0.3)
    before = leaf.stats()
    time.sleep(2.0)
    percent = cpu_percent(before, leaf.stats())
    assert 20.0 <= percent <= 65.0, percent


def test_stats_reports_nonzero_figures(rl: Rl, busy: Any) -> None:
    fmt = "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|{{.BlockIO}}|{{.PIDs}}"
    out = rl("stats", "--no-stream", "--format", fmt).stdout.strip().splitlines()
    [line] = [x for x in out if x.startswith("busy|")]
    _name, cpu, mem, mem_perc, block, pids = line.split("|")
    assert float(cpu.rstrip("%")) > 5.0, line
    usage, limit = mem.split(" / ")
    assert usage[0].isdigit() and not usage.startswith("0B"), line
    assert limit != "--", line
    assert float(mem_perc.rstrip("%")) > 0, line
    assert " / " in block
    assert int(pids) >= 1, line
    table = rl("stats", "--no-stream", "busy").stdout.splitlines()
    assert table[0].split() == ["CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT", "MEM", "%",
                                "NET", "I/O", "BLOCK", "I/O", "PIDS"]
    assert "busy" in table[1]
    rows = [json.loads(x) for x in rl("stats", "--no-stream", "--format", "json", "busy").stdout.splitlines()]
    assert rows[0]["Name"] == "busy"


def test_pause_freezes_and_unpause_resumes(rl: Rl, busy: tuple[subprocess.Popen[str], Leaf]) -> None:
    _, leaf = busy
    assert rl("pause", "busy").stdout.strip() == "busy"
    record = rl.record("busy")
    assert record.state["Status"] == "paused" and record.state["Paused"] is True
    assert "frozen 1" in read(leaf, "cgroup.events")
    first = leaf.stats().cpu_usec
    time.sleep(0.5)
    assert leaf.stats().cpu_usec == first
    rl("pause", "busy", rc=125)  # already paused
    assert rl("unpause", "busy").stdout.strip() == "busy"
    record = rl.record("busy")
    assert record.state["Status"] == "running" and record.state["Paused"] is False
    time.sleep(0.5)
    assert leaf.stats().cpu_usec > first


def test_update_memory_live(rl: Rl, busy: tuple[subprocess.Popen[str], Leaf]) -> None:
    _, leaf = busy
    assert read(leaf, "memory.max") == "max"
    assert rl("update", "--memory", "64m", "busy").stdout.strip() == "busy"
    assert read(leaf, "memory.max") == str(64 << 20)
    assert read(leaf, "cpu.max") == "50000 100000"  # the other limits stay
    rl("update", "--pids-limit", "40", "--cpus", "1", "busy")
    assert read(leaf, "pids.max") == "40"
    assert read(leaf, "cpu.max") == "100000 100000"
    record = rl.record("busy")
    assert record.host_config["Memory"] == 64 << 20
    assert record.host_config["PidsLimit"] == 40


def test_kill_through_cgroup_kill_removes_the_cgroup(rl: Rl, busy: tuple[subprocess.Popen[str], Leaf]) -> None:
    proc, leaf = busy
    assert Path(leaf.path, "cgroup.kill").exists()
    assert glue.kill(rl.record("busy"))  # what `rl kill` / `rl rm -f` do
    assert proc.wait(timeout=60) == 137
    record = rl.record("busy")
    assert record.state["Status"] == "exited" and record.state["OOMKilled"] is False
    assert not leaf.exists()
    rl("pause", "busy", rc=125)  # not running


def test_without_limits_a_leaf_all_the_same(rl: Rl) -> None:
    out = rl(*run_args("--rm"), IMAGE, "cat", "/proc/self/cgroup").stdout
    assert out.strip() == "0::/"  # its own cgroup namespace, rooted at its leaf


def test_detached_container_rm_f_removes_the_cgroup(rl: Rl) -> None:
    rl(*run_args("-d", "--name", "detached", "--memory", "64m"), IMAGE, "sleep", "300")
    record = rl.record("detached")
    leaf = Leaf.at(record.extra["cgroup"])
    assert leaf.exists()
    assert read(leaf, "memory.max") == str(64 << 20)
    rl("rm", "-f", "detached")
    assert not leaf.exists()
    assert not ContainerStore(rl.storage).exists("detached")
