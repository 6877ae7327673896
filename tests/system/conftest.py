"""Black-box runs of `rl` as a user would type them.

`rl(args..., rc=0)` runs the installed command in an isolated home, checks the exit code, and fails
on any warning the test did not declare with `warnings=[...]` (podman's run_podman does the same).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import isolated_rl_env


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def rl_command() -> list[str]:
    exe = shutil.which("rl", path=os.path.dirname(sys.executable)) or shutil.which("rl")
    return [exe] if exe else [sys.executable, "-m", "rootless"]


@pytest.fixture
def rl_env(tmp_path: Path) -> dict[str, str]:
    return isolated_rl_env(tmp_path, ("RL_TEST_REGISTRY", "RL_TEST_DEBIAN_TAR", "TMPDIR"), default_user="rltest")


RunRl = Callable[..., Result]


@pytest.fixture
def rl(rl_env: dict[str, str]) -> Iterator[RunRl]:
    def run(
        *args: str,
        rc: int | None = 0,
        warnings: Sequence[str] = (),
        env: dict[str, str] | None = None,
        unset: Sequence[str] = (),
        input: str | None = None,
        timeout: float = 120,
    ) -> Result:
        full_env = {**rl_env, **(env or {})}
        for name in unset:
            full_env.pop(name, None)
        proc = subprocess.run(
            [*rl_command(), *args],
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        where = f"rl {' '.join(args)}: rc={result.rc}\nstdout:\n{result.out}\nstderr:\n{result.err}"
        if rc is not None:
            assert result.rc == rc, where
        unexpected = [
            line for line in result.err.splitlines()
            if line.startswith("Warning:") and not any(w in line for w in warnings)
        ]
        assert not unexpected, f"unexpected warnings in {where}"
        if rc == 0:
            assert "Traceback" not in result.err, where
        return result

    yield run
    # Every test has its own store and user namespace. The store holds files of subordinate IDs
    # that only rl (inside the namespace) can delete: let it, and stop the namespace.
    subprocess.run([*rl_command(), "system", "reset", "--force"], env=rl_env, capture_output=True, timeout=60,
                   stdin=subprocess.DEVNULL)
