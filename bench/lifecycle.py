#!/usr/bin/env python3
"""Detached containers, rl against podman, with the real commands.

    RL_TEST_REGISTRY=127.0.0.1:5555 python bench/lifecycle.py [-n 5] [--exec 20] [--network pasta]

Run as the unprivileged test user from the checkout root. The busybox image of the fixture registry
(``python -m tests.fixtures push ADDR``) is pulled into a private store of each tool (bench/tools.py).

Memory: N idle detached ``sleep`` containers each (``rl run -d`` / ``podman run -d``); after a second
of idleness, the RSS and PSS of what stays running per container *besides the workload*: rl's monitor
(``rl-monitor``) and network helper (pasta/slirp4netns); podman's conmon and its network helper.
Shared per-user processes (rl's pause process, podman's pause process and rootless-netns helper) are
printed apart. Target: rl <= 12 MB per container.

Exec: M interleaved runs of ``rl exec C true`` and ``podman exec C true``; the medians and the ratio
(target: rl <= 0.5x podman).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tools import Podman, Rl

HELPERS = ("pasta", "pasta.avx2", "passt", "passt.avx2", "slirp4netns")


def _mem(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB from smaps_rollup (0, 0 when unreadable)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _procs() -> dict[int, tuple[str, int, str]]:
    """pid -> (comm, ppid, cmdline) of the user's processes."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as fb:
                cmd = fb.read().replace(b"\0", b" ").decode(errors="replace")
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(entry)] = (comm, ppid, cmd)
    return out


def _measure(kinds: tuple[str, ...], before: set[int]) -> dict[str, list[tuple[int, int]]]:
    """Memory of the new processes whose name is one of ``kinds`` or a network helper's."""
    found: dict[str, list[tuple[int, int]]] = {}
    for pid, (comm, _ppid, _cmd) in _procs().items():
        if pid in before:
            continue
        if comm in kinds or comm in HELPERS:  # tools are measured one after the other: new helpers are its
            found.setdefault("helper" if comm in HELPERS else comm, []).append(_mem(pid))
    return found


def _report(tool: str, n: int, found: dict[str, list[tuple[int, int]]]) -> float:
    total_rss = 0.0
    for kind, values in sorted(found.items()):
        rss = statistics.mean(v[0] for v in values) / 1024
        pss = statistics.mean(v[1] for v in values) / 1024
        print(f"  {tool:6} {kind:12} x{len(values):<3} RSS {rss:6.1f} MB  PSS {pss:6.1f} MB")
        total_rss += rss * len(values) / n
    print(f"  {tool:6} per container: RSS {total_rss:.1f} MB")
    return total_rss


def _out(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="detached containers per tool")
    parser.add_argument("--exec", dest="execs", type=int, default=20, help="exec runs per tool")
    parser.add_argument("--network", default="", help="rl's and podman's --network (default: theirs)")
    parser.add_argument("--registry", default=os.environ.get("RL_TEST_REGISTRY", ""))
    parser.add_argument("--no-podman", action="store_true")
    args = parser.parse_args()
    if not args.registry:
        sys.exit("set RL_TEST_REGISTRY or --registry (python -m tests.fixtures push ADDR)")
    image = f"{args.registry}/rltest/busybox:latest"
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_DATA_HOME": str(home / ".local/share")}
        tools: list[Rl | Podman] = [Rl(work, env)]
        if not args.no_podman:
            tools.append(Podman(work, env, args.registry))
        net = ["--network", args.network] if args.network else []
        per_container: dict[str, float] = {}
        containers: dict[str, str] = {}
        try:
            for tool in tools:
                root = work / f"{tool.name}-store"
                tool.pull(root, image)
                before = set(_procs())
                ids = []
                for _ in range(args.n):
                    ids.append(_out(tool.argv(root, "run", "-d", *net, image, "sleep", "3600"), tool.env)
                               .splitlines()[-1])
                containers[tool.name] = ids[0]
                time.sleep(1.5)
                kinds = ("rl-monitor",) if tool.name == "rl" else ("conmon",)
                print(f"{tool.name}: {args.n} idle detached containers")
                per_container[tool.name] = _report(tool.name, args.n, _measure(kinds, before))
            times: dict[str, list[float]] = {t.name: [] for t in tools}
            for _ in range(args.execs):
                for tool in tools:
                    root = work / f"{tool.name}-store"
                    times[tool.name].append(_timed(tool.argv(root, "exec", containers[tool.name], "true"), tool.env))
            print(f"exec C true, median of {args.execs}:")
            for name, values in times.items():
                print(f"  {name:6} {statistics.median(values) * 1000:7.1f} ms")
            if "podman" in times:
                ratio = statistics.median(times["rl"]) / statistics.median(times["podman"])
                print(f"  rl/podman exec time: {ratio:.2f}x (target <= 0.5x)")
                print(f"  memory per container: rl {per_container['rl']:.1f} MB, "
                      f"podman {per_container['podman']:.1f} MB (target rl <= 12 MB)")
        finally:
            for tool in tools:
                root = work / f"{tool.name}-store"
                if tool.name == "rl":
                    subprocess.run(tool.argv(root, "system", "reset", "--force"), env=tool.env, capture_output=True,
                                   check=False)
                else:
                    subprocess.run(tool.argv(root, "rm", "-af", "-t", "0"), env=tool.env, capture_output=True,
                                   check=False)
                    tool.remove(root)
                tool.close()


if __name__ == "__main__":
    main()
