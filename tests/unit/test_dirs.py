"""Directories: storage under the data dir, runtime state under XDG_RUNTIME_DIR or a private temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.config import dirs
from rootless.errors import HostError


def test_storage_defaults_to_xdg_data_home(tmp_path: Path) -> None:
    d = dirs.resolve(environ={"XDG_DATA_HOME": str(tmp_path)})
    assert d.storage == tmp_path / "rl" / "storage"


def test_runroot_uses_xdg_runtime_dir_when_ours(tmp_path: Path) -> None:
    d = dirs.resolve(environ={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert d.runroot == tmp_path / "rl"
    assert d.runroot_reason == "XDG_RUNTIME_DIR"


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "is not set"), ("/nonexistent/run", "does not exist"), ("FILE", "is not a directory")],
)
def test_runroot_falls_back_to_private_temp_dir(tmp_path: Path, value: str | None, reason: str) -> None:
    env = {}
    if value == "FILE":
        (tmp_path / "f").write_text("")
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "f")
    elif value:
        env["XDG_RUNTIME_DIR"] = value
    d = dirs.resolve(environ=env)
    assert d.runroot == dirs.private_tmp_runroot(os.getuid())
    assert reason in d.runroot_reason


def test_runroot_not_owned_by_user_falls_back(tmp_path: Path) -> None:
    d = dirs.resolve(environ={"XDG_RUNTIME_DIR": str(tmp_path)}, uid=os.getuid() + 1)
    assert "is owned by uid" in d.runroot_reason


def test_same_private_dir_for_every_process() -> None:
    assert dirs.private_tmp_runroot(1000) == dirs.private_tmp_runroot(1000)
    assert dirs.private_tmp_runroot(1000) != dirs.private_tmp_runroot(1001)


def test_ensure_private_dir(tmp_path: Path) -> None:
    target = tmp_path / "run"
    dirs.ensure_private_dir(target, os.getuid())
    assert (target.stat().st_mode & 0o777) == 0o700
    target.chmod(0o755)
    dirs.ensure_private_dir(target, os.getuid())
    assert (target.stat().st_mode & 0o777) == 0o700
    with pytest.raises(HostError, match="belongs to uid"):
        dirs.ensure_private_dir(target, os.getuid() + 1)
