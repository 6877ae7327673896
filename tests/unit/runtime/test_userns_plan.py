"""Host checks for user namespaces, the choice of maps for the pause process, its state, and the
setns sequence of a join (with a recording fake of the system calls)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from pathlib import Path

import pytest

from rootless.errors import HostError, RuntimeSetupError
from rootless.records import replace
from rootless.runtime import idmap, pause, userns
from rootless.runtime.idmap import IdRange
from rootless.runtime.syscalls import CLONE_NEWNS, CLONE_NEWUSER, Syscalls


def reader(values: dict[str, str]) -> userns.SysctlReader:
    return values.get


# ---------------------------------------------------------------- sysctls


def test_no_problems_on_a_friendly_host() -> None:
    assert userns.userns_problems(reader({"user.max_user_namespaces": "63000"})) == []
    assert userns.userns_problems(reader({})) == []


def test_max_user_namespaces_zero() -> None:
    [p] = userns.userns_problems(reader({"user.max_user_namespaces": "0"}))
    assert p.sysctl == "user.max_user_namespaces"
    assert "sysctl -w user.max_user_namespaces=15000" in p.hint and "/etc/sysctl.d/" in p.hint


def test_debian_unprivileged_userns_clone() -> None:
    [p] = userns.userns_problems(reader({"kernel.unprivileged_userns_clone": "0"}))
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in p.hint
    assert userns.userns_problems(reader({"kernel.unprivileged_userns_clone": "1"})) == []


def test_ubuntu_apparmor_restriction() -> None:
    [p] = userns.userns_problems(reader({"kernel.apparmor_restrict_unprivileged_userns": "1"}))
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in p.hint
    assert isinstance(p.error(), HostError)


@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES, errno.ENOSPC])
def test_unshare_failure_names_the_sysctl(err: int) -> None:
    e = userns.diagnose_unshare_failure(err, reader({"user.max_user_namespaces": "0"}))
    assert isinstance(e, HostError)
    assert e.message.startswith("cannot create a user namespace: unshare(CLONE_NEWUSER) failed with ")
    assert "user.max_user_namespaces is 0" in e.message
    assert "sysctl -w user.max_user_namespaces=15000" in (e.hint or "")


def test_unshare_enospc_limit_reached() -> None:
    e = userns.diagnose_unshare_failure(errno.ENOSPC, reader({"user.max_user_namespaces": "10"}))
    assert "limit of user.max_user_namespaces=10" in e.message


def test_unshare_eperm_without_sysctl_blames_confinement() -> None:
    e = userns.diagnose_unshare_failure(errno.EPERM, reader({}))
    assert isinstance(e, HostError)
    assert "container" in (e.hint or "")


def test_unshare_einval_is_a_bug() -> None:
    e = userns.diagnose_unshare_failure(errno.EINVAL, reader({}))
    assert isinstance(e, RuntimeSetupError)


def test_read_proc_sys_real() -> None:
    assert userns.read_proc_sys("no.such.sysctl") is None
    assert userns.read_proc_sys("kernel.ostype") == "Linux"


# ---------------------------------------------------------------- plan choice


SUB = [IdRange(100000, 65536)]


def test_choose_full_when_both_ranges() -> None:
    c = pause.choose_plan(1000, 1000, "alice", SUB, SUB, force_single=False)
    assert not c.plan.single and c.warning is None and c.single_reason is None
    assert c.plan == idmap.full_mapping(1000, 1000, SUB, SUB)


@pytest.mark.parametrize(
    ("subuid", "subgid", "missing"),
    [([], [], "/etc/subuid and /etc/subgid"), ([], SUB, "/etc/subuid"), (SUB, [], "/etc/subgid")],
)
def test_choose_single_when_ranges_missing(subuid: list[IdRange], subgid: list[IdRange], missing: str) -> None:
    c = pause.choose_plan(1000, 1001, "alice", subuid, subgid, force_single=False)
    assert c.plan == idmap.single_mapping(1000, 1001)
    assert c.single_reason == f"no subordinate ids for alice in {missing}"
    assert c.warning is not None
    assert c.warning.startswith(f"no subordinate ids for alice in {missing}: running with a single-ID mapping")
    assert "helpers/grant-subids.sh alice" in c.warning and "rl system migrate" in c.warning


def test_choose_single_when_forced() -> None:
    c = pause.choose_plan(1000, 1000, "alice", SUB, SUB, force_single=True)
    assert c.plan.single
    assert c.single_reason is not None and pause.FORCE_SINGLE_ENV in c.single_reason


# ---------------------------------------------------------------- state


def test_parse_stat_with_odd_comm() -> None:
    fields = ["S"] + [str(i) for i in range(4, 60)]
    text = "123 (we) ird (name)) " + " ".join(fields)
    assert pause.parse_stat(text) == ("S", 22)


def test_proc_stat_of_self() -> None:
    st = pause.proc_stat(os.getpid())
    assert st is not None and st[0] in "RS" and st[1] > 0
    assert pause.proc_stat(2**22 + 12345) is None


def handle(tmp_path: Path, single: bool = False) -> pause.PauseHandle:
    plan = idmap.single_mapping(1000, 1000) if single else idmap.full_mapping(1000, 1000, SUB, SUB)
    return pause.PauseHandle(
        runroot=tmp_path, pid=42, start_time=777, userns=4026531837, mntns=4026531841, plan=plan,
        single_reason="why" if single else None, host_uid=1000, host_gid=1000, subuid=tuple(SUB),
        subgid=tuple(SUB),
    )


def test_handle_json_roundtrip(tmp_path: Path) -> None:
    h = handle(tmp_path)
    assert pause.PauseHandle.from_json(tmp_path, h.to_json()) == h
    info = h.info()
    assert info.uid_count == 65537 and info.host_uid_of(1234) == 101233 and not info.single_id
    assert info.host_gid_of(0) == 1000 and info.gid_count == 65537


def test_load_ignores_garbage_and_dead(tmp_path: Path) -> None:
    (tmp_path / pause.STATE_FILE).write_text("{nope")
    assert pause.status(tmp_path) is None
    (tmp_path / pause.STATE_FILE).write_text('{"version": 99}')
    assert pause.status(tmp_path) is None
    h = handle(tmp_path)
    (tmp_path / pause.STATE_FILE).write_text(json.dumps(h.to_json()))
    assert pause._load(tmp_path) == h
    assert pause.status(tmp_path) is None  # pid 42 is not our pause process


def test_recorded_own_namespace_is_not_live(tmp_path: Path) -> None:
    # a recycled pid of an ordinary process in our own namespace must not count as the pause process
    st = pause.proc_stat(os.getpid())
    assert st is not None
    h = handle(tmp_path)
    h = replace(h, pid=os.getpid(), start_time=st[1], userns=userns.ns_inode("self", "user"))
    assert not pause.is_live(h)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_warn_once_per_pause_process(tmp_path: Path) -> None:
    collect = Collect()
    logger = logging.getLogger("rl")
    logger.addHandler(collect)
    try:
        h = handle(tmp_path, single=True)
        pause._warn_once(h, "careful")
        pause._warn_once(h, "careful")
        assert collect.messages == ["careful"]
        other = replace(h, pid=43)
        pause._warn_once(other, "careful")
        assert collect.messages == ["careful", "careful"]
        pause._warn_once(other, None)
        assert len(collect.messages) == 2
    finally:
        logger.removeHandler(collect)


def test_migrate_without_runroot(tmp_path: Path) -> None:
    assert pause.migrate(tmp_path / "none") is None


def test_migrate_forgets_dead_state(tmp_path: Path) -> None:
    (tmp_path / pause.STATE_FILE).write_text(json.dumps(handle(tmp_path).to_json()))
    (tmp_path / pause.WARNED_FILE).write_text("42 777\n")
    assert pause.migrate(tmp_path) is None
    assert not (tmp_path / pause.STATE_FILE).exists() and not (tmp_path / pause.WARNED_FILE).exists()


# ---------------------------------------------------------------- join sequence


class RecordingSyscalls(Syscalls):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def setns(self, fd: int, nstype: int = 0) -> None:
        self.calls.append(("setns", nstype))


def test_join_sets_user_then_mount_and_restores_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(userns, "thread_count", lambda: 1)
    fake = RecordingSyscalls()
    me = os.getpid()
    u, m = userns.ns_inode(me, "user"), userns.ns_inode(me, "mnt")
    if os.getuid() == 0:
        userns.join_namespaces(me, u, m, lambda: True, sys=fake)
    else:
        with pytest.raises(RuntimeSetupError, match=f"uid is {os.getuid()}, not 0"):
            userns.join_namespaces(me, u, m, lambda: True, sys=fake)
    assert fake.calls == [("setns", CLONE_NEWUSER), ("setns", CLONE_NEWNS)]
    assert os.getcwd() == str(tmp_path)


def test_join_refuses_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "thread_count", lambda: 3)
    fake = RecordingSyscalls()
    with pytest.raises(RuntimeSetupError, match="rl has 3 threads"):
        userns.join_namespaces(os.getpid(), 1, 2, lambda: True, sys=fake)
    assert fake.calls == []


def test_join_detects_gone_or_recycled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "thread_count", lambda: 1)
    fake = RecordingSyscalls()
    with pytest.raises(userns.NamespaceGone):
        userns.join_namespaces(2**22 + 12345, 1, 2, lambda: True, sys=fake)
    me = os.getpid()
    with pytest.raises(userns.NamespaceGone):  # inode differs from the recorded one
        userns.join_namespaces(me, 1, 2, lambda: True, sys=fake)
    u, m = userns.ns_inode(me, "user"), userns.ns_inode(me, "mnt")
    with pytest.raises(userns.NamespaceGone):  # start time changed after opening
        userns.join_namespaces(me, u, m, lambda: False, sys=fake)
    assert fake.calls == []


# ---------------------------------------------------------------- messages from the starting pause process


def test_child_unshare_failure_names_the_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "read_proc_sys", reader({"kernel.unprivileged_userns_clone": "0"}))
    with pytest.raises(HostError) as e:
        pause._raise_child_error({"error": "unshare", "errno": errno.EPERM, "message": "unshare(0x10000000): x"})
    assert "kernel.unprivileged_userns_clone is 0" in e.value.message
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in (e.value.hint or "")


def test_child_step_failure_under_apparmor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "read_proc_sys", reader({"kernel.apparmor_restrict_unprivileged_userns": "1"}))
    with pytest.raises(HostError) as e:
        pause._raise_child_error({"error": "maps", "errno": errno.EPERM, "message": "write refused"})
    assert e.value.message.startswith("cannot start the pause process: maps failed: Operation not permitted: ")
    assert "apparmor_restrict_unprivileged_userns" in e.value.message


def test_child_step_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "read_proc_sys", reader({}))
    with pytest.raises(RuntimeSetupError) as e:
        pause._raise_child_error(
            {"error": "mount namespace", "errno": errno.EPERM, "message": "unshare(0x20000): Operation not permitted"}
        )
    assert e.value.message == (
        "cannot start the pause process: mount namespace failed: unshare(0x20000): Operation not permitted"
    )


def test_stop_without_pidfd_open(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # an ordinary child process stands in for the pause process
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        st = pause.proc_stat(pid)
        assert st is not None
        h = replace(handle(tmp_path), pid=pid, start_time=st[1])

        def no_pidfd(pid: int) -> int:
            raise OSError(errno.ENOSYS, "pidfd_open")

        monkeypatch.setattr(os, "pidfd_open", no_pidfd)
        assert pause.stop(h, timeout=2.0)
        assert not pause.stop(h)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
