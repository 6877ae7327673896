#!/usr/bin/env python3
"""Memory of what rl leaves running per detached container: the monitor, idle.

    python bench/monitor_memory.py [-n 5]

Run as the unprivileged test user from the checkout root (compile the bytecode first, as an installed
rl has it: ``python -m compileall -q rootless``). Builds a busybox rootfs in a temporary directory,
starts its own pause process, and starts N detached ``sleep`` containers through ``start_monitor``
from a process that has imported what `rl run -d` imports (click CLI, engine, image store), twice:

  re-exec     the monitor re-executes itself as ``python -I -S`` (what rl does)
  no re-exec  the monitor keeps running in the image forked from rl (RL_MONITOR_NO_REEXEC=1)

and prints each monitor's RSS, PSS and private dirty memory after it has been idle for a second,
with the time start_monitor took. The pause process is shared by all containers of a user (one per
user, ~1 MB) and is printed once. The containers' own processes are not counted: they are the
workload. Target: monitor RSS <= 12 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rootless.runtime import monitor, pause  # noqa: E402
from rootless.runtime.spec import ContainerSpec, default_mounts  # noqa: E402
from tests.support import busybox_rootfs, call_in_child, memory_kib  # noqa: E402


def start_many(runroot: Path, rootfs: Path, n: int, reexec: bool) -> list[dict[str, Any]]:
    """In a child that joined the pause namespace and imported what `rl run -d` has loaded."""

    def prepare() -> None:
        import rootless.cli
        import rootless.engine.run
        import rootless.image.store
        import rootless.storage.driver  # noqa: F401

        if not reexec:
            os.environ[monitor.NO_REEXEC_ENV] = "1"
        pause.enter(runroot)

    def start() -> list[dict[str, Any]]:
        results = []
        for i in range(n):
            cid = f"{int(reexec)}{i:063x}"
            spec = ContainerSpec(rootfs=str(rootfs), args=["sleep", "3600"], hostname="b",
                                 mounts=default_mounts(pts_gid=None))
            cfg = monitor.MonitorConfig(cid, spec, str(runroot / cid), log_path=str(runroot / f"{cid}.log"))
            began = time.perf_counter()
            with monitor.start_monitor(cfg) as started:
                results.append({"pid": started.pid, "monitor": started.monitor_pid, "paths": cfg.paths,
                                "seconds": time.perf_counter() - began, "parent_rss": memory_kib(os.getpid())})
        return results

    result: list[dict[str, Any]] = call_in_child(start, prepare=prepare)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="containers per variant (default 5)")
    args = parser.parse_args()
    if os.getuid() == 0:
        sys.exit("run as an unprivileged user")
    with tempfile.TemporaryDirectory(prefix="rl-bench-monitor-") as tmp:
        base = Path(tmp)
        rootfs = base / "rootfs"
        busybox_rootfs(rootfs)
        runroot = base / "run"
        runroot.mkdir(mode=0o700)
        started: list[dict[str, Any]] = []
        try:
            rows = {}
            for reexec in (True, False):
                batch = start_many(runroot, rootfs, args.n, reexec)
                started += batch
                time.sleep(1.0)
                rows["re-exec" if reexec else "no re-exec"] = (batch, [memory_kib(b["monitor"]) for b in batch])
            handle = pause.status(runroot)
            print(f"rl process that started them: RSS {started[0]['parent_rss']['Rss'] / 1024:.1f} MB")
            for name, (batch, mems) in rows.items():
                rss = statistics.median(m["Rss"] for m in mems) / 1024
                pss = statistics.median(m["Pss"] for m in mems) / 1024
                dirty = statistics.median(m["Private_Dirty"] for m in mems) / 1024
                took = statistics.median(b["seconds"] for b in batch) * 1000
                print(f"{name:11} monitor RSS {rss:5.1f} MB  PSS {pss:5.1f} MB  private dirty {dirty:5.1f} MB"
                      f"   start_monitor {took:5.1f} ms (median of {len(batch)})")
            if handle is not None:
                mem = memory_kib(handle.pid)
                print(f"pause (one per user, shared): RSS {mem['Rss'] / 1024:.1f} MB  PSS {mem['Pss'] / 1024:.1f} MB")
        finally:
            for b in started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(b["pid"], signal.SIGKILL)
            for b in started:
                monitor.wait_exit(b["paths"], 10)
            pause.migrate(runroot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
