"""Running test bodies inside a real user namespace, as the unprivileged user who runs pytest.

``userns.run(body, *args)`` forks; the child unshares a user + mount namespace and the parent maps
it: with the user's subordinate ids through newuidmap/newgidmap (``0 UID 1 1 START COUNT``) when the
user has ranges, else the child writes the single mapping ``0 UID 1`` itself. The child then makes
its mounts private, becomes a child subreaper (so daemons such as fuse-overlayfs are reaped here),
runs the body as root of the namespace and sends back its return value, a skip, or the failure's
traceback. Mounts die with the child's mount namespace whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pwd
import select
import shutil
import signal
import subprocess
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rootless.runtime import syscalls as sc
from rootless.runtime.idmap import SUBGID, SUBUID, read_subids
from rootless.storage.driver import DRIVER_NAMES, remove_tree
from rootless.storage.probe import probe
from tests.support import map_single_id

RUN_TIMEOUT = 300.0


def _subid_ranges() -> tuple[tuple[int, int], tuple[int, int]] | None:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
    uids = read_subids(SUBUID, name, uid)
    gids = read_subids(SUBGID, name, os.getgid())
    if not uids or not gids or not shutil.which("newuidmap") or not shutil.which("newgidmap"):
        return None
    return (uids[0].start, uids[0].count), (gids[0].start, gids[0].count)


def _read_all(fd: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError(f"the namespace child sent nothing for {timeout:.0f}s")
        data = os.read(fd, 1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _child(body: Callable[..., Any], args: tuple[Any, ...], ready_w: int, go_r: int, result_w: int) -> None:
    outcome: tuple[str, Any]
    uid, gid = os.getuid(), os.getgid()
    try:
        sc.SYSCALLS.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
        os.write(ready_w, b"u")
        mode = os.read(go_r, 1)
        if mode == b"s":  # no subordinate ids: map ourselves only
            map_single_id(uid, gid)
        elif mode != b"f":
            raise RuntimeError("the parent could not map the namespace")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        sc.SYSCALLS.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.SYSCALLS.set_child_subreaper()
        outcome = ("ok", body(*args))
    except pytest.skip.Exception as exc:
        outcome = ("skip", str(exc.msg))
    except BaseException:
        outcome = ("error", traceback.format_exc())
    try:
        data = pickle.dumps(outcome)
    except Exception:
        data = pickle.dumps(("ok", None)) if outcome[0] == "ok" else pickle.dumps(("error", str(outcome[1])))
    with contextlib.suppress(OSError):
        os.write(result_w, data)
    # Reap whatever daemons the body left (fuse-overlayfs after unmount).
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


@dataclass
class UserNamespace:
    """Runs functions in fresh user + mount namespaces as their root."""

    subids: tuple[tuple[int, int], tuple[int, int]] | None

    @property
    def full_mapping(self) -> bool:
        return self.subids is not None

    def require_subids(self) -> None:
        if self.subids is None:
            pytest.skip("the test user has no subordinate id ranges (or no newuidmap): only uid 0 is mapped")

    def run(self, body: Callable[..., Any], *args: Any, timeout: float = RUN_TIMEOUT) -> Any:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        result_r, result_w = os.pipe()
        sc.SYSCALLS.lib  # noqa: B018 - load libc before forking
        pid = os.fork()
        if pid == 0:
            try:
                os.close(ready_r)
                os.close(go_w)
                os.close(result_r)
                _child(body, args, ready_w, go_r, result_w)
            finally:
                os._exit(0)
        for fd in (ready_w, go_r, result_w):
            os.close(fd)
        try:
            ready, _, _ = select.select([ready_r], [], [], 30)
            unshared = bool(ready) and os.read(ready_r, 1) == b"u"
            mode = self._map(pid) if unshared else b"x"
            os.write(go_w, mode)
            os.close(go_w)
            go_w = -1
            data = _read_all(result_r, timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            for fd in (ready_r, result_r, go_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            os.waitpid(pid, 0)
        if not data:
            pytest.fail("the namespace child died without a result", pytrace=False)
        kind, value = pickle.loads(data)
        if kind == "skip":
            pytest.skip(value)
        if kind == "error":
            pytest.fail(f"in the user namespace:\n{value}", pytrace=False)
        return value

    def _map(self, pid: int) -> bytes:
        if self.subids is None:
            return b"s"
        (ustart, ucount), (gstart, gcount) = self.subids
        for tool, start, count, own in (
            ("newuidmap", ustart, ucount, os.getuid()),
            ("newgidmap", gstart, gcount, os.getgid()),
        ):
            cmd = [tool, str(pid), "0", str(own), "1", "1", str(start), str(count)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return b"f"


@pytest.fixture(scope="session")
def userns() -> UserNamespace:
    ns = UserNamespace(_subid_ranges())
    try:
        ns.run(lambda: None)
    except BaseException as exc:  # pytest.fail raises Failed, a BaseException
        if ns.subids is None:
            pytest.skip(f"cannot create a user namespace here: {exc}")
        ns = UserNamespace(None)  # newuidmap is broken: single mapping only
        try:
            ns.run(lambda: None)
        except BaseException as exc2:
            pytest.skip(f"cannot create a user namespace here: {exc2}")
    return ns


@pytest.fixture
def workdir(tmp_path: Path, userns: UserNamespace) -> Iterator[Path]:
    """A scratch dir; removed from inside a namespace, where files of subordinate ids can be deleted."""
    path = tmp_path / "ws"
    path.mkdir()
    yield path
    with contextlib.suppress(BaseException):
        userns.run(remove_tree, path)


@pytest.fixture(params=DRIVER_NAMES)
def driver_name(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage driver in turn; skipped with the probe's reason where it cannot work."""
    name: str = request.param
    problem = probe(tmp_path / "probe-store").problem(name)
    if problem is not None:
        pytest.skip(f"{name}: {problem}")
    return name
