"""User-defined networks, container:NAME, rl port: real namespaces, bridges and veths, as a user.

Containers run in the foreground (Popen'd `rl run --init ...`) and signal readiness by touching a
file in a bind-mounted directory; every test ends with no helper left running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import RunRl, rl_command

pytestmark = pytest.mark.system


def ref(fixture_images: dict[str, Any], name: str) -> str:
    return str(fixture_images[name].reference)


class Containers:
    """Foreground containers started in the background of the test, stopped at its end."""

    def __init__(self, rl_env: dict[str, str], tmp_path: Path) -> None:
        self.env = rl_env
        self.tmp = tmp_path
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str, command: str, image: str) -> subprocess.Popen[str]:
        """`rl run --rm --init -v DIR:/ready ARGS IMAGE sh -c 'touch /ready/ok; COMMAND'`, once ready."""
        ready = self.tmp / f"ready-{len(self.procs)}"
        ready.mkdir()
        proc = subprocess.Popen(
            [*rl_command(), "run", "--rm", "--init", "-v", f"{ready}:/ready", *args, image,
             "sh", "-c", f"touch /ready/ok; {command}"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not (ready / "ok").exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"rl run {' '.join(args)} exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                pytest.fail(f"rl run {' '.join(args)} did not start")
            time.sleep(0.05)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.fixture
def containers(rl: RunRl, rl_env: dict[str, str], tmp_path: Path,
               fixture_images: dict[str, Any]) -> Iterator[Containers]:
    rl("pull", "-q", ref(fixture_images, "busybox"))
    c = Containers(rl_env, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def _helpers(rl_env: dict[str, str]) -> list[str]:
    """pasta/slirp4netns/port forwarders of this test's runtime dir still running."""
    runtime = rl_env["XDG_RUNTIME_DIR"]
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if runtime in cmdline and ("pasta" in cmdline or "slirp4netns" in cmdline or "portfwd" in cmdline):
            found.append(cmdline)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_containers_on_one_network_talk_by_name_and_other_networks_are_isolated(
        rl: RunRl, rl_env: dict[str, str], containers: Containers, fixture_images: dict[str, Any],
        tmp_path: Path) -> None:
    busybox = ref(fixture_images, "busybox")
    assert rl("network", "create", "front").out == "front\n"
    rl("network", "create", "back")
    assert rl("network", "ls", "--format", "{{.Name}} {{.Subnet}}").lines == ["back 10.89.1.0/24",
                                                                          "front 10.89.0.0/24"]
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from web\n")
    containers.start("--name", "web", "--network", "front", "-v", f"{www}:/www:ro",
                     command="exec httpd -f -p 80 -h /www", image=busybox)
    info = json.loads(rl("network", "inspect", "front").out)[0]
    (web,) = info["Containers"].values()
    assert web["Name"] == "web" and web["IPv4Address"] == "10.89.0.2/24"
    web_ip = "10.89.0.2"

    # same network: by name (the peer's /etc/hosts line) and by address
    out = rl("run", "--rm", "--network", "front", busybox, "sh", "-c",
             "wget -qO- http://web/index.html; ping -c1 -W2 web >/dev/null && echo ping-ok; "
             "ip route | grep default").lines
    assert out[:2] == ["hello from web", "ping-ok"]
    assert out[2].startswith("default via 10.89.0.1 dev eth0")

    # another network: no route between the bridges, and no name either
    out = rl("run", "--rm", "--network", "back", busybox, "sh", "-c",
             f"ping -c1 -W2 {web_ip} >/dev/null 2>&1 && echo reached || echo isolated; "
             "grep -c web /etc/hosts; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'", rc=None).lines
    assert out == ["isolated", "0", "inet 10.89.1.2/24"]

    # a network in use is not removed; prune keeps it too
    err = rl("network", "rm", "front", rc=None).err
    assert "in use by web" in err
    containers.stop_all()
    assert sorted(rl("network", "prune", "-f").lines) == ["back", "front"]
    assert rl("network", "ls", "-q").out == ""
    assert _helpers(rl_env) == []


def test_container_network_shares_the_namespace(rl: RunRl, containers: Containers,
                                                 fixture_images: dict[str, Any]) -> None:
    busybox = ref(fixture_images, "busybox")
    rl("network", "create", "pod")
    containers.start("--name", "first", "--network", "pod", command="exec httpd -f -p 127.0.0.1:8080 -h /etc",
                     image=busybox)
    # the joiner sees first's interfaces and first's loopback services, and its hosts file
    out = rl("run", "--rm", "--network", "container:first", busybox, "sh", "-c",
             "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; wget -qO- http://127.0.0.1:8080/hostname >/dev/null "
             "&& echo loopback-shared; grep -c first /etc/hosts").lines
    assert out == ["inet 10.89.0.2/24", "loopback-shared", "1"]
    err = rl("run", "--rm", "--network", "container:nosuch", busybox, "true", rc=125).err
    assert "no such container: nosuch" in err
    err = rl("run", "--rm", "--network", "container:first", "-p", "8081:80", busybox, "true", rc=125).err
    assert "cannot publish ports with --network container:NAME" in err


def test_publish_connect_disconnect_and_port(rl: RunRl, rl_env: dict[str, str], containers: Containers,
                                             fixture_images: dict[str, Any], tmp_path: Path) -> None:
    busybox = ref(fixture_images, "busybox")
    rl("network", "create", "one")
    rl("network", "create", "two")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("published\n")
    port = _free_port()
    containers.start("--name", "web", "--network", "one", "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www:ro",
                     command="exec httpd -f -p 80 -h /www", image=busybox)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
        assert r.read() == b"published\n"
    assert rl("port", "web").lines == [f"80/tcp -> 127.0.0.1:{port}"]
    assert rl("port", "web", "80/tcp").lines == [f"127.0.0.1:{port}"]
    assert "no public port '81/tcp'" in rl("port", "web", "81", rc=125).err

    containers.start("--name", "other", "--network", "two", command="exec sleep 60", image=busybox)
    probe = ["run", "--rm", "--network", "container:other", busybox, "sh", "-c",
             # (busybox wget -T crashes: ping decides, then wget by name)
             "ping -c1 -W2 10.89.0.2 >/dev/null 2>&1 && wget -qO- http://web/index.html || echo unreachable"]
    assert rl(*probe).lines == ["unreachable"]
    rl("network", "connect", "one", "other")
    assert rl(*probe).lines == ["published"]
    assert rl("network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", "one").out.split() \
        in (["web", "other"], ["other", "web"])
    rl("network", "disconnect", "one", "other")
    assert rl(*probe).lines == ["unreachable"]
    containers.stop_all()
    with socket.socket() as s:  # the forwarder is gone with the container
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    rl("network", "rm", "one", "two")
    rl("system", "migrate")
    assert _helpers(rl_env) == []
