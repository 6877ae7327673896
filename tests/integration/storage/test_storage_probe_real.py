"""The real probes on this host: from outside any namespace (as ``rl info`` runs) and as ns-root."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rootless.storage import probe as pr
from rootless.storage import select

from .conftest import UserNamespace


def test_overlay_probe_from_the_host(tmp_path: Path) -> None:
    start = time.monotonic()
    problem = pr.overlay_problem(tmp_path)
    took = time.monotonic() - start
    assert problem is None, problem
    assert os.listdir(tmp_path) == [], "the probe cleans up after itself"
    assert took < 2


def test_overlay_probe_as_namespace_root(userns: UserNamespace, tmp_path: Path) -> None:
    def body(path: Path) -> str | None:
        return pr.overlay_problem(path)

    assert userns.run(body, tmp_path) is None
    assert os.listdir(tmp_path) == []


def test_probe_then_cache(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = pr.probe(store)
    second = pr.probe(store)
    assert not first.cached and second.cached
    assert (first.overlay, first.upper_fs) == (second.overlay, second.upper_fs)
    assert select.choose("", first) in select.DRIVERS
    assert sorted(os.listdir(store)) == [pr.CACHE_FILE]


def test_overlay_probe_failure_is_reported(tmp_path: Path) -> None:
    # a store on /proc cannot be written: the reason says so instead of raising
    problem = pr.overlay_problem(Path("/proc/self"))
    assert problem is not None and "cannot write" in problem
