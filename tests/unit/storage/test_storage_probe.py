"""Probe caching and driver choice, with injected probe results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rootless.errors import ConfigError, StorageError
from rootless.runtime import syscalls as sc
from rootless.storage import probe as pr
from rootless.storage import select


class FakeProber(pr.Prober):
    def __init__(
        self,
        overlay: str | None = None,
        fuse: str | None = None,
        magic: int = sc.EXT4_SUPER_MAGIC,
        kernel: str = "6.18.0",
    ) -> None:
        super().__init__()
        self.answers = {"overlay": overlay, "fuse": fuse}
        self.magic = magic
        self.release = kernel
        self.calls: list[str] = []

    def kernel(self) -> str:
        return self.release

    def fs_type(self, path: Path) -> int:
        return self.magic

    def overlay(self, store: Path) -> str | None:
        self.calls.append("overlay")
        return self.answers["overlay"]

    def fuse(self) -> str | None:
        self.calls.append("fuse")
        return self.answers["fuse"]


def test_results_are_cached_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    prober = FakeProber(overlay="no overlay here")
    first = pr.probe(store, prober)
    assert first.overlay == "no overlay here" and not first.cached
    assert (store / pr.CACHE_FILE).exists()
    second = pr.probe(store, prober)
    assert second.cached and second.overlay == "no overlay here"
    assert prober.calls.count("overlay") == 1
    assert prober.calls.count("fuse") == 2, "the fuse check is cheap and never cached"


def test_new_kernel_or_filesystem_probes_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    pr.probe(store, FakeProber(overlay="old kernel", kernel="5.4.0"))
    newer = FakeProber(kernel="6.18.0")
    assert pr.probe(store, newer).overlay is None
    assert newer.calls.count("overlay") == 1
    other_fs = FakeProber(overlay="x", magic=sc.XFS_SUPER_MAGIC)
    assert pr.probe(store, other_fs).overlay == "x"
    assert other_fs.calls.count("overlay") == 1


def test_refresh_and_corrupt_cache_probe_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    prober = FakeProber()
    pr.probe(store, prober)
    pr.probe(store, prober, refresh=True)
    (store / pr.CACHE_FILE).write_text("{not json")
    pr.probe(store, prober)
    assert prober.calls.count("overlay") == 3
    assert json.loads((store / pr.CACHE_FILE).read_text())["results"] == {"overlay": None, "upper_fs": None}
    pr.invalidate(store)
    assert not (store / pr.CACHE_FILE).exists()


@pytest.mark.parametrize("magic", [sc.NFS_SUPER_MAGIC, sc.FUSE_SUPER_MAGIC, sc.CIFS_MAGIC_NUMBER])
def test_network_filesystems_cannot_hold_upper_dirs(tmp_path: Path, magic: int) -> None:
    prober = FakeProber(magic=magic)
    results = pr.probe(tmp_path / "store", prober)
    assert results.upper_fs and "cannot hold overlay upper dirs" in results.upper_fs
    assert "overlay" not in prober.calls, "no mount attempt on a filesystem that cannot work"
    assert results.problem("overlay") == results.upper_fs
    assert results.problem("fuse-overlayfs") == results.upper_fs
    assert results.problem("vfs") is None
    assert select.choose("", results) == "vfs"


def test_choose_takes_the_first_usable() -> None:
    ok = pr.ProbeResults()
    assert select.choose("", ok) == "overlay"
    no_overlay = pr.ProbeResults(overlay="kernel says no")
    assert select.choose("", no_overlay) == "fuse-overlayfs"
    neither = pr.ProbeResults(overlay="kernel says no", fuse_overlayfs="fuse-overlayfs is not installed")
    assert select.choose("", neither) == "vfs"
    assert select.candidates(results=neither) == [
        ("overlay", "kernel says no"),
        ("fuse-overlayfs", "fuse-overlayfs is not installed"),
        ("vfs", None),
    ]


def test_forced_driver() -> None:
    broken = pr.ProbeResults(fuse_overlayfs="fuse-overlayfs is not installed")
    assert select.choose("vfs", broken) == "vfs"
    assert select.choose("overlay", broken) == "overlay"
    with pytest.raises(StorageError) as info:
        select.choose("fuse-overlayfs", broken)
    assert "cannot be used: fuse-overlayfs is not installed" in info.value.message
    assert info.value.hint and "apt install fuse-overlayfs" in info.value.hint
    with pytest.raises(ConfigError, match="unknown storage driver"):
        select.choose("btrfs", broken)


def test_real_cheap_probes(tmp_path: Path) -> None:
    problem = pr.xattr_problem(tmp_path)
    assert problem is None or "user xattrs" in problem
    assert list(tmp_path.iterdir()) == []
    assert pr.xattr_problem(tmp_path / "missing") is not None
    problem = pr.fuse_problem()
    assert problem is None or "fuse" in problem
