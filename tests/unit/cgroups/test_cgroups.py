"""rootless.cgroups on fake /proc and /sys trees: detection, the admins' fixes, conversions, the order
of cgroup writes, and the leaf operations (FakeHost imitates cgroupfs)."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from rootless.cgroups import Limits, cpu_percent, detect, no_cgroup, parse_size, prepare, problem, shares_to_weight
from rootless.cgroups.detect import DELEGATE_LINE, DROP_IN, cgroup_version, layout
from rootless.cgroups.host import CGROUP_ROOT, FakeHost
from rootless.cgroups.limits import blkio_to_io_weight, cpu_max, limit_files
from rootless.cgroups.manager import MONITOR, Leaf, Stats
from rootless.cgroups.systemd import enter_scope, start_scope_argv
from rootless.errors import HostError, UsageError
from rootless.runtime.syscalls import CGROUP2_SUPER_MAGIC, TMPFS_MAGIC

ME = os.getuid()
ROOT_UID = 0 if ME != 0 else 4242  # "someone else"
ALL = "cpuset cpu io memory hugetlb pids rdma misc"

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF_CGROUP = "8:pids:/\n4:memory:/x\n1:cpu:/\n0::/\n"
V1_MOUNTINFO = "\n".join(HYBRID_MOUNTINFO.splitlines()[:4]) + "\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def cgroup_dir(root: Path, path: str, controllers: str = "", subtree: str = "", procs: str = "") -> None:
    for name, text in {
        "cgroup.controllers": controllers,
        "cgroup.subtree_control": subtree,
        "cgroup.procs": procs,
        "cgroup.threads": "",
        "cgroup.events": "populated 0\nfrozen 0\n",
    }.items():
        write(root, f"{path}/{name}", text)


def v2_host(
    tmp_path: Path,
    own: str,
    delegated: Sequence[str] = (),
    controllers: str = ALL,
    systemd: bool = False,
    env: dict[str, str] | None = None,
    procs: str = "",
) -> FakeHost:
    """A unified host; ``own`` is this process's cgroup; every cgroup on the way to ``own`` exists and is
    root-owned except the ones in ``delegated`` (and everything below them)."""
    write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    write(tmp_path, "/proc/self/cgroup", f"0::{own}\n")
    cgroup_dir(tmp_path, CGROUP_ROOT, ALL, controllers)
    owners = {}
    path = CGROUP_ROOT
    mine = False
    parts = [p for p in own.split("/") if p]
    for i, part in enumerate(parts):
        path = f"{path}/{part}"
        mine = mine or path in delegated
        last = i == len(parts) - 1
        cgroup_dir(tmp_path, path, controllers, "", procs if last else "")
        if not mine:
            owners[path] = ROOT_UID
            for name in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                owners[f"{path}/{name}"] = ROOT_UID
    if systemd:
        (tmp_path / "run/systemd/system").mkdir(parents=True)
    statfs = {CGROUP_ROOT: CGROUP2_SUPER_MAGIC}
    return FakeHost(
        root=tmp_path, statfs=lambda p: statfs[p], uid=ME, pid=4000, env=env or {}, owners=owners
    )


def hybrid_host(tmp_path: Path, statfs_works: bool = True) -> FakeHost:
    write(tmp_path, "/proc/self/mountinfo", HYBRID_MOUNTINFO)
    write(tmp_path, "/proc/self/cgroup", HYBRID_SELF_CGROUP)
    for name in ("cpu", "memory", "pids"):
        (tmp_path / f"sys/fs/cgroup/{name}").mkdir(parents=True)
    cgroup_dir(tmp_path, f"{CGROUP_ROOT}/unified", "hugetlb")
    magic = {CGROUP_ROOT: TMPFS_MAGIC, f"{CGROUP_ROOT}/unified": CGROUP2_SUPER_MAGIC}

    def statfs(path: str) -> int:
        if not statfs_works:
            raise OSError(errno.ENOSYS, "no statfs")
        return magic[path]

    return FakeHost(root=tmp_path, statfs=statfs, uid=ME, env={})


def v1_host(tmp_path: Path) -> FakeHost:
    write(tmp_path, "/proc/self/mountinfo", V1_MOUNTINFO)
    write(tmp_path, "/proc/self/cgroup", "8:pids:/\n4:memory:/\n1:cpu:/\n")
    for name in ("cpu", "memory", "pids"):
        (tmp_path / f"sys/fs/cgroup/{name}").mkdir(parents=True)
    return FakeHost(root=tmp_path, statfs=lambda p: TMPFS_MAGIC, uid=ME, env={})


# ---------------------------------------------------------------- layout


def test_layout_by_statfs_and_by_mountinfo(tmp_path: Path) -> None:
    assert layout(hybrid_host(tmp_path / "a")) == ("hybrid", "/sys/fs/cgroup/unified")
    assert layout(hybrid_host(tmp_path / "b", statfs_works=False)) == ("hybrid", "/sys/fs/cgroup/unified")
    assert layout(v1_host(tmp_path / "c")) == ("v1", None)
    assert layout(v2_host(tmp_path / "d", "/")) == ("v2", CGROUP_ROOT)
    assert cgroup_version(V2_MOUNTINFO) == "v2"
    assert cgroup_version(V1_MOUNTINFO) == "v1"
    assert cgroup_version(HYBRID_MOUNTINFO) == "hybrid"


def test_hybrid_detection_lists_the_v1_controllers(tmp_path: Path) -> None:
    info = detect(hybrid_host(tmp_path))
    assert (info.version, info.delegated, info.own) == ("hybrid", None, "/")
    assert info.v1_controllers == ["cpu", "memory", "pids"]
    assert info.mount_controllers == ["hugetlb"]


# ---------------------------------------------------------------- delegation


def test_manual_delegation_climbs_to_the_delegated_root(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me/rl-monitor", delegated=["/sys/fs/cgroup/rl-me"])
    info = detect(host)
    assert info.usable
    assert info.delegated == "/sys/fs/cgroup/rl-me"
    assert info.own_dir == "/sys/fs/cgroup/rl-me/rl-monitor"
    assert "memory" in info.controllers


def test_no_delegation_when_the_cgroup_is_roots(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/user.slice/user-1001.slice/session-3.scope")
    info = detect(host)
    assert info.delegated is None
    assert info.why_not == (
        f"rl runs in {CGROUP_ROOT}/user.slice/user-1001.slice/session-3.scope, which is not delegated to {info.user}"
    )


def test_partial_ownership_is_no_delegation(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/job", delegated=["/sys/fs/cgroup/job"])
    host.owners[f"{CGROUP_ROOT}/job/cgroup.subtree_control"] = ROOT_UID
    assert detect(host).delegated is None


def test_systemd_user_manager_tree_needs_an_rl_scope(tmp_path: Path) -> None:
    base = "/user.slice/user-1001.slice/user@1001.service"
    host = v2_host(tmp_path / "a", f"{base}/app.slice/term.scope", delegated=[f"{CGROUP_ROOT}{base}"])
    info = detect(host)
    assert info.delegated is None and "systemd manages" in (info.why_not or "")
    host = v2_host(tmp_path / "b", f"{base}/app.slice/rl-7-ab.scope/rl-monitor", delegated=[f"{CGROUP_ROOT}{base}"])
    assert detect(host).delegated == f"{CGROUP_ROOT}{base}/app.slice/rl-7-ab.scope"


def test_delegated_system_service_is_used(tmp_path: Path) -> None:
    service = "/system.slice/ci-runner.service"
    host = v2_host(tmp_path, service, delegated=[CGROUP_ROOT + service])
    assert detect(host).delegated == f"{CGROUP_ROOT}/system.slice/ci-runner.service"


def test_chosen_root_must_be_owned_and_contain_rl(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/a/b", delegated=["/sys/fs/cgroup/a"])
    cgroup_dir(tmp_path, f"{CGROUP_ROOT}/other", ALL)
    assert detect(host, root="/sys/fs/cgroup/a").delegated == f"{CGROUP_ROOT}/a"
    assert detect(host, root="/a/b").delegated == f"{CGROUP_ROOT}/a/b"
    info = detect(host, root="/other")
    assert info.delegated is None and "outside the chosen cgroup" in (info.why_not or "")
    info = detect(host, root="/missing")
    assert info.why_not == f"the chosen cgroup {CGROUP_ROOT}/missing does not exist"
    host.env["RL_CGROUP_ROOT"] = "/sys/fs/cgroup/a/b"
    assert detect(host).delegated == f"{CGROUP_ROOT}/a/b"


# ---------------------------------------------------------------- the admins' fixes


BOOT_FIX = "boot the host with 'systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all' on the kernel command line"


def test_error_on_a_v1_host(tmp_path: Path) -> None:
    error = problem(detect(v1_host(tmp_path)), ["memory"], ["--memory"])
    assert isinstance(error, HostError)
    assert error.message.startswith("cannot apply --memory: this host has only cgroup v1 (cpu, memory, pids)")
    assert BOOT_FIX in (error.hint or "")
    assert "helpers/enable-cgroup-delegation.sh" in (error.hint or "")


def test_error_on_a_hybrid_host(tmp_path: Path) -> None:
    error = problem(detect(hybrid_host(tmp_path)), ["memory", "pids"], ["--memory", "--pids-limit"])
    assert isinstance(error, HostError)
    assert error.message == (
        "cannot apply --memory, --pids-limit: this host has a hybrid cgroup layout: memory, pids are on"
        " cgroup v1 hierarchies and its cgroup v2 mount /sys/fs/cgroup/unified holds none of them"
        " (it has only hugetlb)"
    )
    assert BOOT_FIX in (error.hint or "")
    assert "\n" not in error.line()
    assert "hybrid mode not supported" not in error.line()


def test_error_on_v2_without_delegation_names_both_fixes(tmp_path: Path) -> None:
    own = "/user.slice/user-1001.slice/session-3.scope"
    plain = problem(detect(v2_host(tmp_path / "a", own)), ["memory"], ["--memory"])
    assert plain is not None
    assert plain.message.startswith("cannot apply --memory: cgroup v2 has no subtree delegated to")
    user = detect(v2_host(tmp_path / "c", own)).user
    assert f"sudo helpers/enable-cgroup-delegation.sh --manual {user}" in (plain.hint or "")
    with_systemd = problem(detect(v2_host(tmp_path / "b", own, systemd=True)), ["memory"], ["--memory"])
    assert with_systemd is not None
    assert DROP_IN in (with_systemd.hint or "") and DELEGATE_LINE == "Delegate=cpu cpuset io memory pids"
    assert DELEGATE_LINE in (with_systemd.hint or "")
    assert "systemctl daemon-reload" in (with_systemd.hint or "")


def test_error_when_a_controller_is_not_delegated(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me", delegated=["/sys/fs/cgroup/rl-me"], controllers="memory pids")
    info = detect(host)
    assert problem(info, ["memory"], ["--memory"]) is None
    error = problem(info, ["cpu", "memory"], ["--cpus", "--memory"])
    assert error is not None
    assert error.message == (
        "cannot apply --cpus, --memory: controller cpu not enabled in the delegated cgroup /sys/fs/cgroup/rl-me"
        " (it has: memory pids)"
    )
    assert "enable-cgroup-delegation.sh --manual" in (error.hint or "")


def test_warn_mode_logs_and_runs_without(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = hybrid_host(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rl"):
        assert prepare("c" * 64, Limits.parse(memory="32m"), mode="warn", host=host) is None
    [record] = caplog.records
    assert record.name == "rl" and record.levelno == logging.WARNING
    assert "; running the container without limits (an admin must boot" in record.getMessage()
    assert "limits.without_cgroup" not in record.getMessage()
    with pytest.raises(HostError):
        prepare("c" * 64, Limits.parse(memory="32m"), host=host)
    with pytest.raises(UsageError):
        no_cgroup(detect(host), Limits.parse(memory="32m"), mode="maybe")


def test_no_limits_need_nothing_and_say_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="rl"):
        assert prepare("c" * 64, Limits(), host=hybrid_host(tmp_path / "a")) is None
        assert prepare("c" * 64, Limits(), host=v1_host(tmp_path / "b")) is None
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


# ---------------------------------------------------------------- conversions


@pytest.mark.parametrize(
    ("text", "size"),
    [("32m", 32 << 20), ("32M", 32 << 20), ("32mb", 32 << 20), ("1.5g", 3 << 29), ("512k", 512 << 10),
     ("100b", 100), ("4096", 4096), ("1g", 1 << 30), ("2 GiB", 2 << 30)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "m", "32x", "-5m", "1..5g", "32 mm"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_shares_and_weights() -> None:
    assert [shares_to_weight(s) for s in (2, 512, 1024, 2048, 262144)] == [1, 20, 39, 79, 10000]
    assert shares_to_weight(0) == 100
    assert shares_to_weight(1) == 1 and shares_to_weight(10**6) == 10000
    assert [blkio_to_io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]


def test_limit_files() -> None:
    assert limit_files(Limits.parse(memory="32m")) == [("memory.max", "33554432"), ("memory.swap.max", "33554432")]
    assert limit_files(Limits.parse(memory="32m", memory_swap="-1"))[1] == ("memory.swap.max", "max")
    assert limit_files(Limits.parse(memory="32m", memory_swap="32m"))[1] == ("memory.swap.max", "0")
    assert limit_files(Limits.parse(memory="32m", memory_swap="96m"))[1] == ("memory.swap.max", str(64 << 20))
    assert limit_files(Limits.parse(memory="32m"), present={"memory.max"}) == [("memory.max", "33554432")]
    assert cpu_max(Limits.parse(cpus="0.5")) == "50000 100000"
    assert cpu_max(Limits.parse(cpus="2")) == "200000 100000"
    assert cpu_max(Limits.parse(cpu_quota=25000, cpu_period=50000)) == "25000 50000"
    assert limit_files(Limits.parse(cpu_shares=1024)) == [("cpu.weight", "39")]
    assert limit_files(Limits.parse(cpu_weight=300)) == [("cpu.weight", "300")]
    assert limit_files(Limits.parse(pids_limit=10)) == [("pids.max", "10")]
    assert limit_files(Limits.parse(pids_limit=-1)) == [("pids.max", "max")]
    assert limit_files(Limits.parse(memory_reservation="16m")) == [("memory.low", str(16 << 20))]
    assert limit_files(Limits.parse(blkio_weight=500)) == [("io.weight", "default 4950")]
    assert limit_files(Limits.parse(blkio_weight=500), present={"io.bfq.weight"}) == [("io.bfq.weight", "500")]
    assert limit_files(Limits.parse(cpuset_cpus="0-1", memory="8m"))[0] == ("cpuset.cpus", "0-1")


def test_limits_parse_checks_like_docker() -> None:
    for kwargs in (
        {"memory": "4m"},
        {"memory_swap": "64m"},
        {"memory": "64m", "memory_swap": "32m"},
        {"memory": "32m", "memory_reservation": "64m"},
        {"cpus": "0"},
        {"cpus": "abc"},
        {"cpu_shares": 512, "cpu_weight": 20},
        {"cpu_weight": 0},
        {"blkio_weight": 5},
        {"cpuset_cpus": "0-x"},
        {"cpus": "1", "cpu_quota": 1000},
    ):
        with pytest.raises(UsageError):
            Limits.parse(**kwargs)  # type: ignore[arg-type]
    limits = Limits.parse(memory="32m", cpus="1.5", pids_limit=10)
    assert limits.controllers() == ["cpu", "memory", "pids"]
    assert limits.flags() == ["--memory", "--cpus", "--pids-limit"]
    assert Limits().empty() and not limits.empty()
    assert limits.merged(Limits(memory=1 << 30)).memory == 1 << 30


# ---------------------------------------------------------------- managing the subtree


def test_prepare_order_of_writes(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me", delegated=["/sys/fs/cgroup/rl-me"], controllers=ALL, procs="4000\n4001\n")
    d = f"{CGROUP_ROOT}/rl-me"
    leaf = prepare("0123456789abcdef", Limits.parse(memory="32m", pids_limit=10), host=host, parent="rl/containers")
    assert leaf is not None
    assert leaf.path == f"{d}/rl/containers/rl-0123456789ab"
    assert host.writes == [
        # no internal processes: rl and its neighbours leave D first...
        (f"{d}/{MONITOR}/cgroup.procs", "4000"),
        (f"{d}/{MONITOR}/cgroup.procs", "4001"),
        # ...then controllers are enabled top-down, one write each...
        *[(f"{d}/cgroup.subtree_control", f"+{c}") for c in ("cpu", "cpuset", "io", "memory", "pids")],
        *[(f"{d}/rl/cgroup.subtree_control", f"+{c}") for c in ("cpu", "cpuset", "io", "memory", "pids")],
        *[(f"{d}/rl/containers/cgroup.subtree_control", f"+{c}") for c in ("cpu", "cpuset", "io", "memory", "pids")],
        # ...and the limits go into the leaf, memory.max before memory.swap.max.
        (f"{leaf.path}/memory.max", str(32 << 20)),
        (f"{leaf.path}/memory.swap.max", str(32 << 20)),
        (f"{leaf.path}/pids.max", "10"),
    ]
    assert (tmp_path / d.lstrip("/") / MONITOR / "cgroup.procs").read_text().split() == ["4000", "4001"]
    # A second container reuses everything: only its own leaf is written.
    host.writes.clear()
    other = prepare("fedcba9876543210", Limits.parse(pids_limit=5), host=host, parent="rl/containers")
    assert other is not None
    assert host.writes == [(f"{other.path}/pids.max", "5")]


def test_prepare_reports_a_controller_the_kernel_refuses(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me", delegated=["/sys/fs/cgroup/rl-me"])
    host.refuse[f"{CGROUP_ROOT}/rl-me/cgroup.subtree_control"] = errno.EPERM
    with pytest.raises(HostError) as caught:
        prepare("ab" * 32, Limits.parse(memory="32m"), host=host)
    assert "could not enable memory in /sys/fs/cgroup/rl-me/cgroup.subtree_control" in caught.value.message
    assert "memory: Operation not permitted" in caught.value.message
    assert prepare("ab" * 32, Limits.parse(memory="32m"), host=host, mode="warn") is None


def test_leaf_operations(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me", delegated=["/sys/fs/cgroup/rl-me"])
    leaf = prepare("ab" * 32, Limits.parse(memory="64m"), host=host)
    assert leaf is not None
    leaf.add_pid(4000)
    assert leaf.pids() == [4000]
    leaf.freeze()
    assert leaf.frozen()
    leaf.thaw()
    assert not leaf.frozen()
    leaf.update(Limits.parse(memory="128m"))
    assert host.read(f"{leaf.path}/memory.max") == str(128 << 20)
    leaf.update(Limits.parse(memory="128m", memory_swap="-1"))
    assert host.read(f"{leaf.path}/memory.swap.max") == "max"
    assert not leaf.oom_killed()
    write(tmp_path, f"{leaf.path}/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert leaf.oom_killed()
    leaf.kill()
    assert leaf.pids() == []
    leaf.remove()
    assert not leaf.exists()
    leaf.remove()  # gone already: fine


def test_stats_and_cpu_percent(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/rl-me", delegated=["/sys/fs/cgroup/rl-me"])
    leaf = Leaf.at(f"{CGROUP_ROOT}/rl-me", host)
    write(tmp_path, f"{leaf.path}/cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    write(tmp_path, f"{leaf.path}/memory.current", "1048576\n")
    write(tmp_path, f"{leaf.path}/memory.max", "max\n")
    write(tmp_path, f"{leaf.path}/pids.current", "3\n")
    write(tmp_path, f"{leaf.path}/io.stat", "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=0\n")
    stats = leaf.stats()
    assert (stats.cpu_usec, stats.memory_current, stats.memory_max, stats.pids_current) == (1500, 1 << 20, None, 3)
    assert (stats.io_read_bytes, stats.io_write_bytes) == (105, 20)
    a = Stats(10.0, 1_000_000, None, None, None, None, 0, 0)
    b = Stats(12.0, 2_000_000, None, None, None, None, 0, 0)
    assert cpu_percent(a, b) == pytest.approx(50.0)
    assert cpu_percent(b, b) == 0.0


# ---------------------------------------------------------------- systemd scope


def test_enter_scope_asks_systemd_on_the_user_bus(tmp_path: Path) -> None:
    own = "/user.slice/user-1001.slice/user@1001.service/app.slice/term.scope"
    bus = tmp_path / "run/user/1001/bus"
    host = v2_host(tmp_path, own, env={"XDG_RUNTIME_DIR": "/run/user/1001"})
    bus.parent.mkdir(parents=True)
    bus.write_text("")
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        unit = argv[argv.index("StartTransientUnit") + 2]
        write(tmp_path, "/proc/self/cgroup", f"0::/user.slice/user-1001.slice/user@1001.service/app.slice/{unit}\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    path = enter_scope(host, run=run)
    [argv] = calls
    assert argv[:4] == ["busctl", "--user", "--quiet", "call"]
    assert path is not None and path.endswith(".scope") and "/rl-4000-" in path
    assert argv[argv.index("PIDs") : argv.index("PIDs") + 4] == ["PIDs", "au", "1", "4000"]
    assert "Delegate" in argv


def test_enter_scope_does_nothing_without_a_bus(tmp_path: Path) -> None:
    host = v2_host(tmp_path, "/user.slice/user-1001.slice/session-2.scope")

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise AssertionError("no bus, no call")

    assert enter_scope(host, run=run) is None
    assert start_scope_argv("rl-1-a.scope", 1)[-1] == "0"
