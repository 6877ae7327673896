"""The command line: lazy loading, the error boundary, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from rootless import cli
from rootless.errors import EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND, EXIT_RL, CommandNotFoundError, HostError

HEAVY = ("pyroute2", "rootless.image.registry", "rootless.image.store", "http.client", "ssl")


def modules_after(*args: str) -> set[str]:
    code = (
        "import sys\n"
        "from rootless.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stderr.split())


@pytest.mark.parametrize("args", [["--help"], ["version"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    loaded = modules_after(*args)
    assert not [m for m in HEAVY if m in loaded]
    assert "rootless.cli.commands.info" not in loaded


def test_every_command_has_help() -> None:
    group = cli.cli
    assert isinstance(group, cli.LazyGroup)
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        assert command.help or command.short_help, f"{name} has no help"


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 0), out, err


def test_version_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "version", "--format", "json")
    assert code == 0
    assert json.loads(out)["Version"]


def test_unknown_flag_is_125(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "--no-such-flag")
    assert code == EXIT_RL
    assert err.startswith("Error: no such option")


def test_unknown_command_is_125(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "frobnicate")
    assert code == EXIT_RL
    assert "frobnicate" in err


@pytest.fixture
def failing_command() -> object:
    """Register a hidden command that raises what the test asks for."""
    raised: list[BaseException] = []

    @click.command()
    def boom() -> None:
        raise raised[0]

    cli.cli.commands["boom"] = boom
    yield raised
    del cli.cli.commands["boom"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (HostError("newuidmap is not setuid", "ask the admin to run 'chmod u+s /usr/bin/newuidmap'"), EXIT_RL),
        (CommandNotFoundError('exec: "nope": executable file not found in $PATH'), EXIT_NOT_FOUND),
    ],
)
def test_typed_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], failing_command: list[BaseException], error: Exception, code: int
) -> None:
    failing_command.append(error)
    rc, _, err = run_main(capsys, "boom")
    assert rc == code
    assert err.count("\n") == 1
    assert err.startswith("Error: ")
    assert "Traceback" not in err


def test_internal_error_has_no_traceback_without_debug(
    capsys: pytest.CaptureFixture[str], failing_command: list[BaseException]
) -> None:
    failing_command.append(ValueError("bad thing"))
    rc, _, err = run_main(capsys, "boom")
    assert rc == EXIT_RL
    assert "Traceback" not in err
    assert "--debug" in err


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str], failing_command: list[BaseException]) -> None:
    failing_command.append(ValueError("bad thing"))
    rc, _, err = run_main(capsys, "--debug", "boom")
    assert rc == EXIT_RL
    assert "Traceback" in err


def test_exit_codes_are_dockers() -> None:
    assert (EXIT_RL, EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND) == (125, 126, 127)
