"""The first commands a user types: help, version, info, config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.system.conftest import RunRl


def test_help_lists_commands(rl: RunRl) -> None:
    out = rl("--help").out
    for name in ("info", "version", "config"):
        assert f"  {name} " in out


def test_every_command_help(rl: RunRl) -> None:
    names = []
    in_commands = False
    for line in rl("--help").lines:
        if line.startswith("Commands:"):
            in_commands = True
            continue
        if in_commands and line.startswith("  "):
            names.append(line.split()[0])
    assert names
    for name in names:
        result = rl(name, "--help")
        assert "Usage: rl " + name in result.out


def test_version(rl: RunRl) -> None:
    assert rl("version").lines[0].startswith("rl version ")
    assert rl("--version").out.startswith("rl version ")


def test_info_json_with_xdg_runtime_dir(rl: RunRl, rl_env: dict[str, str]) -> None:
    data = json.loads(rl("info", "--format", "json").out)
    assert data["store"]["runroot"] == os.path.join(rl_env["XDG_RUNTIME_DIR"], "rl")
    assert data["store"]["root"] == os.path.join(rl_env["XDG_DATA_HOME"], "rl", "storage")
    assert data["host"]["user"]["uid"] == os.getuid()
    assert data["host"]["cgroupVersion"] in ("v1", "v2", "hybrid", "none")
    assert "newuidmap" in data["helpers"]


@pytest.mark.parametrize("xdg", [None, "/nonexistent/xdg", "/"])
def test_info_without_a_usable_xdg_runtime_dir(rl: RunRl, xdg: str | None) -> None:
    if xdg == "/" and os.getuid() == 0:
        pytest.skip("root owns /: the 'owned by someone else' case needs an unprivileged user")
    if xdg is None:
        data = json.loads(rl("info", "--format", "json", unset=["XDG_RUNTIME_DIR"]).out)
    else:
        data = json.loads(rl("info", "--format", "json", env={"XDG_RUNTIME_DIR": xdg}).out)
    assert data["store"]["runroot"].endswith(f"rl-run-{os.getuid()}")
    assert "private dir" in data["store"]["runrootReason"]


def test_info_table(rl: RunRl) -> None:
    out = rl("info").out
    assert "storage driver" in out
    assert "subuid ranges" in out


def test_config_show_and_set(rl: RunRl, rl_env: dict[str, str]) -> None:
    rl("config", "set", "storage.driver", "vfs")
    rl("config", "set", "registries.search", "docker.io,quay.io")
    user_file = Path(rl_env["XDG_CONFIG_HOME"]) / "rl" / "rl.toml"
    assert user_file.exists()
    rows = {line.split()[0]: line.split()[1:] for line in rl("config", "show").lines[1:]}
    assert rows["storage.driver"] == ['"vfs"', str(user_file)]
    assert rows["registries.search"][0] == '["docker.io",'
    shown = json.loads(rl("config", "show", "--format", "json", env={"RL_STORAGE_DRIVER": "overlay"}).out)
    assert shown["storage.driver"] == {"value": "overlay", "source": "env RL_STORAGE_DRIVER"}
    assert rl("--storage-driver", "fuse-overlayfs", "info", "--format", "json").out.count("fuse-overlayfs")


def test_config_set_rejects_bad_values(rl: RunRl) -> None:
    result = rl("config", "set", "storage.driver", "zfs", rc=125)
    assert result.err.count("\n") == 1
    assert result.err.startswith("Error: invalid value 'zfs' for storage.driver")
    result = rl("config", "set", "no.such", "1", rc=125)
    assert "unknown setting 'no.such'" in result.err


def test_unknown_setting_in_file_warns(rl: RunRl, rl_env: dict[str, str]) -> None:
    Path(rl_env["RL_SYSTEM_CONFIG"]).write_text("[storage]\nfrob = 1\n")
    result = rl("config", "show", warnings=["unknown setting 'storage.frob'"])
    assert "Warning: unknown setting 'storage.frob'" in result.err
