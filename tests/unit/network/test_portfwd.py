"""rl's port forwarder in-process: the splice relay (and its copy fallback) on loopback TCP, the
accept loop for TCP and UDP, host-side binding, and a forwarder that cannot start."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rootless.errors import ConflictError, HostError, UsageError
from rootless.network import portfwd
from rootless.network.driver import parse_mode, resolve_port_handler
from rootless.network.ports import PortMapping

MiB = 1 << 20


def _pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one loopback TCP connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.settimeout(20)
    server.settimeout(20)
    return client, server


class Relayed:
    """client <-> (a | relay | b) <-> server, the relay running in a thread."""

    def __init__(self, pump: Callable[[socket.socket, socket.socket], None] = portfwd.splice) -> None:
        self.client, self.a = _pair()
        self.b, self.server = _pair()
        for s in (self.a, self.b):
            s.settimeout(None)
        self.thread = threading.Thread(target=portfwd.relay, args=(self.a, self.b, pump), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.client.close()
        self.server.close()
        self.thread.join(10)

    def done(self, timeout: float = 10) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive() and self.a.fileno() == -1 and self.b.fileno() == -1


@pytest.fixture(params=["splice", "copy"])
def relayed(request: pytest.FixtureRequest) -> Iterator[Relayed]:
    r = Relayed(portfwd.splice if request.param == "splice" else portfwd.copy)
    try:
        yield r
    finally:
        r.close()


def _blob(size: int, seed: bytes) -> bytes:
    out = bytearray()
    block = hashlib.sha512(seed).digest() * 2048
    while len(out) < size:
        out += block
        block = block[1:] + block[:1]
    return bytes(out[:size])


def _send_and_close(sock: socket.socket, data: bytes) -> threading.Thread:
    def run() -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(MiB):
        chunks.append(chunk)
    return b"".join(chunks)


def test_large_transfer_both_ways_at_once(relayed: Relayed) -> None:
    up, down = _blob(48 * MiB, b"up"), _blob(32 * MiB, b"down")
    senders = [_send_and_close(relayed.client, up), _send_and_close(relayed.server, down)]
    got: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: got.setdefault("down", _read_all(relayed.client)), daemon=True)
    reader.start()
    got["up"] = _read_all(relayed.server)
    reader.join(20)
    for t in senders:
        t.join(20)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    assert relayed.done()


def test_half_close_keeps_the_other_direction(relayed: Relayed) -> None:
    relayed.client.sendall(b"question")
    relayed.client.shutdown(socket.SHUT_WR)
    assert _read_all(relayed.server) == b"question"  # EOF arrived: the relay shut b down for writing
    assert not relayed.done(0.2)  # ... and still carries the answer
    relayed.server.sendall(b"answer, " * 1000)
    relayed.server.close()
    assert _read_all(relayed.client) == b"answer, " * 1000
    assert relayed.done()


def test_a_reset_resets_the_other_side(relayed: Relayed) -> None:
    relayed.client.sendall(b"x" * 1000)
    assert relayed.server.recv(1000)
    portfwd._abort(relayed.client)  # RST
    try:
        rest = relayed.server.recv(100)
    except ConnectionResetError:
        rest = b""
    assert rest == b""
    assert relayed.done()
    with pytest.raises(OSError):  # the reset came through, not a clean EOF
        for _ in range(100):
            relayed.server.sendall(b"y" * 65536)
            time.sleep(0.01)


def test_splice_hands_over_the_pipe_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refuses to splice into the destination: what is already in the pipe still arrives."""
    real = os.splice
    calls = {"to_socket": 0}

    def fake(src: int, dst: int, count: int, *args: Any, **kwargs: Any) -> int:
        if not _is_pipe(src):
            return real(src, dst, count, *args, **kwargs)
        calls["to_socket"] += 1
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(portfwd.os, "splice", fake)
    r = Relayed()
    try:
        data = _blob(3 * MiB, b"fallback")
        sender = _send_and_close(r.client, data)
        assert _read_all(r.server) == data
        sender.join(10)
        r.server.close()
        assert r.done()
        assert calls["to_socket"] >= 1
    finally:
        r.close()


def _is_pipe(fd: int) -> bool:
    import stat

    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def test_pipes_are_enlarged_within_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    with open("/proc/sys/fs/pipe-max-size") as f:
        if int(f.read()) < portfwd.PIPE_SIZE:
            pytest.skip("fs.pipe-max-size is below 1 MiB here")
    budget = portfwd._PipeBudget(2 * portfwd.PIPE_SIZE)
    monkeypatch.setattr(portfwd, "_budget", budget)
    pipes = [portfwd._pipe() for _ in range(3)]
    try:
        assert [taken for _, _, taken in pipes] == [portfwd.PIPE_SIZE, portfwd.PIPE_SIZE, 0]
        assert fcntl.fcntl(pipes[0][1], fcntl.F_GETPIPE_SZ) == portfwd.PIPE_SIZE
        assert fcntl.fcntl(pipes[2][1], fcntl.F_GETPIPE_SZ) < portfwd.PIPE_SIZE
    finally:
        for r, w, taken in pipes:
            os.close(r)
            os.close(w)
            if taken:
                budget.give(taken)
    assert budget.used == 0


def test_relay_gives_the_pipes_back(relayed: Relayed) -> None:
    relayed.client.sendall(b"x")
    assert relayed.server.recv(1) == b"x"
    relayed.client.close()
    relayed.server.close()
    assert relayed.done()
    assert portfwd._budget.used == 0


# ---------------------------------------------------------------- the accept loop


