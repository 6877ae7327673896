"""flock-based locks (exclusive, shared, timeouts that name the holder, no stale locks after
kill -9) and atomic JSON files."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import StorageError
from rootless.state.atomic import atomic_write_bytes, atomic_write_json, read_json
from rootless.state.locks import FileLock, exclusive, recorded_holder, shared


def _hold(path: str, is_shared: bool, ready: Any, release: Any) -> None:
    with FileLock(path, shared=is_shared, timeout=5):
        ready.set()
        release.wait(30)


def _start_holder(path: Path, is_shared: bool = False) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(path), is_shared, ready, release))
    proc.start()
    assert ready.wait(10)
    return proc, release


def test_exclusive_timeout_names_lock_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    proc, release = _start_holder(path)
    try:
        assert recorded_holder(path) == proc.pid
        started = time.monotonic()
        with pytest.raises(StorageError) as ei, exclusive(path, timeout=0.3, what="image store"):
            pass
        assert time.monotonic() - started >= 0.3
        line = ei.value.line()
        assert "\n" not in line
        assert str(path) in line and f"held by pid {proc.pid}" in line and "image store" in line
        assert not FileLock(path, timeout=0).try_acquire()
    finally:
        release.set()
        proc.join(10)
    with exclusive(path, timeout=1):
        assert recorded_holder(path) == os.getpid()
    assert recorded_holder(path) is None


def test_shared_locks_coexist_and_block_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "l"
    proc, release = _start_holder(path, is_shared=True)
    try:
        with shared(path, timeout=1):
            pass
        with pytest.raises(StorageError, match="held by another process"), exclusive(path, timeout=0.1):
            pass
    finally:
        release.set()
        proc.join(10)
    with exclusive(path, timeout=1):
        pass


def test_lock_waits_until_released(tmp_path: Path) -> None:
    path = tmp_path / "l"
    proc, release = _start_holder(path)
    t0 = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    timer = ctx.Process(target=lambda: (time.sleep(0.3), release.set()))
    timer.start()
    with exclusive(path, timeout=10):
        assert time.monotonic() - t0 >= 0.25
    timer.join(10)
    proc.join(10)


def test_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "l"
    proc, _release = _start_holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    with exclusive(path, timeout=1):
        pass
    assert recorded_holder(path) is None


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "l"
    a = FileLock(path, timeout=0)
    b = FileLock(path, timeout=0)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open lock file"), exclusive(tmp_path / "nope" / "l"):
        pass


# ---- atomic files --------------------------------------------------------------------------------------


def test_atomic_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    atomic_write_bytes(path, b"[1]", mode=0o600)
    assert read_json(path) == [1]
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(tmp_path) == ["x.json"]  # no temporaries left


def test_read_json_errors(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json", default={}) == {}
    with pytest.raises(StorageError, match="does not exist"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"half": ')
    with pytest.raises(StorageError, match="is corrupt") as ei:
        read_json(bad, what="image record")
    assert "\n" not in ei.value.line()
    assert ei.value.line().startswith(f"image record {bad} is corrupt")


def test_atomic_write_failure_leaves_old_content(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(path, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": Boom()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["x.json"]
