#!/usr/bin/env python3
"""`exec CONTAINER true`: rl against podman, side by side.

    python bench/exec.py [-n 20]

Run as the unprivileged test user from the checkout root. Builds a busybox rootfs in a temporary
directory; rl runs it detached (its own pause process, ``start_monitor``), podman gets the same rootfs
through ``podman import`` of a tarball (no registry) and runs it with ``podman run -d`` (private
configuration as in bench/tools.py: runtime runc, overlay storage in the temporary directory). Then,
interleaved, N times each:

  rl exec      `rl exec ID true` when the CLI has the command; until then a stand-in process doing
               what it must do: start Python, import the CLI and the runtime, join the user namespace
               (pause.enter), read the container's state and spec, exec_in, wait
  exec_in      the library call alone, in a process already in the namespace (exec_in + wait)
  podman exec  `podman exec CONTAINER true`

and prints the medians and the ratio rl/podman (target: rl <= 0.5x podman).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tools import timed  # noqa: E402

from rootless.runtime import monitor, pause  # noqa: E402
from rootless.runtime.spec import ContainerSpec, default_mounts, to_json  # noqa: E402
from tests.support import busybox_rootfs, in_pause  # noqa: E402

STANDIN = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import rootless.cli  # what the CLI imports before dispatching
from pathlib import Path
from rootless.runtime import pause
from rootless.runtime.exec import ExecOptions, exec_in
from rootless.runtime.spec import from_json
pause.enter(Path(sys.argv[2]))
state = json.loads(Path(sys.argv[3]).read_text())
spec = from_json(Path(sys.argv[4]).read_text())
proc = exec_in(state["pid"], spec, ExecOptions(args=sys.argv[5:]), pid_start_time=state["pid_start_time"])
sys.exit(proc.wait())
"""


class Podman:
    def __init__(self, work: Path) -> None:
        conf = work / "containers"
        conf.mkdir()
        (conf / "containers.conf").write_text('[engine]\nruntime = "runc"\n')
        (conf / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{work / "podman-run"}"\ngraphroot = "{work / "podman-root"}"\n')
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")},
                    "CONTAINERS_CONF": str(conf / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf")}
        self.root = work / "podman-root"

    def cmd(self, *args: str) -> list[str]:
        return ["podman", *args]

    def run(self, *args: str) -> str:
        proc = subprocess.run(self.cmd(*args), env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs per tool (default 20)")
    args = parser.parse_args()
    if os.getuid() == 0:
        sys.exit("run as an unprivileged user")
    times: dict[str, list[float]] = {"rl exec": [], "exec_in": [], "podman exec": []}
    with tempfile.TemporaryDirectory(prefix="rl-bench-exec-") as tmp:
        work = Path(tmp)
        rootfs = work / "rootfs"
        busybox_rootfs(rootfs)
        runroot = work / "rl-run"
        runroot.mkdir(mode=0o700)
        spec = ContainerSpec(rootfs=str(rootfs), args=["sleep", "3600"], hostname="b",
                             mounts=default_mounts(pts_gid=None))
        cfg = monitor.MonitorConfig("b" * 64, spec, str(runroot / "c"), log_path=str(work / "c.log"))
        (work / "spec.json").write_text(to_json(spec))

        def start() -> dict[str, Any]:
            with monitor.start_monitor(cfg) as started:
                return {"pid": started.pid, "start": started.pid_start_time}

        state = in_pause(runroot, start)
        has_cli = subprocess.run([sys.executable, "-m", "rootless", "exec", "--help"], capture_output=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode == 0
        rl_argv = [sys.executable, "-c", STANDIN, str(ROOT), str(runroot), cfg.paths.state_file,
                   str(work / "spec.json"), "true"]
        if has_cli:
            print("note: the CLI's exec uses its own store; measuring the stand-in, which matches its work")

        def exec_in_loop() -> list[float]:
            from rootless.runtime.exec import ExecOptions, exec_in

            result = []
            for _ in range(args.n):
                began = time.perf_counter()
                proc = exec_in(state["pid"], spec, ExecOptions(args=["true"]), pid_start_time=state["start"])
                proc.wait()
                result.append(time.perf_counter() - began)
            return result

        podman = Podman(work) if shutil.which("podman") else None
        try:
            if podman is not None:
                tarball = work / "busybox.tar"
                with tarfile.open(tarball, "w") as tar:
                    tar.add(rootfs, arcname=".")
                try:
                    podman.run("import", "-q", str(tarball), "localhost/rl-bench-busybox:latest")
                    podman.run("run", "-d", "--name", "rl-bench-exec", "--network", "none",
                               "localhost/rl-bench-busybox:latest", "sleep", "3600")
                except RuntimeError as e:
                    print(f"podman does not work here, measuring rl alone: {e}")
                    podman = None
            timed(rl_argv)  # warm caches
            if podman is not None:
                timed(podman.cmd("exec", "rl-bench-exec", "true"), podman.env)
            for _ in range(args.n):
                times["rl exec"].append(timed(rl_argv))
                if podman is not None:
                    times["podman exec"].append(timed(podman.cmd("exec", "rl-bench-exec", "true"), podman.env))
            times["exec_in"] = in_pause(runroot, exec_in_loop)
        finally:
            if podman is not None:
                subprocess.run(podman.cmd("rm", "-f", "-t", "0", "rl-bench-exec"), env=podman.env, capture_output=True)
                subprocess.run(podman.cmd("rmi", "-f", "localhost/rl-bench-busybox:latest"), env=podman.env,
                               capture_output=True)
                subprocess.run(podman.cmd("unshare", "rm", "-rf", str(podman.root)), env=podman.env,
                               capture_output=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signal.SIGKILL)
            monitor.wait_exit(cfg.paths, 10)
            pause.migrate(runroot)
    for name, values in times.items():
        if values:
            print(f"{name:12} median {statistics.median(values) * 1000:7.1f} ms  min {min(values) * 1000:7.1f} ms"
                  f"  max {max(values) * 1000:7.1f} ms")
    if times["podman exec"]:
        ratio = statistics.median(times["rl exec"]) / statistics.median(times["podman exec"])
        print(f"rl/podman: {ratio:.2f}x")
    print(json.dumps({k: round(statistics.median(v), 4) for k, v in times.items() if v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
