"""Scenarios of the host-compatibility ladder: rl under the conditions of hosts nobody prepared.

Most scenarios need no root: a wrong XDG_RUNTIME_DIR, a seccomp filter, an outer user namespace
with a masked /proc, a missing network helper. The rest run on state that root prepares before
pytest starts (ci/test-host.sh), named by environment variables:

  RL_TEST_NOXATTR_FS   a directory on a FUSE filesystem without user xattrs (bindfs -o xattr-none)
  RL_TEST_FULL_FS      a directory on a full tmpfs
  RL_TEST_RO_FS        a directory on a read-only mount

and the conditions of ``ci/condition.py``, which a scenario phase of the CI runs pytest under,
with RL_SCENARIO naming the condition: ``nosub`` (pytest runs as a user without subordinate IDs),
``no-newuidmap``, ``newuidmap-not-setuid``, ``userns-limit``. A test marked
``@pytest.mark.scenario("NAME")`` runs only in that phase; unmarked tests here run in the main
phase only. Outside CI the phases are deselected and the variables' tests are skipped.

Tests that need ``rl run`` or ``rl pull`` use ``requires_command("run")``: they skip (naming the
command) until rl has it, then run with no change.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import isolated_rl_env
from tests.system.conftest import Result, rl_command

SCENARIO_ENV = "RL_SCENARIO"
HERE = Path(__file__).parent

# Until the one line in rootless/cli/commands/system.py lands, `rl system check` runs through this
# shim, which attaches the command the same way.
_SHIM = (
    "import sys\n"
    "from rootless.cli import main\n"
    "from rootless.cli.commands.system import system\n"
    "from rootless.cli.commands.check import check\n"
    "if 'check' not in system.commands:\n"
    "    system.add_command(check)\n"
    "main(sys.argv[1:])\n"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name): runs only in the CI phase RL_SCENARIO=name")


def active_scenario() -> str:
    return os.environ.get(SCENARIO_ENV, "").strip()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    active = active_scenario()
    keep, drop = [], []
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            (drop if active else keep).append(item)  # a scenario phase runs only scenarios
            continue
        marker = item.get_closest_marker("scenario")
        wanted = marker.args[0] if marker else ""
        (keep if wanted == active else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@functools.cache
def rl_has(command: str, *path: str) -> bool:
    proc = subprocess.run(
        [*rl_command(), *path, "--help"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )
    return proc.returncode == 0 and any(line.split()[:1] == [command] for line in proc.stdout.splitlines())


def requires_command(*words: str) -> None:
    """Skip unless ``rl WORDS...`` exists (e.g. requires_command("pull"))."""
    *path, command = words
    if not rl_has(command, *path):
        pytest.skip(f"rl has no '{' '.join(words)}' command yet")


@pytest.fixture
def scenario_env(tmp_path: Path) -> dict[str, str]:
    """An isolated home, config and store for rl, with a private runtime dir; no registry."""
    return isolated_rl_env(tmp_path, ("TMPDIR", "RL_TEST_REGISTRY"))


RunRl = Callable[..., Result]


@pytest.fixture
def rl(scenario_env: dict[str, str]) -> Iterator[RunRl]:
    """``rl(*args, rc=0, env=..., unset=..., prefix=..., preexec=...)``; every runtime dir a call used
    gets 'rl system migrate' at teardown, so no pause process outlives the test."""
    used: list[dict[str, str]] = []

    def run(
        *args: str,
        rc: int | None = 0,
        env: dict[str, str] | None = None,
        unset: Sequence[str] = (),
        prefix: Sequence[str] = (),
        preexec: Callable[[], None] | None = None,
        timeout: float = 120,
    ) -> Result:
        full = {**scenario_env, **(env or {})}
        for name in unset:
            full.pop(name, None)
        argv = list(rl_command())
        if "system" in args and "check" in args and not rl_has("check", "system"):
            argv = [sys.executable, "-c", _SHIM]
        proc = subprocess.run(
            [*prefix, *argv, *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
        )
        if not prefix and full.get("XDG_RUNTIME_DIR") == scenario_env["XDG_RUNTIME_DIR"]:
            used.append(full)  # a runtime dir of this test's own
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        where = f"rl {' '.join(args)}: rc={result.rc}\nstdout:\n{result.out}\nstderr:\n{result.err}"
        if rc is not None:
            assert result.rc == rc, where
        assert "Traceback" not in result.err, where
        return result

    yield run
    for full in used:
        subprocess.run(
            [*rl_command(), "system", "migrate"], env=full, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
        )


def checks(result: Result) -> dict[str, dict[str, Any]]:
    """The checks of `rl system check --format json` by id."""
    data = json.loads(result.out)
    return {c["id"]: c for c in data["checks"]}


@pytest.fixture
def check(rl: RunRl) -> Callable[..., tuple[Result, dict[str, dict[str, Any]]]]:
    """``check(*global_flags, no_start=False, rc=None, **rl_options)`` runs `rl system check --format json`."""

    def run(
        *flags: str, no_start: bool = False, rc: int | None = None, **options: Any
    ) -> tuple[Result, dict[str, dict[str, Any]]]:
        extra = ["--no-start"] if no_start else []
        result = rl(*flags, "system", "check", "--format", "json", *extra, rc=rc, **options)
        found = checks(result)
        failed = [c for c in found.values() if c["status"] == "fail"]
        assert result.rc == (1 if failed else 0), result
        return result, found

    return run


def prepared_dir(variable: str) -> Path:
    value = os.environ.get(variable, "").strip()
    if not value:
        pytest.skip(f"{variable} is not set (sudo ci/test-host.sh prepares it)")
    return Path(value)
