"""Settings: layering, validation, sources, and the documented defaults in config/rl.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rootless.config import settings as config
from rootless.config.schema import SETTINGS
from rootless.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "RL_SYSTEM_CONFIG": str(tmp_path / "system.toml"),
        "RL_CONFIG": str(tmp_path / "user.toml"),
        **extra,
    }


def test_documented_defaults_match_the_schema() -> None:
    data = tomllib.loads((REPO / "config" / "rl.toml").read_text())
    documented = {f"{section}.{k}": v for section, body in data.items() for k, v in body.items()}
    assert documented == {s.key: s.default for s in SETTINGS}


def test_defaults_when_no_file(tmp_path: Path) -> None:
    s = config.load(environ=env_for(tmp_path))
    assert s["registries.search"] == ["docker.io"]
    assert s.sources["storage.driver"] == "default"
    assert s.warnings == []


def test_layers_in_order(tmp_path: Path) -> None:
    (tmp_path / "system.toml").write_text('[storage]\ndriver = "vfs"\nroot = "/sys-root"\n[limits]\npids = 5\n')
    (tmp_path / "user.toml").write_text('[storage]\ndriver = "fuse-overlayfs"\n')
    env = env_for(tmp_path, RL_LIMITS_PIDS="9")
    s = config.load({"storage.root": "/flag-root", "storage.runroot": None}, environ=env)
    assert s["storage.driver"] == "fuse-overlayfs"
    assert s.sources["storage.driver"] == str(tmp_path / "user.toml")
    assert s["storage.root"] == "/flag-root"
    assert s.sources["storage.root"] == "flag"
    assert s["limits.pids"] == 9
    assert s.sources["limits.pids"] == "env RL_LIMITS_PIDS"


def test_unknown_keys_warn(tmp_path: Path) -> None:
    (tmp_path / "user.toml").write_text('[storage]\nfoo = 1\n[nosuch]\nx = 1\n')
    s = config.load(environ=env_for(tmp_path))
    assert any("storage.foo" in w for w in s.warnings)
    assert any("nosuch.x" in w for w in s.warnings)


@pytest.mark.parametrize(
    "text",
    ['[storage]\ndriver = "zfs"\n', "[limits]\npids = \"many\"\n", "[registries]\nsearch = \"docker.io\"\n"],
)
def test_bad_types_are_one_line_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "user.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(environ=env_for(tmp_path))
    assert "\n" not in err.value.line()
    assert str(tmp_path / "user.toml") in err.value.message


def test_bad_toml_syntax(tmp_path: Path) -> None:
    (tmp_path / "user.toml").write_text("[storage\n")
    with pytest.raises(ConfigError, match="cannot parse configuration"):
        config.load(environ=env_for(tmp_path))


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("registries.search", "docker.io, quay.io", ["docker.io", "quay.io"]),
        ("registries.insecure", "", []),
        ("network.fallback_to_host", "no", False),
        ("limits.cpus", "1.5", 1.5),
        ("limits.pids", "100", 100),
        ("registries.mirrors", "docker.io=m1:5000,m2;quay.io=m3", {"docker.io": ["m1:5000", "m2"],
                                                                   "quay.io": ["m3"]}),
        ("registries.mirrors", '{"docker.io": ["m1"]}', {"docker.io": ["m1"]}),
    ],
)
def test_env_values_are_typed(tmp_path: Path, key: str, text: str, expected: object) -> None:
    setting = next(s for s in SETTINGS if s.key == key)
    s = config.load(environ=env_for(tmp_path, **{setting.env: text}))
    assert s[key] == expected


def test_set_writes_user_file_and_validates(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    path, value = config.set_user_value("limits.pids", "42", environ=env)
    assert path == tmp_path / "user.toml"
    assert value == 42
    config.set_user_value("storage.driver", "vfs", environ=env)
    assert tomllib.loads(path.read_text()) == {"limits": {"pids": 42}, "storage": {"driver": "vfs"}}
    with pytest.raises(ConfigError, match="unknown setting"):
        config.set_user_value("storage.nope", "1", environ=env)
    with pytest.raises(ConfigError, match="expected an integer"):
        config.set_user_value("limits.pids", "lots", environ=env)
    assert tomllib.loads(path.read_text())["limits"]["pids"] == 42
