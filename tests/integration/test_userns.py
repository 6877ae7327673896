"""The pause process with real namespaces: create, reuse, race, recreate, join, share mounts,
single-ID mode, migrate. Each test has its own runroot; every pause process it started is killed
at the end. Joining happens in forked children, so the test process itself never joins."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pwd
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rootless.runtime import idmap, pause, userns
from rootless.runtime.syscalls import SYSCALLS, TMPFS_MAGIC
from tests.support import collect_child, wait_until

pytestmark = pytest.mark.integration

UID, GID = os.getuid(), os.getgid()
USER = pwd.getpwuid(UID).pw_name
SUBUID = idmap.read_subids(idmap.SUBUID, USER, UID)
SUBGID = idmap.read_subids(idmap.SUBGID, USER, UID)

if userns.userns_problems():
    pytest.skip(f"user namespaces are disabled: {userns.userns_problems()[0].message}", allow_module_level=True)

needs_ranges = pytest.mark.skipif(
    UID == 0 or not SUBUID or not SUBGID,
    reason=f"needs an unprivileged user with /etc/subuid and /etc/subgid ranges (CI: rltest), not {USER}",
)


# ---------------------------------------------------------------- helpers


def pauses_of(runroot: Path) -> list[int]:
    """Live rl-pause processes serving ``runroot`` (their environment names it)."""
    marker = f"{pause.RUNROOT_ENV}={runroot}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[0] != pause.PROCESS_NAME.encode():
                continue
            if marker not in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        st = pause.proc_stat(int(name))
        if st is not None and st[0] not in "ZXx":
            found.append(int(name))
    return found


def dead(pid: int) -> bool:
    st = pause.proc_stat(pid)
    return st is None or st[0] in "ZXx"


def wait_dead(pid: int, seconds: float = 5.0) -> None:
    wait_until(lambda: dead(pid), seconds, f"pid {pid} still runs")


def start_child(fn: Callable[[], Any], barrier: int | None = None) -> tuple[int, int]:
    """Fork; the child (optionally after reading one byte from ``barrier``) runs fn and sends back
    its JSON result or its exception. Returns (pid, fd to read the result from)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            if barrier is not None:
                os.read(barrier, 1)
            try:
                result: dict[str, Any] = {"ok": fn()}
            except BaseException as e:
                result = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def finish_child(pid: int, r: int) -> Any:
    result = json.loads(collect_child(pid, r))
    if "error" in result:
        pytest.fail(f"in child: {result['error']}")
    return result["ok"]


def in_child(fn: Callable[[], Any]) -> Any:
    return finish_child(*start_child(fn))


