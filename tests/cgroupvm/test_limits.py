"""rootless.cgroups against a real delegated cgroup v2 subtree (in the VM of ci/vm/run-lane.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rootless.cgroups import Limits, cpu_percent, describe, detect
from rootless.cgroups.manager import MONITOR

PY = sys.executable
ALLOC_64M = "chunks = [b'x' * (1 << 20) for _ in range(64)]; print('allocated', flush=True)"
BUSY = "print('ready', flush=True)\nwhile True: pass"


def ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the child's "ready" line (Python starts slowly over 9p under TCG)."""
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"


def read(leaf_path: str, name: str) -> str:
    return Path(leaf_path, name).read_text().strip()


def test_detection_finds_the_delegated_subtree(delegated_root: str) -> None:
    info = detect(root=delegated_root)
    assert info.version == "v2"
    assert info.delegated == delegated_root
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= set(info.controllers)
    # Auto-detection (no root given) climbs from our own cgroup to the same subtree.
    assert detect().delegated == delegated_root
    assert describe()["delegated"] == delegated_root


def test_prepare_moves_processes_out_and_enables_controllers(delegated_root: str, make_leaf) -> None:
    leaf = make_leaf(Limits.parse(memory="64m"))
    assert read(delegated_root, "cgroup.procs") == ""  # the no-internal-processes rule
    assert str(os.getpid()) in read(f"{delegated_root}/{MONITOR}", "cgroup.procs").split()
    assert {"cpu", "memory", "pids"} <= set(read(delegated_root, "cgroup.subtree_control").split())
    assert read(leaf.path, "memory.max") == str(64 << 20)


def test_memory_limit_oom_kills(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(memory="32m"))
    assert read(leaf.path, "memory.max") == str(32 << 20)
    proc = spawn(leaf, [PY, "-c", ALLOC_64M])
    assert proc.wait(timeout=120) == -9
    assert leaf.oom_killed()
    assert leaf.memory_events()["oom_kill"] >= 1


def test_update_memory_live(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(memory="32m"))
    leaf.update(Limits.parse(memory="256m"))
    assert read(leaf.path, "memory.max") == str(256 << 20)
    assert read(leaf.path, "memory.swap.max") == str(256 << 20)
    proc = spawn(leaf, [PY, "-c", ALLOC_64M])
    assert proc.wait(timeout=120) == 0
    assert not leaf.oom_killed()


def test_pids_limit_stops_forks(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(pids_limit=10))
    assert read(leaf.path, "pids.max") == "10"
    script = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(30):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.close(1); os.close(2); time.sleep(60); os._exit(0)\n"
        "        n += 1\n"
        "    except BlockingIOError:\n"
        "        print('forked', n, 'then EAGAIN', flush=True); break\n"
        "else:\n"
        "    print('forked', n, flush=True)\n"
    )
    proc = spawn(leaf, [PY, "-c", script], stdout=-1, text=True)
    out, _ = proc.communicate(timeout=120)
    assert out.strip() == "forked 9 then EAGAIN"
    assert leaf.stats().pids_current == 10 - 1  # the script exited, its 9 children sleep
    assert int(dict(line.split() for line in read(leaf.path, "pids.events").splitlines())["max"]) >= 1


def test_cpu_max_holds_a_busy_loop_near_half_a_cpu(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(cpus="0.5"))
    assert read(leaf.path, "cpu.max") == "50000 100000"
    ready(spawn(leaf, [PY, "-c", BUSY], stdout=subprocess.PIPE, text=True))
    time.sleep(0.3)
    before = leaf.stats()
    time.sleep(2.0)
    after = leaf.stats()
    percent = cpu_percent(before, after)
    assert 20.0 <= percent <= 65.0, percent
    assert dict(line.split() for line in read(leaf.path, "cpu.stat").splitlines())["nr_throttled"] != "0"


def test_freeze_stops_and_thaw_resumes(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(pids_limit=100))
    ready(spawn(leaf, [PY, "-c", BUSY], stdout=subprocess.PIPE, text=True))
    time.sleep(0.2)
    leaf.freeze()
    assert leaf.frozen()
    assert "frozen 1" in read(leaf.path, "cgroup.events")
    first = leaf.stats().cpu_usec
    time.sleep(0.5)
    assert leaf.stats().cpu_usec == first  # no progress while frozen
    leaf.thaw()
    assert not leaf.frozen()
    time.sleep(0.5)
    assert leaf.stats().cpu_usec > first


def test_stats_are_nonzero(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(memory="128m", pids_limit=50))
    script = "x = b'y' * (8 << 20)\nprint('ready', flush=True)\nwhile True: pass"
    ready(spawn(leaf, [PY, "-c", script], stdout=subprocess.PIPE, text=True))
    time.sleep(0.2)
    stats = leaf.stats()
    assert stats.cpu_usec > 0
    assert stats.memory_current is not None and stats.memory_current >= 8 << 20
    assert stats.memory_max == 128 << 20
    assert stats.pids_current == 1
    assert stats.pids_max == 50
    assert stats.io_read_bytes >= 0 and stats.io_write_bytes >= 0


def test_kill_empties_the_leaf_and_remove_deletes_it(make_leaf, spawn) -> None:
    leaf = make_leaf(Limits.parse(pids_limit=50))
    spawn(leaf, ["/bin/sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 30
    while len(leaf.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(leaf.pids()) == 4
    assert Path(leaf.path, "cgroup.kill").exists()
    leaf.kill()
    assert leaf.pids() == []
    assert not leaf.populated()
    leaf.remove()
    assert not leaf.exists()


def test_kill_without_cgroup_kill_signals_every_pid(make_leaf, spawn, monkeypatch) -> None:
    leaf = make_leaf(Limits())
    spawn(leaf, ["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 30
    while len(leaf.pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    real_exists = leaf.host.exists
    monkeypatch.setattr(leaf.host, "exists", lambda p: False if p.endswith("/cgroup.kill") else real_exists(p))
    leaf.kill()
    assert leaf.pids() == []


def test_weights_cpuset_and_io(make_leaf) -> None:
    leaf = make_leaf(Limits.parse(cpu_shares=1024, cpuset_cpus="0", blkio_weight=500, memory_reservation="16m"))
    assert read(leaf.path, "cpu.weight") == "39"
    assert read(leaf.path, "cpuset.cpus") == "0"
    assert read(leaf.path, "memory.low") == str(16 << 20)
    if Path(leaf.path, "io.bfq.weight").exists():
        assert read(leaf.path, "io.bfq.weight").split()[-1] == "500"
    else:
        assert read(leaf.path, "io.weight") == "default 4950"


def test_no_limits_still_gives_a_leaf(make_leaf) -> None:
    leaf = make_leaf(Limits())
    assert leaf.exists()
    assert read(leaf.path, "memory.max") == "max"
