#!/usr/bin/env python3
"""iperf3 between a container and the host through pasta, slirp4netns and host networking, rl
against podman side by side.

    RL_TEST_REGISTRY=127.0.0.1:5000 python bench/iperf.py [-t 5] [--runs 3] [--tools rl,podman]
        [--networks default,pasta,pasta:port_handler=pasta,slirp4netns,slirp4netns:port_handler=slirp4netns,host]

Run as the unprivileged test user from the checkout root. The test image (busybox plus the host's
/usr/bin/iperf3 and the shared libraries ldd names, i.e. Debian's iperf3 package as installed here)
is built and pushed to the registry first. The iperf3 server runs in the container with its port
published on 127.0.0.1 (with --network host it listens on the host's port itself); the client runs
on the host: "container->host" is iperf3 -R (the container sends), "host->container" the plain
direction. Prints Gbit/s for each tool, network and direction: the median of ``--runs`` rounds
(each round measures every tool and network once, so slow phases of a noisy machine hit all alike),
and each round's numbers. ``NAME:port_handler=NAME`` publishes the port through the helper itself
instead of the tool's own forwarder (podman 4.3 takes it for slirp4netns only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from tools import Podman, Rl  # noqa: E402

REPOSITORY = "rltest/iperf3"


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            paths.append(parts[2])
        elif parts and parts[0].startswith("/"):
            paths.append(parts[0])  # the dynamic loader
    return paths


def build_and_push(registry: str) -> str:
    """busybox + iperf3 and its libraries as a second layer; returns the reference."""
    from tests.fixtures.images import busybox_layer, image_build, push_image
    from tests.fixtures.oci import (
        DOCKER_CONFIG,
        DOCKER_LAYER_GZIP,
        DOCKER_MANIFEST,
        Dir,
        File,
        gzip_layer,
        make_config,
        make_layer,
    )
    from tests.fixtures.registry_client import RegistryClient

    binary = shutil.which("iperf3")
    if binary is None:
        sys.exit("iperf3 is not installed on this host (apt-get install iperf3)")
    entries = []
    dirs: set[str] = set()
    for path in [binary, *_libraries(binary)]:
        real = os.path.realpath(path)
        inside = path.lstrip("/")
        parent = os.path.dirname(inside)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        entries.append(File(inside, Path(real).read_bytes(), mode=0o755))
    entries = [Dir(d) for d in sorted(dirs)] + entries
    base = busybox_layer()
    extra = make_layer(entries)
    config = make_config(diff_ids=[base.diff_id, extra.diff_id], cmd=["iperf3", "-s"], exposed_ports=["5201/tcp"],
                         media_type=DOCKER_CONFIG)
    build = image_build("iperf3", REPOSITORY, "latest",
                        [gzip_layer(base, DOCKER_LAYER_GZIP), gzip_layer(extra, DOCKER_LAYER_GZIP)], config,
                        media_type=DOCKER_MANIFEST)
    push_image(RegistryClient(registry), build)
    return f"{registry}/{REPOSITORY}:latest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(port: int, seconds: int, reverse: bool) -> float:
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J", *(["-R"] if reverse else [])]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout or "{}")
    if "error" in data or out.returncode:
        raise RuntimeError(data.get("error") or out.stderr)
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def measure(tool: Rl | Podman, root: Path, image: str, network: str, seconds: int) -> dict[str, float]:
    port = _free_port()
    if network == "host":
        args = ["--network", "host", image, "iperf3", "-s", "-p", str(port)]
    else:  # "default": each tool's own default (rl: pasta with rl's forwarder; podman 4: slirp4netns with rootlessport)
        flags = [] if network == "default" else ["--network", network]
        args = [*flags, "-p", f"127.0.0.1:{port}:5201", image, "iperf3", "-s"]
    proc = subprocess.Popen(tool.argv(root, "run", "--rm", "--init", *args), env=tool.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # a one-second warm-up run that also tells the server is up
            try:
                _client(port, 1, False)
                break
            except (RuntimeError, ValueError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{tool.name} --network {network}: the server did not start: "
                                       f"{proc.stderr.read() if proc.stderr else ''}") from None
                time.sleep(0.3)
        return {"container->host": _client(port, seconds, True), "host->container": _client(port, seconds, False)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


NETWORKS = "default,pasta,pasta:port_handler=pasta,slirp4netns,slirp4netns:port_handler=slirp4netns,host"
DIRECTIONS = ("container->host", "host->container")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-t", type=int, default=5, help="seconds per direction (default 5)")
    parser.add_argument("--runs", type=int, default=1, help="rounds; the median is reported (default 1)")
    parser.add_argument("--networks", default=NETWORKS)
    parser.add_argument("--tools", default="rl,podman")
    parser.add_argument("--registry", default=os.environ.get("RL_TEST_REGISTRY", ""))
    args = parser.parse_args()
    if not args.registry:
        sys.exit("set RL_TEST_REGISTRY=host:port (or --registry)")
    image = build_and_push(args.registry)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rl-bench-iperf-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "RL_"))}
        wanted = args.tools.split(",")
        tools: list[Rl | Podman] = [Rl(work, env)] if "rl" in wanted else []
        if "podman" in wanted:
            if shutil.which("podman"):
                tools.append(Podman(work, env, args.registry))
            else:
                print("podman is not installed: measuring rl alone")
        try:
            for tool in tools:
                tool.pull(work / tool.name, image)
            for _ in range(args.runs):
                for network in args.networks.split(","):
                    for tool in tools:
                        try:
                            r = measure(tool, work / tool.name, image, network, args.t)
                        except RuntimeError as e:
                            print(f"{tool.name} {network}: {e}")
                            continue
                        results.setdefault((tool.name, network), []).append(r)
        finally:
            for tool in tools:
                with_rl = isinstance(tool, Rl)
                if with_rl:
                    subprocess.run(tool.argv(work / tool.name, "system", "reset", "--force"), env=tool.env,
                                   capture_output=True)
                else:
                    tool.remove(work / tool.name)
                tool.close()
    width = max([len(n) for _, n in results] + [7])
    print(f"{'tool':7} {'network':{width}} {DIRECTIONS[0]:>16} {DIRECTIONS[1]:>16}  rounds (Gb/s)")
    for (name, network), rounds in results.items():
        medians = [statistics.median(r[d] for r in rounds) for d in DIRECTIONS]
        each = "  ".join(f"{r[DIRECTIONS[0]]:.2f}/{r[DIRECTIONS[1]]:.2f}" for r in rounds)
        print(f"{name:7} {network:{width}} {medians[0]:>11.2f} Gb/s {medians[1]:>11.2f} Gb/s  {each}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
