#!/usr/bin/env python3
"""`run --rm --network none busybox true`: rl against podman, side by side.

    RL_TEST_REGISTRY=127.0.0.1:5000 python bench/run.py [-n 20] [--network none|default|MODE]

Run as the unprivileged test user from the checkout root with the fixture images pushed to the
registry (``python -m tests.fixtures push ADDR``). The image is pulled once into each tool's store
and each tool's user namespace is started before the timings; the runs are interleaved so that the
host's drift hits both alike. Prints the medians and the ratio rl/podman.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tools import Podman, Rl


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs per tool (default 20)")
    parser.add_argument("--registry", default=os.environ.get("RL_TEST_REGISTRY", ""))
    parser.add_argument("--network", default="none",
                        help="none (the default, issue #4's measure), default (each tool's own default) or a mode")
    args = parser.parse_args()
    net = [] if args.network == "default" else ["--network", args.network]
    if not args.registry:
        sys.exit("set RL_TEST_REGISTRY=host:port (or --registry)")
    image = f"{args.registry}/rltest/busybox:latest"
    with tempfile.TemporaryDirectory(prefix="rl-bench-run-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "RL_"))}
        tools: list[Rl | Podman] = [Rl(work, env)]
        if shutil.which("podman"):
            tools.append(Podman(work, env, args.registry))
        else:
            print("podman is not installed: measuring rl alone")
        times: dict[str, list[float]] = {t.name: [] for t in tools}
        try:
            for tool in tools:
                tool.pull(work / tool.name, image)
                tool.run(work / tool.name, "--rm", *net, image, "true")
            for _ in range(args.n):
                for tool in tools:
                    times[tool.name].append(tool.run(work / tool.name, "--rm", *net, image, "true"))
        finally:
            for tool in tools:
                tool.remove(work / tool.name)
                tool.close()
    for name, values in times.items():
        print(f"{name:7} median {statistics.median(values):.3f}s  min {min(values):.3f}s  max {max(values):.3f}s")
    if "podman" in times:
        ratio = statistics.median(times["rl"]) / statistics.median(times["podman"])
        print(f"rl/podman: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
