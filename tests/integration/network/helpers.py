"""Namespaces, servers and process checks for the network driver suite.

Only loopback and namespaces made here are used: a ``Sandbox`` is a forked child that unshared a
user and a network namespace (mapping only our own uid/gid to root) and waits until closed.
Commands run inside it through ``nsenter --user --net --target PID`` (root there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rootless.network.netns import NetNS, lo_up
from rootless.runtime.syscalls import CLONE_NEWNET, CLONE_NEWUSER, SYSCALLS
from tests.support import port_free

BUSYBOX = "/usr/bin/busybox"
HELPER_NAMES = ("pasta", "passt", "slirp4netns", "passt.avx2")


class Sandbox:
    """A child holding a fresh user + network namespace (uid/gid mapped to root, single ID)."""

    def __init__(self) -> None:
        uid, gid = os.getuid(), os.getgid()
        ready_r, ready_w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(ready_r)
                os.close(hold_w)
                SYSCALLS.set_pdeathsig(signal.SIGKILL)
                SYSCALLS.unshare(CLONE_NEWUSER | CLONE_NEWNET)
                Path("/proc/self/setgroups").write_text("deny")
                Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
                Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
                lo_up()  # as rl's runtime does when it creates a container's network namespace
                os.write(ready_w, b"1")
                os.read(hold_r, 1)  # until the parent closes
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(hold_r)
        ok = os.read(ready_r, 1)
        os.close(ready_r)
        self.pid = pid
        self._hold = hold_w
        if ok != b"1":
            self.close()
            raise RuntimeError("the namespace child failed")
        self.netns = NetNS.of_pid(pid)

    def close(self) -> None:
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1
            os.waitpid(self.pid, 0)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, *cmd: str) -> list[str]:
        return ["nsenter", "--preserve-credentials", "--user", "--net", "--target", str(self.pid), *cmd]

    def run(self, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*cmd), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def spawn(self, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def links(self) -> list[str]:
        out = self.run(BUSYBOX, "ip", "-o", "link").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]

    def wait_listening(self, port: int, proto: str = "tcp", timeout: float = 5) -> None:
        """Until something listens on ``port`` inside (read from /proc/net inside the namespace)."""
        table = "tcp" if proto == "tcp" else "udp"
        hexport = f":{port:04X}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(BUSYBOX, "cat", f"/proc/net/{table}", f"/proc/net/{table}6").stdout
            for line in out.splitlines()[1:]:
                cols = line.split()
                if len(cols) > 3 and cols[1].endswith(hexport) and (proto == "udp" or cols[3] == "0A"):
                    return
            time.sleep(0.02)
        raise AssertionError(f"nothing listens on {port}/{proto} inside the namespace")


def helper_pids(marker: str) -> list[int]:
    """Live pasta/slirp4netns processes and rl port forwarders whose command line mentions
    ``marker`` (our netns path)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rindex(")") + 2 :].split()[0]
        if state in "ZXx":
            continue
        helper = os.path.basename(argv[0].decode(errors="replace")) in HELPER_NAMES
        forwarder = b"rootless.network.portfwd" in argv
        if (helper or forwarder) and any(marker.encode() in a for a in argv):
            found.append(int(name))
    return found


def wait_no_helpers(marker: str, timeout: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := helper_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pids


@contextlib.contextmanager
def httpd(sandbox: Sandbox, root: Path, port: int = 80) -> Iterator[None]:
    """busybox httpd serving ``root`` on ``port`` inside the sandbox."""
    proc = sandbox.spawn(BUSYBOX, "httpd", "-f", "-p", str(port), "-h", str(root))
    try:
        sandbox.wait_listening(port)
        yield
    finally:
        proc.kill()
        proc.communicate()


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(b"echo:" + data, peer)
"""


@contextlib.contextmanager
def udp_echo(sandbox: Sandbox, port: int) -> Iterator[None]:
    """A UDP echo server inside the sandbox (busybox nc here has no -u)."""
    proc = sandbox.spawn(sys.executable, "-c", UDP_ECHO, str(port))
    try:
        sandbox.wait_listening(port, "udp")
        yield
    finally:
        proc.kill()
        proc.communicate()


def http_get(port: int, host: str = "127.0.0.1", path: str = "/", timeout: float = 5) -> str:
    """A tiny HTTP/1.0 GET on loopback; the body."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if head:
                return body.decode()
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"GET http://{host}:{port}{path} failed: {last}")


def udp_roundtrip(port: int, payload: bytes = b"ping", host: str = "127.0.0.1", timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(payload, (host, port))
            try:
                return s.recvfrom(65536)[0]
            except TimeoutError:
                continue
    raise AssertionError(f"no UDP answer from {host}:{port}")


class HostServer:
    """A TCP server on the host's 127.0.0.1 answering every connection with a fixed line."""

    def __init__(self, reply: bytes = b"hello from the host\n") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HostServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_port_free(port: int, proto: str = "tcp", timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not port_free(port, proto):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
