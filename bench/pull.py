#!/usr/bin/env python3
"""Cold pulls from the local test registry: rl against podman, side by side.

    RL_TEST_REGISTRY=127.0.0.1:5000 python bench/pull.py [-n 3] [--images debian,multilayer]

Run as the unprivileged test user from the checkout root, with the standard fixture images (and
rltest/debian:bookworm) pushed to the registry (``python -m tests.fixtures push ADDR --debian-tar
FILE``). Each repeat pulls into a fresh, empty store; both tools already have their user namespace
running (its start-up is not what this measures). podman is configured through private files
(containers.conf with runtime "runc", storage.conf with the overlay driver, registries.conf marking
the local registry insecure) passed in CONTAINERS_CONF / CONTAINERS_STORAGE_CONF /
CONTAINERS_REGISTRIES_CONF, so the user's own podman setup is left alone.

Prints each run's wall time, the medians, and the ratio rl/podman per image.
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

IMAGES = {"debian": "rltest/debian:bookworm", "multilayer": "rltest/multilayer:latest"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="repeats per tool and image (default 3)")
    parser.add_argument("--images", default="debian,multilayer", help="comma-separated: " + ", ".join(IMAGES))
    parser.add_argument("--registry", default=os.environ.get("RL_TEST_REGISTRY", ""))
    args = parser.parse_args()
    if not args.registry:
        sys.exit("set RL_TEST_REGISTRY=host:port (or --registry)")
    if shutil.which("podman") is None:
        sys.exit("podman is not installed")
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "RL_"))}
        tools: list[Rl | Podman] = [Rl(work, env), Podman(work, env, args.registry)]
        results: dict[tuple[str, str], list[float]] = {}
        try:
            # Warm-up: start each tool's user namespace (and page in the programs) outside the timings.
            for tool in tools:
                warm = work / f"warm-{tool.name}"
                tool.pull(warm, f"{args.registry}/rltest/busybox:latest")
                tool.remove(warm)
            for image in args.images.split(","):
                ref = f"{args.registry}/{IMAGES[image]}"
                for i in range(args.n):
                    for tool in tools:  # interleaved, so drift of the host hits both alike
                        root = work / f"{tool.name}-{image}-{i}"
                        seconds = tool.pull(root, ref)
                        results.setdefault((image, tool.name), []).append(seconds)
                        print(f"{image:11} {tool.name:7} run {i + 1}: {seconds:7.3f}s", flush=True)
                        tool.remove(root)
        finally:
            for tool in tools:
                tool.close()
    print()
    print(f"{'image':11} {'rl median':>10} {'podman median':>14} {'rl/podman':>10}")
    for image in args.images.split(","):
        rl_m = statistics.median(results[(image, "rl")])
        pm_m = statistics.median(results[(image, "podman")])
        print(f"{image:11} {rl_m:9.3f}s {pm_m:13.3f}s {rl_m / pm_m:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
