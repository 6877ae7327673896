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
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import port_free
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


def _helpers(rl_env: dict[str, str], shared: bool = False) -> list[str]:
    """pasta/slirp4netns/port forwarders of this test's rl still running (their command lines name the
    runtime dir, or the short directory under /tmp that rl uses instead when that path is long); the
    rootless netns' own helper, shared by every container on a bridge, only when ``shared``."""
    from rootless.engine.env import EngineEnv
    from rootless.engine.network import net_run_dir

    runtime = rl_env["XDG_RUNTIME_DIR"]
    markers = {runtime, str(net_run_dir(EngineEnv(Path(runtime), Path(runtime) / "rl"), "x").parent)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if any(m in cmdline for m in markers) and (
                "pasta" in cmdline or "slirp4netns" in cmdline or "portfwd" in cmdline) and (
                shared or "/rootless-netns/" not in cmdline):
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
    assert rl("network", "ls", "--format", "{{.Name}} {{.Subnet}}").lines == [
        "bridge 10.88.0.0/16", "back 10.89.1.0/24", "front 10.89.0.0/24"]
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
    assert rl("network", "ls", "--format", "{{.Name}}").lines == ["bridge"]
    assert _helpers(rl_env, shared=True) == []


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
    assert _helpers(rl_env, shared=True) == []


def _forwarders(rl_env: dict[str, str]) -> list[str]:
    return [c for c in _helpers(rl_env) if "rootless.network.portfwd" in c]


def _get(port: int) -> bytes:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)




def test_pasta_publishes_through_rl_forwarder(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any],
                                              tmp_path: Path) -> None:
    busybox = ref(fixture_images, "busybox")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("relayed\n")
    port, udp = _free_port(), _free_port()
    rl("run", "-d", "-q", "--name", "web", "--network", "pasta", "-p", f"127.0.0.1:{port}:80",
       "-p", f"127.0.0.1:{udp}:5353/udp", "-v", f"{www}:/www:ro", busybox, "httpd", "-f", "-p", "80", "-h", "/www")
    try:
        assert _get(port) == b"relayed\n"
        assert len(_forwarders(rl_env)) == 1
        pasta = [c for c in _helpers(rl_env) if c.split()[0].endswith("pasta")]
        assert len(pasta) == 1 and " -t none -u none " in pasta[0]  # pasta forwards nothing itself
        assert rl("port", "web").lines == [f"80/tcp -> 127.0.0.1:{port}", f"5353/udp -> 127.0.0.1:{udp}"]
        ports = json.loads(rl("inspect", "-f", "{{json .NetworkSettings.Ports}}", "web").out)
        assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        taken = rl("run", "--rm", "-q", "-p", f"127.0.0.1:{port}:80", busybox, "true", rc=125)
        assert taken.err.count("\n") == 1 and f"port {port}/tcp is already in use on 127.0.0.1" in taken.err
    finally:
        rl("rm", "-f", "web")
    assert _forwarders(rl_env) == [] and _helpers(rl_env) == []
    assert port_free(port)
    # a container that exits by itself: its monitor stops the forwarder
    rl("run", "-d", "-q", "--name", "brief", "-p", f"127.0.0.1:{port}:80", busybox, "sleep", "1")
    deadline = time.monotonic() + 20
    while _helpers(rl_env) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _helpers(rl_env) == [] and port_free(port)


@pytest.mark.parametrize("network", ["pasta", "slirp4netns"])
def test_helper_port_handler(rl: RunRl, rl_env: dict[str, str], containers: Containers,
                             fixture_images: dict[str, Any], tmp_path: Path, network: str) -> None:
    """--network NAME:port_handler=NAME: the helper forwards the ports itself, no rl forwarder runs;
    the network.port_handler setting says the same for every container."""
    busybox = ref(fixture_images, "busybox")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(f"{network} itself\n")
    port = _free_port()
    containers.start("--name", "own", "--network", f"{network}:port_handler={network}", "-p", f"127.0.0.1:{port}:80",
                     "-v", f"{www}:/www:ro", command="exec httpd -f -p 80 -h /www", image=busybox)
    assert _get(port) == f"{network} itself\n".encode()
    assert _forwarders(rl_env) == []
    assert rl("port", "own").lines == [f"80/tcp -> 127.0.0.1:{port}"]
    containers.stop_all()
    assert _helpers(rl_env) == [] and port_free(port)

    port = _free_port()
    containers.start("--name", "conf", "--network", network, "-p", f"127.0.0.1:{port}:80", "-v", f"{www}:/www:ro",
                     command="exec httpd -f -p 80 -h /www", image=busybox)
    assert _get(port) == f"{network} itself\n".encode()
    assert len(_forwarders(rl_env)) == 1  # the default: rl's forwarder
    containers.stop_all()
    assert _helpers(rl_env) == [] and port_free(port)


