"""Merging the image's defaults with docker's flags into a spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.engine import runopts
from rootless.engine.runopts import RunOptions
from rootless.engine.specgen import ImageDefaults, build, command_line, hosts_file, resolv_conf, stop_signal_name
from rootless.engine.users import User
from rootless.errors import UsageError
from rootless.runtime.capabilities import DEFAULT_CAPABILITIES
from rootless.runtime.spec import ContainerSpec

IMAGE = ImageDefaults(env=("PATH=/bin", "A=image"), cmd=("sh",), entrypoint=None, working_dir="/data", user="",
                      stop_signal="SIGQUIT")


ROOT = User(0, 0, (), "/root", "root")


def spec_for(opts: RunOptions, image: ImageDefaults = IMAGE, user: User = ROOT) -> ContainerSpec:
    return build(image=image, opts=opts, rootfs="/r", user=user, hostname="abc", etc_files={})


@pytest.mark.parametrize(
    ("image", "opts", "expected"),
    [
        (ImageDefaults(cmd=("sh",)), RunOptions("i"), ["sh"]),
        (ImageDefaults(cmd=("sh",)), RunOptions("i", command=["echo", "x"]), ["echo", "x"]),
        (ImageDefaults(entrypoint=("/ep",), cmd=("a",)), RunOptions("i"), ["/ep", "a"]),
        (ImageDefaults(entrypoint=("/ep",), cmd=("a",)), RunOptions("i", command=["b"]), ["/ep", "b"]),
        (ImageDefaults(entrypoint=("/ep",), cmd=("a",)), RunOptions("i", entrypoint=["/x"]), ["/x"]),
        (ImageDefaults(entrypoint=("/ep",), cmd=("a",)), RunOptions("i", entrypoint=[], command=["ls"]), ["ls"]),
    ],
)
def test_entrypoint_and_cmd(image: ImageDefaults, opts: RunOptions, expected: list[str]) -> None:
    assert command_line(image, opts) == expected


def test_no_command_is_an_error() -> None:
    with pytest.raises(UsageError, match="no command specified"):
        command_line(ImageDefaults(), RunOptions("scratch-thing"))


def test_env_merge_and_defaults() -> None:
    spec = spec_for(RunOptions("i", env=["A=flag", "B=2"], tty=True))
    assert spec.env[:3] == ["PATH=/bin", "A=flag", "B=2"]
    assert "HOSTNAME=abc" in spec.env
    assert "HOME=/root" in spec.env
    assert "TERM=xterm" in spec.env


def test_workdir_user_and_defaults() -> None:
    spec = spec_for(RunOptions("i"), user=User(1234, 1234, (10,), "/home/alice", "alice"))
    assert spec.cwd == "/data"
    assert (spec.user.uid, spec.user.gid, spec.user.additional_gids) == (1234, 1234, [10])
    assert spec.capabilities.effective == []
    assert sorted(spec.capabilities.bounding) == sorted(f"CAP_{c}" if not c.startswith("CAP_") else c
                                                        for c in DEFAULT_CAPABILITIES)
    assert spec.seccomp == "default"
    assert spec.no_new_privs is True
    assert spec.stop_signal == "SIGQUIT"
    assert "/proc/kcore" in spec.masked_paths


def test_security_options() -> None:
    spec = spec_for(RunOptions("i", security_opt=["seccomp=unconfined"], cap_drop=["ALL"], cap_add=["chown"]))
    assert spec.seccomp is None
    assert spec.capabilities.effective == ["CAP_CHOWN"]
    privileged = spec_for(RunOptions("i", privileged=True))
    assert privileged.seccomp is None and privileged.masked_paths == []
    assert "CAP_SYS_ADMIN" in privileged.capabilities.effective
    with pytest.raises(UsageError, match="invalid --security-opt"):
        spec_for(RunOptions("i", security_opt=["frobnicate=1"]))


def test_user_mounts() -> None:
    opts = RunOptions("i", mounts=[runopts.parse_volume("/h:/c:ro"), runopts.parse_tmpfs("/t:size=1m")],
                      read_only=True)
    spec = spec_for(opts)
    binds = [m for m in spec.mounts if m.destination == "/c"]
    assert binds[0].source == "/h" and "ro" in binds[0].options
    assert any(m.destination == "/t" and "size=1m" in m.options for m in spec.mounts)
    assert spec.readonly_rootfs


@pytest.mark.parametrize(("text", "name"), [("TERM", "SIGTERM"), ("sigkill", "SIGKILL"), ("9", "SIGKILL")])
def test_stop_signal(text: str, name: str) -> None:
    assert stop_signal_name(text) == name


def test_hosts_and_resolv() -> None:
    hosts = hosts_file("abc", [("db", "10.0.0.2")])
    assert "10.0.0.2\tdb" in hosts and hosts.endswith("127.0.0.1\tabc\n")
    resolv = resolv_conf("nameserver 127.0.0.53\nnameserver 10.1.1.1\nsearch lan\n", [], [], [])
    assert resolv == "nameserver 10.1.1.1\nsearch lan\n"
    assert resolv_conf("nameserver 1.1.1.1\n", ["9.9.9.9"], ["x"], ["ndots:1"]) == (
        "nameserver 9.9.9.9\nsearch x\noptions ndots:1\n")


@pytest.mark.parametrize(
    ("spec", "kind", "dest", "readonly"),
    [
        ("/host:/c", "bind", "/c", False),
        ("/host:/c:ro,z", "bind", "/c", True),
        ("vol:/data", "volume", "/data", False),
        ("/anon", "volume", "/anon", False),
    ],
)
def test_parse_volume(spec: str, kind: str, dest: str, readonly: bool) -> None:
    m = runopts.parse_volume(spec)
    assert (m.type, m.destination, m.readonly) == (kind, dest, readonly)


@pytest.mark.parametrize("bad", ["", "a:b:c:d", "/h:relative", "/h:/c:bogus", "bad name!:/c"])
def test_parse_volume_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        runopts.parse_volume(bad)


def test_env_file(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\nA=1\n\nFROM_HOST\nMISSING_VAR\n")
    assert runopts.read_env_file(str(f), {"FROM_HOST": "h"}) == ["A=1", "FROM_HOST=h"]
