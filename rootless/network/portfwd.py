"""rl's own port handler (podman's rootlessport, in miniature): the published ports of pasta and
slirp4netns containers (unless ``port_handler=pasta|slirp4netns`` asks for the helper's own) and of
containers on user-defined networks.

rl binds the host ports itself (in the host's network namespace, so "address already in use" is
reported by `rl run`), then starts ``python -m rootless.network.portfwd`` with the listening
sockets, before the helper: the forwarder's start-up overlaps pasta's or slirp4netns'. It joins the
target network namespace at once (its user namespace first when one is named): the container's own,
or the rootless netns where a bridge container's address is routable. Once the helper configured the
interface, rl sends it the container's addresses on a pipe; it answers "ok" (or why not) on another
and relays. Its sockets stay in the namespace they were created in: listeners on the host,
connections to the container inside.

- TCP: each accepted connection gets its own connection to the target and two threads, one per
  direction, moving the bytes with splice(2) socket -> pipe -> socket (nothing is copied through
  user space; the pipes of the first 8 connections at a time are enlarged to 1 MiB when the kernel
  allows: +30% throughput over the default 64 KiB). The end of one direction
  becomes shutdown(SHUT_WR) on the other side; both sockets are closed when both directions are
  done. A reset or error on either side resets the other one too. recv/sendall when splice is
  refused (EINVAL, ENOSYS).
- UDP: one connected socket inside per client address, dropped after a minute without traffic.

The target is the container's interface address, as with docker: a published port reaches a server
listening on the container's address or on all addresses, not one bound to its 127.0.0.1. The
container sees the connections coming from its own address, never from 127.0.0.1, so a service that
trusts localhost is not opened to remote clients (podman's CVE-2021-20199). pasta's own forwarding
instead connects host-loopback clients to the container's loopback.

    python -m rootless.network.portfwd '{"netns": PATH, "userns": PATH|null, "ready": FD, "targets": FD,
                                         "fds": [[FD, "tcp", PORT], ...]}'
    then on the targets pipe: '["10.0.2.100", ...]\n' (one address per fd)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the forwarder process imports as little as it can: it starts while the helper does
    from pathlib import Path

    from rootless.network.ports import PortMapping

UDP_IDLE = 60.0
PIPE_SIZE = 1 << 20
PIPE_BUDGET = 16 << 20  # 8 connections with 1 MiB pipes both ways; later ones get the default 64 KiB
CONNECT_TIMEOUT = 10.0
READY_TIMEOUT = 10.0
THREAD_STACK = 256 * 1024
_NO_SPLICE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


# ---------------------------------------------------------------- in rl: bind, start


def bind(mappings: list[PortMapping], dual_stack: bool = False) -> list[socket.socket]:
    """Listening (TCP) or bound (UDP) host sockets, one per mapping, in this network namespace.

    ``dual_stack``: a mapping without a host address takes IPv6 and IPv4 on one socket ([::], not
    v6-only) when the host has IPv6, else 0.0.0.0."""
    sockets: list[socket.socket] = []
    try:
        for m in mappings:
            sockets.append(_bind(m, dual_stack))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


def _bind(m: PortMapping, dual_stack: bool) -> socket.socket:
    from rootless.network import ports

    kind = socket.SOCK_STREAM if m.protocol == "tcp" else socket.SOCK_DGRAM
    if not m.host_ip and dual_stack:
        try:
            return _listen(socket.socket(socket.AF_INET6, kind), "::", m)
        except OSError as e:
            if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise ports.port_conflict(m, e) from None
            # no IPv6 here: IPv4 alone
    try:
        return _listen(socket.socket(m.family, kind), m.host_ip or "0.0.0.0", m)
    except OSError as e:
        raise ports.port_conflict(m, e) from None


def _listen(s: socket.socket, ip: str, m: PortMapping) -> socket.socket:
    try:
        if s.family == socket.AF_INET6 and not m.host_ip:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if m.protocol == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        s.bind((ip, m.host_port))
        if m.protocol == "tcp":
            s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def target_for(m: PortMapping, ipv4: str, ipv6: str = "") -> str:
    """The container address a mapping relays to: the same family as its host address when there is one."""
    if ":" in m.host_ip:
        return ipv6 or ipv4
    return ipv4 or ipv6


class Forwarder:
    """The forwarder process of one container, started before the container's addresses are known.

    ``Forwarder(...)`` binds the host ports (closed again in this process once handed over) and starts
    the process, which joins the namespace at once: its start-up overlaps the helper's.
    ``serve(ipv4, ipv6)`` hands it the addresses and waits until it relays; ``cancel()`` stops it.
    Errors are RLError (port in use, no address, the forwarder failed), and nothing is left running
    then."""

    def __init__(
        self,
        mappings: list[PortMapping],
        netns_path: str | Path,
        run_dir: Path | None,
        *,
        userns: str | None = None,
        dual_stack: bool = False,
    ) -> None:
        self.mappings = list(mappings)
        self.pid = 0
        self._answer = self._targets = -1
        sockets = bind(self.mappings, dual_stack)
        theirs: list[int] = []  # the child's ends of the two pipes
        try:
            self._answer, ready_w = os.pipe2(os.O_CLOEXEC)
            theirs.append(ready_w)
            targets_r, self._targets = os.pipe2(os.O_CLOEXEC)
            theirs.append(targets_r)
            fds = [[s.fileno(), m.protocol, m.container_port] for s, m in zip(sockets, self.mappings, strict=True)]
            spec = {"netns": str(netns_path), "userns": userns, "ready": ready_w, "targets": targets_r, "fds": fds}
            self.pid = _spawn(spec, [*(s.fileno() for s in sockets), *theirs], run_dir)
        except BaseException:
            self._close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
            for s in sockets:
                s.close()

    def serve(self, ipv4: str, ipv6: str = "", timeout: float = READY_TIMEOUT) -> tuple[int, int]:
        """Relay to the container's addresses from now on; (pid, start time)."""
        from rootless.errors import HostError
        from rootless.network.driver import start_time

        try:
            targets = [target_for(m, ipv4, ipv6) for m in self.mappings]
            for m, address in zip(self.mappings, targets, strict=True):
                if not address:
                    raise HostError(f"cannot publish {m}: the container has no address to forward to",
                                    "check the container's network with 'rl inspect'")
            with contextlib.suppress(BrokenPipeError):  # it failed already: its answer says why
                os.write(self._targets, (json.dumps(targets) + "\n").encode())
            answer = _wait_ready(self._answer, timeout)
            if answer != "ok":
                raise HostError(f"cannot start the port forwarder: {answer}",
                                "see portfwd.log in the container's network run directory, or use"
                                " --network pasta:port_handler=pasta (or slirp4netns:port_handler=slirp4netns)")
            started = start_time(self.pid)
            if not started:
                raise HostError("cannot start the port forwarder: it exited at once",
                                "see portfwd.log in the container's network run directory")
        except BaseException:
            self.cancel()
            raise
        self._close()
        return self.pid, started

    def cancel(self) -> None:
        """Stop the process (when it did not get to serve, or setup failed later)."""
        from rootless.network.driver import stop_helper

        self._close()
        if self.pid:
            stop_helper(self.pid, 0)
            self.pid = 0

    def _close(self) -> None:
        for fd in (self._answer, self._targets):
            if fd >= 0:
                os.close(fd)
        self._answer = self._targets = -1