def test_port_handler_setting_and_mistakes(rl: RunRl, rl_env: dict[str, str], containers: Containers,
                                           fixture_images: dict[str, Any], tmp_path: Path) -> None:
    busybox = ref(fixture_images, "busybox")
    port = _free_port()
    containers.env = {**rl_env, "RL_NETWORK_PORT_HANDLER": "helper"}
    containers.start("--network", "slirp4netns", "-p", f"127.0.0.1:{port}:80", command="exec sleep 60",
                     image=busybox)
    assert _forwarders(rl_env) == [] and len(_helpers(rl_env)) == 1
    containers.stop_all()
    bad = rl("run", "--rm", "--network", "pasta:port_handler=slirp4netns", busybox, "true", rc=125)
    assert bad.err.count("\n") == 1 and "unknown port handler 'slirp4netns' for pasta" in bad.err
    bad = rl("run", "--rm", "--network", "slirp4netns:mtu=1500", busybox, "true", rc=125)
    assert bad.err.count("\n") == 1 and "unknown option 'mtu=1500'" in bad.err
    assert _helpers(rl_env) == []


def test_default_network_is_one_shared_helper(rl: RunRl, rl_env: dict[str, str], containers: Containers,
                                               fixture_images: dict[str, Any]) -> None:
    """No --network: the default network `bridge`, one helper for every container on it (none of
    their own), addresses out of 10.88.0.0/16, reachable by address but not by name, the host
    reachable through host.containers.internal; the helper stays until prune stops it."""
    busybox = ref(fixture_images, "busybox")
    containers.start("--name", "first", command="exec sleep 60", image=busybox)
    containers.start("--name", "second", command="exec sleep 60", image=busybox)
    assert _helpers(rl_env) == []
    shared = _helpers(rl_env, shared=True)
    assert len(shared) == 1 and "/rootless-netns/" in shared[0]
    facts = json.loads(rl("info", "--format", "json").out)["network"]
    assert facts["default"] == "bridge" and facts["rootlessNetns"]["running"]
    assert facts["rootlessNetns"]["helper"] in ("pasta", "slirp4netns") and facts["rootlessNetns"]["helperPid"] > 0
    first = json.loads(rl("inspect", "first").out)[0]
    assert first["HostConfig"]["NetworkMode"] == "bridge"
    settings = first["NetworkSettings"]
    assert list(settings["Networks"]) == ["bridge"] and settings["IPAddress"].startswith("10.88.")
    assert settings["Gateway"] == "10.88.0.1" and settings["IPPrefixLen"] == 16
    info = json.loads(rl("network", "inspect", "bridge").out)[0]
    assert sorted(c["Name"] for c in info["Containers"].values()) == ["first", "second"]

    received: list[bytes] = []

    def serve(server: socket.socket) -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(16))  # then close: nc ends

    with socket.socket() as server:  # a server on the host's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        thread = threading.Thread(target=serve, args=(server,), daemon=True)
        thread.start()
        out = rl("exec", "second", "sh", "-c",
                 f"ping -c1 -W2 {settings['IPAddress']} >/dev/null && echo by-address; "
                 "grep -c first /etc/hosts; "
                 f"echo hi | nc host.containers.internal {port} && echo host-ok", rc=None).lines
        thread.join(10)
    assert out == ["by-address", "0", "host-ok"] and received == [b"hi\n"]

    err = rl("network", "rm", "bridge", rc=125).err
    assert err.count("\n") == 1 and "bridge is a pre-defined network and cannot be removed" in err
    containers.stop_all()
    assert len(_helpers(rl_env, shared=True)) == 1  # it outlives the containers, as the pause process does
    assert rl("network", "prune", "-f").out == ""
    assert _helpers(rl_env, shared=True) == []
    assert not json.loads(rl("info", "--format", "json").out)["network"]["rootlessNetns"]["running"]
    assert rl("network", "ls", "--format", "{{.Name}} {{.Driver}}").lines == ["bridge bridge"]


def test_restart_on_the_default_network_keeps_a_working_link(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    """A restart makes a veth pair of the same name while the old one's deletion may still be under
    way: the new link must survive it (the old one is deleted by its interface index)."""
    busybox = ref(fixture_images, "busybox")
    rl("run", "-d", "-q", "--name", "again", busybox, "sleep", "60")
    for _ in range(3):
        rl("restart", "-t", "0", "again")
    address = rl("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "again").out.strip()
    time.sleep(0.5)  # any deletion left behind has run by now
    out = rl("run", "--rm", busybox, "sh", "-c", f"ping -c1 -W2 {address} >/dev/null && echo reached").lines
    assert out == ["reached"]
    rl("rm", "-f", "again")
