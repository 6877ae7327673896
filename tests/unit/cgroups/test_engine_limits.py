"""rootless.engine.limits, the glue between `rl run`/`stats`/`pause`/`update` and rootless.cgroups, on fake
cgroup trees (FakeHost): no real cgroup is touched."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rootless.cgroups import Limits, Stats
from rootless.cgroups.host import CGROUP_ROOT, FakeHost
from rootless.engine import limits as glue
from rootless.engine.env import EngineEnv
from rootless.engine.runopts import RunOptions
from rootless.errors import ConflictError, HostError, UsageError
from rootless.state.containers import ContainerRecord, ContainerStore, new_id, now_rfc3339
from tests.unit.cgroups.test_cgroups import hybrid_host, v2_host

DELEGATED = f"{CGROUP_ROOT}/rl-me"


def engine_env(tmp_path: Path, **kw: object) -> EngineEnv:
    return EngineEnv(storage=tmp_path / "storage", runroot=tmp_path / "run", **kw)  # type: ignore[arg-type]


def delegated_host(tmp_path: Path) -> FakeHost:
    return v2_host(tmp_path / "host", "/rl-me", delegated=[DELEGATED], controllers="cpuset cpu io memory pids")


def new_record(store: ContainerStore, name: str = "c1") -> ContainerRecord:
    record = ContainerRecord(id=new_id(), name=name, image="busybox", image_id="sha256:" + "0" * 64,
                             created=now_rfc3339())
    return store.create(record)


def test_flags_win_over_the_settings_defaults(tmp_path: Path) -> None:
    env = engine_env(tmp_path, limits={"memory": "64m", "pids": 100, "cpus": 0.5})
    assert glue.requested(env, RunOptions(image="x")) == Limits(memory=64 << 20, pids_limit=100, cpus=0.5)
    opts = RunOptions(image="x", memory="32m", pids_limit=5, cpu_quota=20000)
    assert glue.requested(env, opts) == Limits(memory=32 << 20, pids_limit=5, cpu_quota=20000)
    assert glue.requested(engine_env(tmp_path, limits={"memory": "", "pids": 0, "cpus": 0.0}),
                          RunOptions(image="x")).empty()
    with pytest.raises(UsageError, match="--memory"):
        glue.requested(env, RunOptions(image="x", memory="lots"))


def test_plan_on_a_hybrid_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(glue, "HOST", hybrid_host(tmp_path / "h"))
    with caplog.at_level(logging.DEBUG, logger="rl"):
        plan = glue.plan_limits(engine_env(tmp_path), RunOptions(image="x"))
    assert plan.cgroup is False and caplog.records == []  # no limits: no cgroup, no word
    with pytest.raises(HostError) as error:
        glue.plan_limits(engine_env(tmp_path), RunOptions(image="x", memory="32m"))
    assert error.value.message.startswith("cannot apply --memory: this host has a hybrid cgroup layout")
    assert "helpers/enable-cgroup-delegation.sh" in (error.value.hint or "")
    with caplog.at_level(logging.WARNING, logger="rl"):
        plan = glue.plan_limits(engine_env(tmp_path, without_cgroup="warn"), RunOptions(image="x", memory="32m"))
    assert plan.cgroup is False
    [warning] = caplog.records
    assert "running the container without limits" in warning.getMessage()


def test_run_path_on_a_delegated_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = delegated_host(tmp_path)
    monkeypatch.setattr(glue, "HOST", host)
    env = engine_env(tmp_path)
    store = ContainerStore(env.storage)
    record = new_record(store)
    plan = glue.plan_limits(env, RunOptions(image="x", memory="32m", cpus="0.5", pids_limit=10))
    assert plan.cgroup is True
    leaf = glue.attach(plan, store, record)
    assert leaf is not None and leaf.path == f"{DELEGATED}/rl-{record.id[:12]}"
    saved = store.get("c1")
    assert saved.extra["cgroup"] == leaf.path
    assert saved.host_config["Memory"] == 32 << 20 and saved.host_config["NanoCpus"] == 500_000_000
    assert saved.host_config["PidsLimit"] == 10
    assert glue.limits_of(saved) == Limits(memory=32 << 20, cpus=0.5, pids_limit=10)
    assert host.read(f"{leaf.path}/cpu.max") == "50000 100000"
    fd = glue.open_procs(saved)
    assert fd is not None
    glue.close_fd(fd)
    assert glue.exit_state(saved) == {"OOMKilled": False, "Paused": False}
    host.path(f"{leaf.path}/memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert glue.exit_state(saved)["OOMKilled"] is True
    glue.release(saved)
    assert not host.exists(leaf.path)
    assert glue.leaf_of(saved) is None
    glue.release(saved)  # twice is fine


def test_no_limits_on_a_delegated_host_still_get_a_leaf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glue, "HOST", delegated_host(tmp_path))
    env = engine_env(tmp_path)
    store = ContainerStore(env.storage)
    record = new_record(store)
    plan = glue.plan_limits(env, RunOptions(image="x"))
    assert plan.cgroup is True and plan.limits.empty()
    assert glue.attach(plan, store, record) is not None
    assert store.get("c1").host_config["Memory"] == 0


def test_update_merges_and_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = delegated_host(tmp_path)
    monkeypatch.setattr(glue, "HOST", host)
    env = engine_env(tmp_path)
    store = ContainerStore(env.storage)
    record = new_record(store)
    leaf = glue.attach(glue.plan_limits(env, RunOptions(image="x", memory="32m", cpu_quota=20000)), store, record)
    assert leaf is not None
    with store.update(record.id) as rec:
        rec.state.update(Status="running", Running=True, Pid=1)
    monkeypatch.setattr(ContainerStore, "refresh", lambda self, r: r)
    glue.update(env, "c1", Limits.parse(memory="64m", cpus="1"))
    assert host.read(f"{leaf.path}/memory.max") == str(64 << 20)
    assert host.read(f"{leaf.path}/cpu.max") == "100000 100000"  # --cpus replaced --cpu-quota
    assert glue.limits_of(store.get("c1")) == Limits(memory=64 << 20, cpus=1.0)
    glue.update(env, "c1", Limits.parse(memory_swap="-1", update=True))
    assert host.read(f"{leaf.path}/memory.swap.max") == "max"
    assert host.read(f"{leaf.path}/memory.max") == str(64 << 20)
    with pytest.raises(UsageError):
        glue.update(env, "c1", Limits())
    glue.update(env, "c1", Limits.parse(memory="128m", memory_swap="256m"))
    with pytest.raises(UsageError, match="memory\\+swap"):
        glue.update(env, "c1", Limits.parse(memory="512m"))


def test_pause_and_unpause_record_the_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = delegated_host(tmp_path)
    monkeypatch.setattr(glue, "HOST", host)
    env = engine_env(tmp_path)
    store = ContainerStore(env.storage)
    record = new_record(store)
    leaf = glue.attach(glue.plan_limits(env, RunOptions(image="x")), store, record)
    assert leaf is not None
    with pytest.raises(ConflictError, match="not running"):
        glue.pause(env, "c1")
    with store.update(record.id) as rec:
        rec.state.update(Status="running", Running=True, Pid=1)
    monkeypatch.setattr(ContainerStore, "refresh", lambda self, r: r)
    glue.pause(env, "c1")
    assert host.read(f"{leaf.path}/cgroup.freeze") == "1"
    assert store.get("c1").state["Status"] == "paused" and store.get("c1").state["Paused"] is True
    with pytest.raises(ConflictError, match="already paused"):
        glue.pause(env, "c1")
    glue.unpause(env, "c1")
    assert host.read(f"{leaf.path}/cgroup.freeze") == "0"
    assert store.get("c1").state["Status"] == "running" and store.get("c1").state["Paused"] is False
    with pytest.raises(ConflictError, match="not paused"):
        glue.unpause(env, "c1")


def test_commands_without_a_leaf_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glue, "HOST", hybrid_host(tmp_path / "h"))
    env = engine_env(tmp_path)
    store = ContainerStore(env.storage)
    record = new_record(store)
    with store.update(record.id) as rec:
        rec.state.update(Status="running", Running=True, Pid=1)
    monkeypatch.setattr(ContainerStore, "refresh", lambda self, r: r)
    with pytest.raises(HostError) as error:
        glue.pause(env, "c1")
    assert error.value.message.startswith("cannot pause container c1: it has no cgroup of its own")
    assert "enable-cgroup-delegation.sh" in (error.value.hint or "")
    why = glue.why_no_stats([store.get("c1")])
    assert why is not None and why.startswith("no cgroup of their own for c1 (the host has a hybrid")


def stats(t: float, cpu: int, mem: int | None = 8 << 20, mem_max: int | None = 32 << 20) -> Stats:
    return Stats(time=t, cpu_usec=cpu, memory_current=mem, memory_max=mem_max, pids_current=3, pids_max=10,
                 io_read_bytes=1_048_576, io_write_bytes=0)


def test_stats_rows_as_docker_prints_them(tmp_path: Path) -> None:
    record = ContainerRecord(id="ab" * 32, name="web", image="x", image_id="y", created=now_rfc3339())
    row = glue.stats_row(record, stats(10.0, 1_000_000), stats(11.0, 1_500_000), total_memory=1 << 30)
    assert row == {
        "ID": "abababababab",
        "Container": "web",
        "Name": "web",
        "CPUPerc": "50.00%",
        "MemUsage": "8MiB / 32MiB",
        "MemPerc": "25.00%",
        "NetIO": "-- / --",
        "BlockIO": "1.05MB / 0B",
        "PIDs": "3",
    }
    unlimited = glue.stats_row(record, None, stats(11.0, 5, mem=1536 << 10, mem_max=None), total_memory=2 << 30)
    assert unlimited["MemUsage"] == "1.5MiB / 2GiB" and unlimited["CPUPerc"] == "0.00%"
    assert unlimited["MemPerc"] == "0.07%"
    none = glue.stats_row(record, None, None, total_memory=1 << 30)
    assert none["CPUPerc"] == "--" and none["PIDs"] == "--" and none["MemUsage"] == "-- / --"


def test_kill_without_a_leaf_signals_pid_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(glue.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    record = ContainerRecord(id="ab" * 32, name="web", image="x", image_id="y", created=now_rfc3339())
    assert glue.kill(record) is False
    record.state.update(Running=True, Pid=4242)
    assert glue.kill(record, 15) is True
    assert sent == [(4242, 15)]
