"""Fixtures for tests that need a real delegated cgroup v2 subtree: they run inside the VM of
ci/vm/run-lane.sh (which sets RL_CGROUPVM=1 and RL_CGROUPVM_ROOT) and are skipped elsewhere.

    delegated_root   the delegated subtree (absolute path, e.g. /sys/fs/cgroup/rl-rltest); pass it
                     to rl as RL_CGROUP_ROOT (rootless.cgroups.detect.ROOT_ENV) in container tests
    make_leaf        make_leaf(Limits) -> Leaf, killed and removed after the test
    spawn            spawn(leaf, argv, **popen_kwargs) -> Popen: a process that joins the leaf before exec
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from rootless.cgroups import Leaf, Limits, detect, prepare

ENV_FLAG = "RL_CGROUPVM"
ENV_ROOT = "RL_CGROUPVM_ROOT"
SKIP_REASON = "cgroup v2 VM lane only: sudo ci/vm/run-lane.sh --venv VENV --src SRC --user rltest"


IN_THE_VM = os.environ.get(ENV_FLAG) == "1" and bool(os.environ.get(ENV_ROOT))

# Outside the VM the tests are not even collected; one summary line says why.
collect_ignore_glob = [] if IN_THE_VM else ["test_*.py"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not IN_THE_VM and any("cgroupvm" in str(arg) or arg == "tests" for arg in terminalreporter.config.args):
        terminalreporter.write_line(f"tests/cgroupvm not collected: {SKIP_REASON}", yellow=True)


@pytest.fixture
def delegated_root() -> str:
    return os.environ[ENV_ROOT]


@pytest.fixture
def make_leaf(delegated_root: str) -> Iterator[Callable[..., Leaf]]:
    leaves: list[Leaf] = []

    def make(limits: Limits | None = None, container_id: str | None = None) -> Leaf:
        leaf = prepare(container_id or uuid.uuid4().hex, limits or Limits(), root=delegated_root)
        assert leaf is not None, f"no leaf under {delegated_root}: {detect(root=delegated_root)}"
        leaves.append(leaf)
        return leaf

    yield make
    for leaf in leaves:
        with contextlib.suppress(Exception):
            leaf.thaw()
        with contextlib.suppress(Exception):
            leaf.kill()
        with contextlib.suppress(Exception):
            leaf.remove()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[Any]]]:
    procs: list[subprocess.Popen[Any]] = []

    def start(leaf: Leaf, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        fd = leaf.open_procs()
        try:
            proc = subprocess.Popen(
                list(argv), pass_fds=(fd,), preexec_fn=lambda: os.write(fd, b"0"), **kwargs
            )
        finally:
            os.close(fd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