class Collect:
    """Records the warnings of the "rl" logger (works even when the CLI turned propagation off)."""

    def __init__(self) -> None:
        self.records: list[str] = []
        outer = self

        class H(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno >= logging.WARNING:
                    outer.records.append(record.getMessage())

        self.handler = H()
        self.logger = logging.getLogger("rl")

    def __enter__(self) -> Collect:
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def runroot(tmp_path: Path) -> Iterator[Path]:
    rr = tmp_path / "run"
    yield rr
    # kill every pause process of this runroot, whatever the test did
    with_state = pause._load(rr)
    pids = set(pauses_of(rr))
    if with_state is not None and pause.is_live(with_state):
        pids.add(with_state.pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_dead(pid)


# ---------------------------------------------------------------- full mapping


@needs_ranges
def test_ensure_creates_pause_with_full_mapping(runroot: Path) -> None:
    t0 = time.perf_counter()
    h = pause.ensure(runroot, force_single=False)
    first = time.perf_counter() - t0
    assert h.created and not h.single_id
    expected = idmap.full_mapping(UID, GID, SUBUID, SUBGID)
    assert idmap.read_map(h.pid, "uid_map") == expected.uid_map
    assert idmap.read_map(h.pid, "gid_map") == expected.gid_map
    assert Path(f"/proc/{h.pid}/setgroups").read_text().strip() == "allow"
    assert userns.ns_inode(h.pid, "user") != userns.ns_inode("self", "user")
    assert userns.ns_inode(h.pid, "mnt") != userns.ns_inode("self", "mnt")
    assert pauses_of(runroot) == [h.pid]
    # it holds nothing of ours: only /dev/null on 0..2, cwd /, only its runroot in the environment
    fds = {int(n): os.readlink(f"/proc/{h.pid}/fd/{n}") for n in os.listdir(f"/proc/{h.pid}/fd")}
    assert fds == {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}
    assert os.readlink(f"/proc/{h.pid}/cwd") == "/"
    assert Path(f"/proc/{h.pid}/environ").read_bytes() == f"{pause.RUNROOT_ENV}={runroot}\0".encode()
    status = Path(f"/proc/{h.pid}/status").read_text()
    ignored = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigIgn:")), 16)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        assert ignored & (1 << (sig - 1))
    assert not ignored & (1 << (signal.SIGTERM - 1))
    rss = pause.rss_kib(h.pid)
    assert rss is not None and rss < 4096, f"pause process uses {rss} KiB"
    t0 = time.perf_counter()
    again = pause.ensure(runroot)
    reuse = time.perf_counter() - t0
    assert again.pid == h.pid and not again.created
    print(f"ensure: first {first * 1000:.1f} ms, reuse {reuse * 1000:.2f} ms; pause RSS {rss} KiB")


@needs_ranges
def test_concurrent_ensure_creates_one(runroot: Path) -> None:
    r, w = os.pipe()
    children = [
        start_child(lambda: [(h := pause.ensure(runroot, force_single=False)).pid, h.created], barrier=r)
        for _ in range(8)
    ]
    os.write(w, b"x" * 8)
    results = [finish_child(pid, fd) for pid, fd in children]
    os.close(r)
    os.close(w)
    pids = {pid for pid, _ in results}
    assert len(pids) == 1, results
    assert sum(created for _, created in results) == 1
    assert pauses_of(runroot) == list(pids)


@needs_ranges
def test_recreated_after_kill(runroot: Path) -> None:
    h = pause.ensure(runroot, force_single=False)
    os.kill(h.pid, signal.SIGKILL)
    wait_dead(h.pid)
    assert pause.status(runroot) is None
    h2 = pause.ensure(runroot)
    assert h2.created and h2.pid != h.pid
    assert pauses_of(runroot) == [h2.pid]


@needs_ranges
def test_join_becomes_root_and_maps_ownership(runroot: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    h = pause.ensure(runroot, force_single=False)
    work = tmp_path / "work"
    work.mkdir()
    target = work / "file"
    target.write_text("x")
    monkeypatch.chdir(work)

    def child() -> dict[str, Any]:
        t0 = time.perf_counter()
        info = pause.join(h)
        took = time.perf_counter() - t0
        assert pause.join(h) is info  # second call: no-op
        assert pause.enter(runroot) is info
        os.chown("file", 1234, 1234)  # relative: the working directory survived setns
        cap_eff = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("CapEff"))
        return {
            "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "ms": took * 1000,
            "capeff": cap_eff.split()[1], "uidmap": Path("/proc/self/uid_map").read_text(),
        }

    got = in_child(child)
    assert got["uid"] == 0 and got["gid"] == 0
    assert got["cwd"] == str(work)
    assert int(got["capeff"], 16) >> 21 & 1  # CAP_SYS_ADMIN in the namespace
    assert idmap.parse_map(got["uidmap"]) == h.plan.uid_map
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (h.info().host_uid_of(1234), h.info().host_gid_of(1234))
    assert st.st_uid == SUBUID[0].start + 1233
    assert pause.current() is None  # the test process itself never joined
    print(f"join: {got['ms']:.2f} ms")


@needs_ranges
def test_mounts_are_shared_between_joiners(runroot: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def first() -> bool:
        pause.enter(runroot, force_single=False)
        SYSCALLS.mount("tmpfs", str(mnt), "tmpfs", 0, "size=1m,mode=0755")
        (mnt / "hello").write_text("from the first command")
        return True

    def second() -> list[Any]:
        pause.enter(runroot)
        return [(mnt / "hello").read_text(), SYSCALLS.statfs_type(str(mnt)) == TMPFS_MAGIC]

    assert in_child(first)
    assert in_child(second) == ["from the first command", True]
    assert not (mnt / "hello").exists()  # not on the host


@needs_ranges
def test_enter_retries_when_pause_died_before_join(runroot: Path) -> None:
    def child() -> list[int]:
        h = pause.ensure(runroot, force_single=False)
        os.kill(h.pid, signal.SIGKILL)
        wait_dead(h.pid)
        try:
            pause.join(h)
        except userns.NamespaceGone:
            pass
        else:
            raise AssertionError("join of a dead pause process succeeded")
        info = pause.enter(runroot)
        assert os.getuid() == 0
        return [h.pid, info.pause_pid]

    old, new = in_child(child)
    assert old != new
    assert pauses_of(runroot) == [new]


@needs_ranges
def test_migrate_stops_and_forgets(runroot: Path) -> None:
    h = pause.ensure(runroot, force_single=False)
    assert pause.migrate(runroot) == h.pid
    wait_dead(h.pid, 1.0)
    assert not (runroot / pause.STATE_FILE).exists()
    assert pause.status(runroot) is None
    assert pause.migrate(runroot) is None
    assert pauses_of(runroot) == []


# ---------------------------------------------------------------- single-ID mode


def test_forced_single_id_warns_once(runroot: Path, tmp_path: Path) -> None:
    with Collect() as log:
        h = pause.ensure(runroot, force_single=True)
        again = pause.ensure(runroot, force_single=True)
    assert again.pid == h.pid and h.single_id
    assert len(log.records) == 1, log.records
    assert "single-ID" in log.records[0] and pause.FORCE_SINGLE_ENV in log.records[0]
    assert idmap.read_map(h.pid, "uid_map") == idmap.single_mapping(UID, GID).uid_map
    assert idmap.read_map(h.pid, "gid_map") == idmap.single_mapping(UID, GID).gid_map
    assert Path(f"/proc/{h.pid}/setgroups").read_text().strip() == "deny"
    target = tmp_path / "file"
    target.write_text("x")

    def child() -> list[Any]:
        info = pause.join(h)
        os.chown(target, 0, 0)
        try:
            os.chown(target, 1234, 1234)
        except OSError as e:
            unmapped = e.errno
        else:
            unmapped = 0
        return [os.getuid(), info.single_id, info.uid_count, unmapped]

    assert in_child(child) == [0, True, 1, errno.EINVAL]
    assert os.stat(target).st_uid == UID


def test_single_id_from_environment(runroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pause.FORCE_SINGLE_ENV, "1")
    with Collect():
        h = pause.ensure(runroot)
    assert h.single_id and h.info().single_reason is not None
    assert pause.migrate(runroot) == h.pid