def start(
    mappings: list[PortMapping],
    target: str,
    netns_path: str | Path,
    run_dir: Path | None,
    *,
    target6: str = "",
    userns: str | None = None,
    dual_stack: bool = False,
    timeout: float = READY_TIMEOUT,
) -> tuple[int, int]:
    """Bind, start and serve in one go (user-defined networks, where the address is known first)."""
    forwarder = Forwarder(mappings, netns_path, run_dir, userns=userns, dual_stack=dual_stack)
    return forwarder.serve(target, target6, timeout)


def _spawn(spec: dict[str, Any], keep: list[int], run_dir: Path | None) -> int:
    """``python -S -m rootless.network.portfwd SPEC``: without site (and its .pth files), rl's own
    package found through PYTHONPATH; it needs nothing else."""
    import subprocess

    import rootless
    from rootless.errors import HostError

    root = os.path.dirname(os.path.dirname(os.path.abspath(rootless.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
        log_path = str(run_dir / "portfwd.log") if run_dir is not None else os.devnull
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-m", "rootless.network.portfwd", json.dumps(spec)],
                pass_fds=keep,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as e:
        raise HostError(f"cannot start the port forwarder: {(e.strerror or str(e)).lower()}",
                        "check that rl is installed intact") from None
    return proc.pid


def _wait_ready(fd: int, timeout: float) -> str:
    """The forwarder's first line: "ok" or why it failed (EOF: it died)."""
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return f"no answer within {timeout:g}s"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    line = data.decode(errors="replace").strip().splitlines()
    return line[0] if line else "it exited at once"


# ---------------------------------------------------------------- TCP: splice, copy, relay


class _PipeBudget:
    """How many pipe bytes beyond the default size this process has: the kernel charges every pipe
    page to the user (fs.pipe-user-pages-soft, 64 MiB by default), and a user over it gets tiny pipes
    everywhere. The first connections get 1 MiB pipes (2 per connection), the others the default."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self.lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self.lock:
            if self.used + size > self.total:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self.lock:
            self.used -= size


_budget = _PipeBudget(PIPE_BUDGET)


def _pipe() -> tuple[int, int, int]:
    """A pipe for splice, enlarged to PIPE_SIZE while the budget lasts and the kernel allows (it
    refuses over fs.pipe-max-size or the user's soft limit); (read end, write end, bytes taken
    from the budget)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    if not _budget.take(PIPE_SIZE):
        return r, w, 0
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        _budget.give(PIPE_SIZE)
        return r, w, 0
    return r, w, PIPE_SIZE


def copy(src: socket.socket, dst: socket.socket) -> None:
    """Bytes from ``src`` to ``dst`` until EOF, through user space."""
    while data := src.recv(262144):
        dst.sendall(data)


def splice(src: socket.socket, dst: socket.socket) -> None:
    """Bytes from ``src`` to ``dst`` until EOF, socket -> pipe -> socket without a copy; falls back to
    ``copy`` (after handing over what is in the pipe) when the kernel refuses to splice."""
    r, w, taken = _pipe()
    size = taken or 65536
    pending = 0
    try:
        s_in, s_out = src.fileno(), dst.fileno()
        while True:
            pending = os.splice(s_in, w, size, flags=os.SPLICE_F_MOVE)
            if not pending:
                return
            while pending:
                pending -= os.splice(r, s_out, pending, flags=os.SPLICE_F_MOVE)
    except OSError as e:
        if e.errno not in _NO_SPLICE:
            raise
        while pending:
            data = os.read(r, pending)
            dst.sendall(data)
            pending -= len(data)
        copy(src, dst)
    finally:
        os.close(r)
        os.close(w)
        if taken:
            _budget.give(taken)


def relay(a: socket.socket, b: socket.socket, pump: Any = splice) -> None:
    """Relay between two connected TCP sockets until both directions are done; closes both.

    Clean EOF on one side: shutdown(SHUT_WR) on the other, the other direction goes on (half-close).
    An error (reset, broken pipe) on either side: both are shut down, and closed with a reset."""
    failed = threading.Event()

    def one_way(src: socket.socket, dst: socket.socket) -> None:
        try:
            pump(src, dst)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            failed.set()
            for s in (src, dst):  # wakes the other direction, blocked in splice or recv
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=one_way, args=(b, a), daemon=True)
    back.start()
    one_way(a, b)
    back.join()
    for s in (a, b):
        if failed.is_set():
            _abort(s)
        else:
            s.close()


def _abort(s: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _nodelay(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve_tcp(client: socket.socket, target: str, port: int) -> None:
    """One accepted connection: connect to ``target:port`` and relay; a refused connection resets the client."""
    try:
        upstream = socket.create_connection((target, port), timeout=CONNECT_TIMEOUT)
    except OSError:
        _abort(client)
        return
    upstream.settimeout(None)
    client.setblocking(True)
    _nodelay(client)
    _nodelay(upstream)
    relay(client, upstream)


# ---------------------------------------------------------------- UDP


class _Udp:
    def __init__(self, listener: socket.socket, target: str, port: int, sel: selectors.BaseSelector) -> None:
        self.listener, self.target, self.port, self.sel = listener, target, port, sel
        self.family = socket.AF_INET6 if ":" in target else socket.AF_INET
        self.flows: dict[Any, tuple[socket.socket, float]] = {}

    def from_client(self) -> None:
        try:
            data, addr = self.listener.recvfrom(65536)
        except OSError:
            return
        flow = self.flows.get(addr)
        if flow is None:
            up = socket.socket(self.family, socket.SOCK_DGRAM)
            try:
                up.connect((self.target, self.port))
            except OSError:
                up.close()
                return
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


# ---------------------------------------------------------------- the forwarder process


def serve(listeners: list[tuple[socket.socket, str, int, str]], stop: threading.Event | None = None) -> None:
    """Accept and relay on ``(socket, protocol, container port, target address)`` until ``stop``."""
    sel = selectors.DefaultSelector()
    udps = []
    for s, proto, port, target in listeners:
        s.setblocking(False)
        if proto == "tcp":
            sel.register(s, selectors.EVENT_READ, ("tcp", target, port))
        else:
            u = _Udp(s, target, port, sel)
            udps.append(u)
            sel.register(s, selectors.EVENT_READ, ("udp", u))
    while stop is None or not stop.is_set():
        for key, _ in sel.select(timeout=0.5 if stop is not None else 10):
            data = key.data
            if data[0] == "tcp":
                try:
                    client, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                threading.Thread(target=serve_tcp, args=(client, data[1], data[2]), daemon=True).start()
            elif data[0] == "udp":
                data[1].from_client()
            else:
                data[1].from_container(key.fileobj, data[2])
        for u in udps:
            u.expire()
    sel.close()


def _join(userns: str | None, netns: str) -> None:
    from rootless.runtime.syscalls import CLONE_NEWNET, CLONE_NEWUSER, SYSCALLS

    for path, kind in ((userns, CLONE_NEWUSER), (netns, CLONE_NEWNET)):
        if not path:
            continue
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            SYSCALLS.setns(fd, kind)
        finally:
            os.close(fd)


def _read_line(fd: int) -> bytes:
    data = b""
    while b"\n" not in data and (chunk := os.read(fd, 65536)):
        data += chunk
    return data


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    ready = int(spec["ready"])
    try:
        _join(spec.get("userns"), spec["netns"])
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        os.write(ready, f"cannot join the network namespace {spec['netns']}: {reason}\n".encode())
        print(f"portfwd: cannot join {spec['netns']}: {reason}", file=sys.stderr)
        return 1
    line = _read_line(int(spec["targets"]))
    if not line.strip():  # rl gave up (the helper failed): nothing to serve
        return 0
    targets = json.loads(line)
    listeners = [
        (socket.socket(fileno=fd), proto, port, target)
        for (fd, proto, port), target in zip(spec["fds"], targets, strict=True)
    ]
    os.write(ready, b"ok\n")
    os.close(ready)
    os.close(int(spec["targets"]))
    threading.stack_size(THREAD_STACK)
    serve(listeners)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