class EchoServers:
    """A TCP and a UDP echo server on 127.0.0.1 (the "container")."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        for target in (self._tcp, self._udp):
            threading.Thread(target=target, daemon=True).start()

    def _tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(b"echo:" + data)

    def _udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65536)
            except OSError:
                return
            self.udp.sendto(b"echo:" + data, peer)

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def forwarding() -> Iterator[tuple[dict[str, int], EchoServers]]:
    """portfwd.serve in a thread: host ports (tcp, udp, refused) -> the echo servers."""
    echo = EchoServers()
    mappings = [
        PortMapping(echo.tcp.getsockname()[1], 0, "tcp", "127.0.0.1"),
        PortMapping(echo.udp.getsockname()[1], 0, "udp", "127.0.0.1"),
        PortMapping(_closed_port(), 0, "tcp", "127.0.0.1"),
    ]
    sockets = portfwd.bind(mappings)
    host = {name: s.getsockname()[1] for name, s in zip(("tcp", "udp", "refused"), sockets, strict=True)}
    stop = threading.Event()
    listeners = [(s, m.protocol, m.container_port, "127.0.0.1") for s, m in zip(sockets, mappings, strict=True)]
    thread = threading.Thread(target=portfwd.serve, args=(listeners, stop), daemon=True)
    thread.start()
    try:
        yield host, echo
    finally:
        stop.set()
        thread.join(5)
        for s in sockets:
            s.close()
        echo.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_tcp_and_udp(forwarding: tuple[dict[str, int], EchoServers]) -> None:
    host, _ = forwarding
    with socket.create_connection(("127.0.0.1", host["tcp"]), timeout=5) as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"echo:hello"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"ping", ("127.0.0.1", host["udp"]))
        assert u.recvfrom(100)[0] == b"echo:ping"
        u.sendto(b"again", ("127.0.0.1", host["udp"]))  # the same flow
        assert u.recvfrom(100)[0] == b"echo:again"


def test_serve_nothing_listening_inside_resets(forwarding: tuple[dict[str, int], EchoServers]) -> None:
    host, _ = forwarding
    # the reset may come as early as the connect
    with contextlib.suppress(ConnectionResetError), \
            socket.create_connection(("127.0.0.1", host["refused"]), timeout=5) as c:
        assert c.recv(100) == b""


# ---------------------------------------------------------------- binding and starting


def test_bind_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConflictError) as info:
            portfwd.bind([PortMapping(80, port, "tcp", "127.0.0.1")])
    assert info.value.line().startswith(f"port {port}/tcp is already in use on 127.0.0.1")
    assert "\n" not in info.value.line()


def test_bind_dual_stack_takes_both_families() -> None:
    (s,) = portfwd.bind([PortMapping(80, 0, "tcp")], dual_stack=True)
    with s:
        port = s.getsockname()[1]
        if s.family == socket.AF_INET6:
            assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_target_follows_the_host_address_family() -> None:
    assert portfwd.target_for(PortMapping(80, 8080), "10.0.2.100", "fd00::100") == "10.0.2.100"
    assert portfwd.target_for(PortMapping(80, 8080, host_ip="::1"), "10.0.2.100", "fd00::100") == "fd00::100"
    assert portfwd.target_for(PortMapping(80, 8080, host_ip="::1"), "10.0.2.100") == "10.0.2.100"
    assert portfwd.target_for(PortMapping(80, 8080), "", "fd00::100") == "fd00::100"


def test_forwarder_that_cannot_join_leaves_nothing(tmp_path: Any) -> None:
    port = _closed_port()
    m = PortMapping(80, port, "tcp", "127.0.0.1")
    before = _children()
    with pytest.raises(HostError) as info:
        portfwd.start([m], "10.0.2.100", tmp_path / "no-such-netns", tmp_path)
    line = info.value.line()
    assert line.startswith("cannot start the port forwarder: cannot join the network namespace")
    assert "no such file or directory" in line and "\n" not in line
    assert _children() == before
    with socket.socket() as s:  # the host port was released
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_forwarder_without_an_address_to_forward_to(tmp_path: Any) -> None:
    with pytest.raises(HostError, match="no address to forward to"):
        portfwd.start([PortMapping(80, _closed_port(), "tcp", "127.0.0.1")], "", "/proc/self/ns/net", tmp_path)


def _children() -> list[int]:
    me = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] not in "ZX":
            found.append(int(pid))
    return found


# ---------------------------------------------------------------- choosing the port handler


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("pasta", ("pasta", {})),
        ("pasta:port_handler=pasta", ("pasta", {"port_handler": "pasta"})),
        ("slirp4netns:port_handler=rootlesskit", ("slirp4netns", {"port_handler": "rootlesskit"})),
        ("mynet", ("mynet", {})),
        ("", ("", {})),
    ],
)
def test_parse_mode(mode: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_mode(mode) == expected


def test_parse_mode_rejects_unknown_options() -> None:
    with pytest.raises(UsageError, match="unknown option 'mtu=1500' in --network slirp4netns:mtu=1500"):
        parse_mode("slirp4netns:mtu=1500")


@pytest.mark.parametrize(
    ("value", "helper", "expected"),
    [("rl", "pasta", "rl"), ("", "pasta", "rl"), ("rootlesskit", "slirp4netns", "rl"),
     ("helper", "pasta", "pasta"), ("slirp4netns", "slirp4netns", "slirp4netns")],
)
def test_resolve_port_handler(value: str, helper: str, expected: str) -> None:
    assert resolve_port_handler(value, helper) == expected


def test_port_handler_of_another_helper_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown port handler 'slirp4netns' for pasta"):
        resolve_port_handler("slirp4netns", "pasta")
