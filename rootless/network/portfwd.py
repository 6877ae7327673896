"""Published ports of a container on a user-defined network (podman's rootlessport, in miniature).

rl binds the host ports itself (in the host's network namespace, so "address already in use"
is reported by `rl run`), then starts ``python -m rootless.network.portfwd`` with the listening
sockets. The forwarder joins the rootless network namespace, where the container's address is
routable, and relays every TCP connection (and UDP datagrams, per client) to the container. Its
sockets stay in the namespace they were created in: listeners on the host, connections to the
container in the rootless netns.

    python -m rootless.network.portfwd '{"netns": PATH, "target": IP, "fds": [[FD, "tcp", PORT], ...]}'
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rootless.errors import HostError
from rootless.network.ports import PortMapping

UDP_IDLE = 60.0


def _bind(m: PortMapping) -> socket.socket:
    family = socket.AF_INET6 if ":" in m.host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if m.protocol == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((m.host_ip or "0.0.0.0", m.host_port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except OSError as e:
        s.close()
        from rootless.errors import ConflictError

        raise ConflictError(f"cannot publish {m}: {(e.strerror or str(e)).lower()}",
                            "publish another host port") from None
    return s


def start(mappings: list[PortMapping], target: str, netns_path: Path, run_dir: Path) -> tuple[int, int]:
    """Bind the host ports and start the forwarder; (pid, start time)."""
    from rootless.network.driver import start_time

    sockets = [_bind(m) for m in mappings]
    try:
        spec = {
            "netns": str(netns_path),
            "target": target,
            "fds": [[s.fileno(), m.protocol, m.container_port] for s, m in zip(sockets, mappings, strict=True)],
        }
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "portfwd.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rootless.network.portfwd", json.dumps(spec)],
                pass_fds=[s.fileno() for s in sockets],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as e:
        raise HostError(f"cannot start the port forwarder: {e.strerror or e}", "check that rl is installed intact") \
            from None
    finally:
        for s in sockets:
            s.close()
    started = 0
    for _ in range(200):
        started = start_time(proc.pid)
        if started:
            break
        time.sleep(0.001)
    return proc.pid, started


# ---------------------------------------------------------------- the forwarder process


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(262144):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve_tcp(client: socket.socket, target: str, port: int) -> None:
    try:
        upstream = socket.create_connection((target, port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


class _Udp:
    def __init__(self, listener: socket.socket, target: str, port: int, sel: selectors.BaseSelector) -> None:
        self.listener, self.target, self.port, self.sel = listener, target, port, sel
        self.flows: dict[Any, tuple[socket.socket, float]] = {}

    def from_client(self) -> None:
        data, addr = self.listener.recvfrom(65536)
        flow = self.flows.get(addr)
        if flow is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.connect((self.target, self.port))
            self.sel.register(up, selectors.EVENT_READ, ("udp-back", self, addr))
        else:
            up = flow[0]
        self.flows[addr] = (up, time.monotonic())
        with contextlib.suppress(OSError):
            up.send(data)

    def from_container(self, up: socket.socket, addr: Any) -> None:
        with contextlib.suppress(OSError):
            self.listener.sendto(up.recv(65536), addr)
        self.flows[addr] = (up, time.monotonic())

    def expire(self) -> None:
        now = time.monotonic()
        for addr, (up, last) in list(self.flows.items()):
            if now - last > UDP_IDLE:
                self.sel.unregister(up)
                up.close()
                del self.flows[addr]


def main(argv: list[str]) -> int:
    from rootless.runtime.syscalls import CLONE_NEWNET, SYSCALLS

    spec = json.loads(argv[0])
    listeners = [(socket.socket(fileno=fd), proto, port) for fd, proto, port in spec["fds"]]
    fd = os.open(spec["netns"], os.O_RDONLY | os.O_CLOEXEC)
    SYSCALLS.setns(fd, CLONE_NEWNET)
    os.close(fd)
    target = spec["target"]
    sel = selectors.DefaultSelector()
    udps = []
    for s, proto, port in listeners:
        if proto == "tcp":
            sel.register(s, selectors.EVENT_READ, ("tcp", port))
        else:
            u = _Udp(s, target, port, sel)
            udps.append(u)
            sel.register(s, selectors.EVENT_READ, ("udp", u))
    while True:
        for key, _ in sel.select(timeout=10):
            data = key.data
            if data[0] == "tcp":
                with contextlib.suppress(OSError):
                    client, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    threading.Thread(target=_serve_tcp, args=(client, target, data[1]), daemon=True).start()
            elif data[0] == "udp":
                data[1].from_client()
            else:
                data[1].from_container(key.fileobj, data[2])
        for u in udps:
            u.expire()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
