"""rl and podman as the benchmarks drive them: private stores, private podman configuration.

podman is configured through private files (containers.conf with runtime "runc" (its default crun
refuses this kind of host's hybrid cgroup layout), storage.conf with the overlay driver,
registries.conf marking the local registry insecure) passed in CONTAINERS_CONF /
CONTAINERS_STORAGE_CONF / CONTAINERS_REGISTRIES_CONF, so the user's own podman setup is left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds ``argv`` took; exits with its output if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return elapsed


def output(argv: list[str], env: dict[str, str]) -> str:
    """The standard output of ``argv``; raises RuntimeError with its output when it fails."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}".strip())
    return proc.stdout


class _Tool:
    """What the benchmarks do the same way with either tool: ``argv`` builds a command line."""

    env: dict[str, str]

    def argv(self, root: Path, *args: str) -> list[str]:
        raise NotImplementedError

    def pull(self, root: Path, ref: str) -> float:
        return timed(self.argv(root, "pull", "-q", ref), self.env)

    def run(self, root: Path, *args: str) -> float:
        return timed(self.argv(root, "run", *args), self.env)

    def run_detached(self, root: Path, *args: str) -> str:
        """``TOOL run -d ARGS``: the new container's ID."""
        return output(self.argv(root, "run", "-d", *args), self.env).split()[-1]

    def inspect(self, root: Path, *ids: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = json.loads(output(self.argv(root, "inspect", *ids), self.env))
        return result


class Rl(_Tool):
    name = "rl"

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.runroot = work / "rl-run"
        self.runroot.mkdir(mode=0o700)
        self.env = {**env, "PYTHONPATH": str(ROOT), "RL_SYSTEM_CONFIG": str(work / "rl-system.toml")}
        exe = shutil.which("rl", path=os.path.dirname(sys.executable))
        self.cmd = [exe] if exe else [sys.executable, "-m", "rootless"]

    def argv(self, root: Path, *args: str) -> list[str]:
        return [*self.cmd, "--root", str(root), "--runroot", str(self.runroot), *args]


    def rm(self, root: Path, *ids: str) -> None:
        """``rl rm -f IDS``."""
        output(self.argv(root, "rm", "-f", *ids), self.env)

    def pause_pid(self) -> int | None:
        """The pid of this runroot's pause process, as rl recorded it (None: none started)."""
        try:
            return int(json.loads((self.runroot / "pause.json").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None

    def remove(self, root: Path) -> None:
        code = ("import shutil\nfrom pathlib import Path\nfrom rootless.runtime import pause\n"
                f"pause.enter(Path({str(self.runroot)!r}))\nshutil.rmtree({str(root)!r})\n")
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True)

    def close(self) -> None:
        """``rl system migrate``: stops the rootless netns' shared helper (the default network's pasta)
        and the pause process of this runroot."""
        subprocess.run(self.argv(self.work / "rl", "system", "migrate"), env=self.env, capture_output=True,
                       check=False)


class Podman(_Tool):
    name = "podman"

    def __init__(self, work: Path, env: dict[str, str], registry: str) -> None:
        conf = work / "containers"
        conf.mkdir()
        (conf / "containers.conf").write_text('[engine]\nruntime = "runc"\n')
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{work / "podman-run"}"\ngraphroot = "{work / "podman-root"}"\n')
        (conf / "registries.conf").write_text(
            f'unqualified-search-registries = []\n[[registry]]\nlocation = "{registry}"\ninsecure = true\n')
        self.runroot = work / "podman-run"
        self.env = {
            **env,
            "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        }

    def argv(self, root: Path, *args: str) -> list[str]:
        return ["podman", "--root", str(root), "--runroot", str(self.runroot), "--storage-driver", "overlay", *args]


    def rm(self, root: Path, *ids: str) -> None:
        """``podman rm -f -t 0 IDS``."""
        output(self.argv(root, "rm", "-f", "-t", "0", *ids), self.env)

    def pause_pid(self) -> int | None:
        """The pid of the user's podman pause process when XDG_RUNTIME_DIR is set in the environment
        given (podman keeps it in $XDG_RUNTIME_DIR/libpod/tmp/pause.pid); None when unknown or absent."""
        runtime_dir = self.env.get("XDG_RUNTIME_DIR")
        if not runtime_dir:
            return None
        try:
            return int((Path(runtime_dir) / "libpod" / "tmp" / "pause.pid").read_text())
        except (OSError, ValueError):
            return None

    def remove(self, root: Path) -> None:
        subprocess.run(["podman", "unshare", "rm", "-rf", str(root)], env=self.env, check=True)

    def close(self) -> None:
        pass
