"""Container records: unique names, prefix lookup, and the truth about 'running' after a crash."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from rootless.errors import ConflictError, NotFoundError, UsageError
from rootless.state.containers import ContainerRecord, ContainerStore, new_id, now_rfc3339, process_start_time


def record(name: str = "") -> ContainerRecord:
    return ContainerRecord(
        id=new_id(), name=name, image="busybox", image_id="sha256:" + "0" * 64, created=now_rfc3339()
    )


def test_create_get_by_name_id_and_prefix(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    r = store.create(record("web"))
    assert store.get("web").id == r.id
    assert store.get(r.id).name == "web"
    assert store.get(r.id[:12]).name == "web"
    with pytest.raises(NotFoundError, match="no such container: nope"):
        store.get("nope")


def test_generated_names_are_unique(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    names = {store.create(record()).name for _ in range(30)}
    assert len(names) == 30


def test_duplicate_and_invalid_names(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    store.create(record("db"))
    with pytest.raises(ConflictError, match='"db" is already in use'):
        store.create(record("db"))
    with pytest.raises(UsageError, match="invalid container name"):
        store.create(record("-bad"))


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    a, b = record("a"), record("b")
    a.id = "ab" + a.id[2:]
    b.id = "ab" + b.id[2:]
    store.create(a)
    store.create(b)
    with pytest.raises(UsageError, match="ambiguous"):
        store.get("ab")


def _create_named(root: str, name: str) -> str:
    try:
        ContainerStore(Path(root)).create(record(name))
        return "ok"
    except ConflictError:
        return "conflict"


def test_concurrent_creates_keep_names_unique(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.starmap(_create_named, [(str(tmp_path), "same")] * 8)
    assert results.count("ok") == 1
    assert len(ContainerStore(tmp_path).list()) == 1


def test_running_record_with_dead_process_reads_as_exited(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    r = store.create(record("ghost"))
    with store.update(r.id) as rec:
        rec.state.update(Status="running", Running=True, Pid=os.getpid())
        rec.extra["pid_start_time"] = process_start_time(os.getpid())
    assert store.get("ghost").running
    with store.update(r.id) as rec:
        rec.extra["pid_start_time"] = -1  # as after a reboot: the pid is someone else's now
    ghost = store.get("ghost")
    assert not ghost.running
    assert ghost.state["Status"] == "exited"


def test_rename_and_remove(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    r = store.create(record("old"))
    store.rename("old", "new")
    assert store.get("new").id == r.id
    (store.path(r.id) / "ro").mkdir(mode=0o555)
    store.remove(r.id)
    assert not store.exists("new")
    assert list((tmp_path / "containers").iterdir()) == []
