"""Resource limits on a host that delegates no cgroup v2 subtree (v1 or hybrid, like CI's): the one-line
error with the admin's fix when limits are asked for, a clean run when they are not, one warning with
limits.without_cgroup = "warn". The limits themselves are tested in the VM lane (tests/cgroupvm)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rootless.cgroups import detect, problem
from tests.system.conftest import RunRl, rl_command

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        problem(detect(), ["memory", "pids", "cpu"], ["--memory"]) is None,
        reason="this host delegates cgroup v2 controllers: the limits run (see tests/cgroupvm)",
    ),
]


def ref(fixture_images: dict[str, Any]) -> str:
    return str(fixture_images["busybox"].reference)


@pytest.mark.parametrize("flags", [["--memory", "32m"], ["--pids-limit", "10"], ["--cpus", "0.5", "-m", "64m"]])
def test_limits_without_delegation_give_one_line_with_the_fix(rl: RunRl, fixture_images: dict[str, Any],
                                                              flags: list[str]) -> None:
    result = rl("run", "--rm", "-q", *flags, ref(fixture_images), "echo", "hi", rc=125)
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith("Error: cannot apply --"), line
    assert "helpers/enable-cgroup-delegation.sh" in line
    assert "an admin must" in line
    assert 'limits.without_cgroup = "warn"' in line
    # nothing was created: the error comes before the image or the container
    assert rl("stats", "--no-stream", "-a").lines[1:] == []


def test_no_limits_run_cleanly_and_silently(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    result = rl("run", "--rm", "-q", ref(fixture_images), "echo", "hi")
    assert result.out == "hi\n"
    assert result.err == ""


def test_warn_setting_runs_without_limits_with_one_warning(rl: RunRl, rl_env: dict[str, str],
                                                           fixture_images: dict[str, Any]) -> None:
    Path(rl_env["RL_SYSTEM_CONFIG"]).write_text('[limits]\nwithout_cgroup = "warn"\n')
    result = rl("run", "--rm", "-q", "--memory", "32m", ref(fixture_images), "echo", "hi",
                warnings=["running the container without limits"])
    assert result.out == "hi\n"
    [line] = result.err.splitlines()
    assert line.startswith("Warning: cannot apply --memory: ")
    assert line.count("running the container without limits") == 1
    assert "helpers/enable-cgroup-delegation.sh" in line


def test_bad_limit_values_are_usage_errors(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    result = rl("run", "--rm", "-q", "--memory", "3m", ref(fixture_images), "true", rc=125)
    assert result.err == "Error: invalid --memory '3m': the minimum memory limit is 6m\n"
    result = rl("run", "--rm", "-q", "--cpus", "lots", ref(fixture_images), "true", rc=125)
    assert "invalid --cpus 'lots'" in result.err


def test_info_names_the_missing_delegation(rl: RunRl) -> None:
    out = rl("info").out
    assert "cgroup subtree" in out and "none: " in out
    import json

    data = json.loads(rl("info", "--format", "json").out)["cgroups"]
    assert data["delegated"] is None and data["problem"]


def test_commands_on_a_running_container_without_a_cgroup(rl: RunRl, rl_env: dict[str, str],
                                                          fixture_images: dict[str, Any]) -> None:
    script = "trap 'exit 0' TERM; echo ready; sleep 60 & wait"
    proc = subprocess.Popen([*rl_command(), "run", "-q", "--name", "sleeper", ref(fixture_images), "sh", "-c",
                             script], env=rl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        result = rl("stats", "--no-stream", warnings=["no cgroup of their own for sleeper"])
        header, row = result.lines
        assert header.startswith("CONTAINER ID   NAME")
        assert row.split()[1:] == ["sleeper", "--", "--", "/", "--", "--", "--", "/", "--", "--", "/", "--", "--"]
        [warning] = result.err.splitlines()
        assert "their figures show as --" in warning
        for command in (["pause"], ["unpause"], ["update", "--memory", "64m"]):
            result = rl(*command, "sleeper", rc=125)
            [line] = result.err.splitlines()
            assert line.startswith(f"Error: cannot {command[0]} container sleeper: it has no cgroup of its own"), line
            assert "enable-cgroup-delegation.sh" in line
        rl("pause", "nosuch", rc=125)
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
