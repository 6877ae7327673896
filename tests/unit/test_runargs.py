"""The `rl run` fast path parses exactly as click does, and leaves to click what it cannot parse."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click
import pytest

from rootless.cli import runargs
from rootless.cli.commands.run import run as run_command
from rootless.cli.group import cli as group

IMAGE = "registry.example/busybox:1"

# command lines after `rl run`, all valid
ACCEPTED: list[list[str]] = [
    [IMAGE],
    [IMAGE, "sh", "-c", "echo --rm -e X"],
    ["--rm", "--network", "none", IMAGE, "true"],
    ["-it", "--rm", IMAGE, "sh"],
    ["-dit", "--name", "web", IMAGE],
    ["-ie", "A=1", "-eB=2", "--env=C=3", "-e", "-D", IMAGE, "env"],
    ["-v", "/a:/b:ro", "--volume=/c:/d", "--mount", "type=tmpfs,destination=/t", "--tmpfs", "/x", IMAGE],
    ["--entrypoint", "", IMAGE],
    ["--entrypoint=/bin/sh", "--user", "1234:1234", "-w", "/tmp", "-h", "box", IMAGE, "-c", "id"],
    ["--no-tls-verify", "--pull", "always", "--platform", "linux/amd64", IMAGE],
    ["--tls-verify", "--pull=never", IMAGE],
    ["-m", "512m", "--cpus", "0.5", "--cpu-shares", "512", "-c", "100", "--pids-limit=-1", IMAGE],
    ["-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "-P", "--dns", "1.1.1.1", "--add-host", "a:10.0.0.1", IMAGE],
    ["--net", "host", "--userns=keep-id", "--init", "--privileged", "--read-only", "-q", IMAGE],
    ["--cap-add", "NET_ADMIN", "--cap-drop", "ALL", "--security-opt", "seccomp=unconfined", IMAGE],
    ["-l", "a=b", "--label", "c=d", "--stop-signal", "SIGINT", "--restart", "no", IMAGE],
    ["--log-driver", "k8s-file", "--log-opt", "max-size=1m", "--storage-driver", "vfs", IMAGE],
    ["--name", "-weird", IMAGE],  # a value may start with a dash
    ["--", IMAGE, "--rm"],
    ["--env-file", "/dev/null", "--", "-", "x"],
]

# command lines after `rl run` that click answers with help or an error: the fast path must not take them
REFUSED: list[list[str]] = [
    [],
    ["--rm"],
    ["--help"],
    ["--rm", "--help", IMAGE],
    ["--bogus", IMAGE],
    ["-Z", IMAGE],
    ["-iZ", IMAGE],
    ["--name"],
    ["-e"],
    ["--rm=yes", IMAGE],
    ["--pull", "sometimes", IMAGE],
    ["--cpu-shares", "many", IMAGE],
    ["--tls-verify=false", IMAGE],
]


def _click_params(args: list[str]) -> dict[str, Any]:
    ctx = run_command.make_context("run", list(args))
    return dict(ctx.params)


@pytest.mark.parametrize("args", ACCEPTED, ids=[" ".join(a) or "-" for a in ACCEPTED])
def test_fast_path_parses_as_click(args: list[str]) -> None:
    parsed = runargs.parse_run(["run", *args])
    assert parsed is not None, args
    _, kw, image, command = parsed
    assert {**kw, "image": image, "command": command} == _click_params(args)


@pytest.mark.parametrize("args", REFUSED, ids=[" ".join(a) or "-" for a in REFUSED])
def test_fast_path_leaves_the_rest_to_click(args: list[str]) -> None:
    assert runargs.parse_run(["run", *args]) is None
    with pytest.raises((click.exceptions.Exit, click.ClickException)):
        run_command.make_context("run", list(args))


@pytest.mark.parametrize(
    "args",
    [
        ["run", IMAGE],
        ["--root", "/r", "--runroot=/rr", "run", IMAGE],
        ["--debug", "--log-level", "error", "--storage-driver", "vfs", "run", "--rm", IMAGE],
        ["--log-level=info", "run", IMAGE],
    ],
)
def test_global_flags_parse_as_click(args: list[str]) -> None:
    parsed = runargs.parse_run(args)
    assert parsed is not None
    ctx = group.make_context("rl", list(args))
    assert parsed[0] == ctx.params


@pytest.mark.parametrize(
    "args",
    [["ps"], ["-v"], ["--version"], ["-h", "run", IMAGE], ["--log-level", "loud", "run", IMAGE],
     ["--bogus", "run", IMAGE], ["container", "run", IMAGE], ["create", IMAGE]],
)
def test_other_command_lines_go_to_click(args: list[str]) -> None:
    assert runargs.parse_run(args) is None


def test_click_options_come_from_the_table() -> None:
    names = {p.name for p in run_command.params if isinstance(p, click.Option)}
    assert names == {f.dest for f in runargs.RUN_FLAGS}
    pull = next(p for p in run_command.params if p.name == "pull")
    assert isinstance(pull.type, click.Choice) and tuple(pull.type.choices) == ("missing", "always", "never", "newer")


def test_run_does_not_import_click() -> None:
    """`rl run IMAGE` on the fast path never imports click (it fails on the missing store; that is fine)."""
    code = (
        "import sys\n"
        "from rootless.cli import runargs\n"
        "assert runargs.parse_run(['--root', '/nonexistent', 'run', '--rm', 'img', 'true']) is not None\n"
        "import rootless.cli, rootless.cli.runargs, rootless.cli.context\n"
        "assert 'click' not in sys.modules, 'click imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
