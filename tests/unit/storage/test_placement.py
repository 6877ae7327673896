"""Where layers and container dirs go when storage.root is on NFS, Lustre, GPFS or FUSE."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rootless.errors import StorageError
from rootless.storage import placement
from rootless.storage.probe import ProbeResults

NFS = ProbeResults(upper_fs="the store /home/u/store is on NFS, which cannot hold overlay upper dirs")


def test_local_filesystem_keeps_everything_in_root(tmp_path: Path) -> None:
    placed = placement.plan(tmp_path, ProbeResults(), "")
    assert (placed.layers, placed.containers, placed.local) == (tmp_path / "layers", tmp_path / "containers", None)
    assert placed.notice() is None


def test_nfs_with_xattrs_keeps_layers_and_moves_containers(tmp_path: Path) -> None:
    local = tmp_path / "scratch"
    placed = placement.plan(Path("/home/u/store"), NFS, str(local), create=False, root_takes_xattrs=True)
    assert placed.layers == Path("/home/u/store/layers")
    assert placed.containers == local / "containers"
    assert placed.notice() == (
        "the store /home/u/store is on NFS, which cannot hold overlay upper dirs: container storage goes to the"
        f" local directory {local} (images stay in /home/u/store); set storage.local_root to choose another"
    )


def test_no_xattrs_moves_layers_too(tmp_path: Path) -> None:
    placed = placement.plan(Path("/lustre/u/store"), NFS, str(tmp_path), create=False, root_takes_xattrs=False)
    assert placed.layers == tmp_path / "layers" and placed.layers_moved


def test_default_local_root_is_private_under_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    placed = placement.plan(Path("/gpfs/u/store"), NFS, "", root_takes_xattrs=True)
    assert placed.local == tmp_path / f"rl-local-{os.getuid()}"
    assert placed.local is not None and (placed.local.stat().st_mode & 0o777) == 0o700


def test_local_root_inside_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is on the same filesystem"):
        placement.plan(tmp_path, NFS, str(tmp_path / "local"), create=False, root_takes_xattrs=True)


def test_announce_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    placed = placement.plan(Path("/home/u/store"), NFS, str(tmp_path / "l"), create=False, root_takes_xattrs=True)
    with caplog.at_level(logging.WARNING, logger="rl"):
        assert placement.announce(placed, tmp_path) is True
        assert placement.announce(placed, tmp_path) is False
    assert len(caplog.records) == 1
