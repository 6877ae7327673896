"""A network namespace to configure, and running small functions inside it.

``in_netns`` forks a child that joins the namespace (its user namespace first, when that is not
ours) and runs a function there; the result comes back as JSON. Everything here is stdlib (ioctl and
/proc/self/net), so nothing on ``rl run``'s path pays pyroute2's import (~0.1 s); pyroute2 is used
only where links are created (``rootless.network.bridge``).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from rootless.errors import RuntimeSetupError
from rootless.records import asdict, field, record
from rootless.runtime.syscalls import CLONE_NEWNET, CLONE_NEWUSER, SYSCALLS

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1


@record(frozen=True)
class NetNS:
    """The container's network namespace: ``path`` is a bind-mounted nsfs file or /proc/PID/ns/net.

    ``userns`` is the user namespace owning it, as a path, when that is not the caller's own (helpers
    are told to join it; ``in_netns`` joins it first). The engine, root in the pause user namespace,
    passes a bind-mounted path and no userns: pasta, started as root there, drops to "nobody" before
    opening the namespace and may not open /proc/PID/ns/* of a root-owned process.
    """

    path: str
    userns: str | None = None
    pid: int | None = None

    @classmethod
    def of_pid(cls, pid: int) -> NetNS:
        """The network namespace of process ``pid`` (and its user namespace when not ours)."""
        userns = f"/proc/{pid}/ns/user"
        try:
            same = os.stat(userns).st_ino == os.stat("/proc/self/ns/user").st_ino
        except OSError:
            same = True
        return cls(path=f"/proc/{pid}/ns/net", userns=None if same else userns, pid=pid)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "userns": self.userns, "pid": self.pid}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetNS:
        return cls(path=data["path"], userns=data.get("userns"), pid=data.get("pid"))


def _enter(ns: NetNS) -> None:
    if ns.userns:
        fd = os.open(ns.userns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            SYSCALLS.setns(fd, CLONE_NEWUSER)
        finally:
            os.close(fd)
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        SYSCALLS.setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def in_netns(ns: NetNS, fn: Callable[[], Any], what: str = "configure the network namespace") -> Any:
    """Run ``fn`` in a child that joined ``ns``; return its JSON-able result or raise RuntimeSetupError."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            _enter(ns)
            out: dict[str, Any] = {"ok": fn()}
        except BaseException as e:
            out = {"error": str(e) or type(e).__name__}
            code = 1
        try:
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        result = {}
    if "ok" not in result:
        reason = result.get("error", "the helper child died")
        raise RuntimeSetupError(f"cannot {what} {ns.path}: {reason}")
    return result["ok"]


def run_detached(ns: NetNS, fn: Callable[[], Any]) -> None:
    """Run ``fn`` in ``ns`` in a grandchild nobody waits for (best effort: its errors are dropped)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            if os.fork() == 0:
                try:
                    os.setsid()
                    null = os.open(os.devnull, os.O_RDWR)
                    for target in (0, 1, 2):
                        os.dup2(null, target)
                    os.closerange(3, 65536)  # no caller's pipe kept open, no caller's lock kept held
                    _enter(ns)
                    fn()
                finally:
                    os._exit(0)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# ---------------------------------------------------------------- ioctl helpers (run inside the netns)


def _ifreq(name: str, data: bytes = b"") -> bytes:
    return struct.pack("16s24s", name.encode()[:15], data)


def _ioctl(sock: socket.socket, request: int, name: str, data: bytes = b"") -> bytes:
    return fcntl.ioctl(sock.fileno(), request, _ifreq(name, data))


def set_link_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", _ioctl(s, SIOCGIFFLAGS, name), 16)[0]
        if not flags & IFF_UP:
            _ioctl(s, SIOCSIFFLAGS, name, struct.pack("H", flags | IFF_UP))


def lo_up() -> None:
    set_link_up("lo")


def mac_address(name: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return ":".join(f"{b:02x}" for b in _ioctl(s, SIOCGIFHWADDR, name)[18:24])


@record
class Interface:
    """What an interface inside the namespace looks like, for NetworkSettings."""

    name: str
    ipv4: str = ""
    prefixlen: int = 0
    gateway: str = ""
    ipv6: list[tuple[str, int]] = field(default_factory=list)  # global addresses
    gateway6: str = ""
    mac: str = ""
    mtu: int = 0
    up: bool = False
    names: list[str] = field(default_factory=list)  # every link in the namespace

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _hex_ipv6(text: str) -> str:
    return str(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(text)))


def _read(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


def link_names() -> list[str]:
    return [line.split(":", 1)[0].strip() for line in _read("/proc/self/net/dev")[2:]]


def inspect_interface(name: str) -> dict[str, Any]:
    """Addresses, gateways, MAC and MTU of ``name`` in the current network namespace."""
    info = Interface(name=name, names=link_names())
    if name not in info.names:
        return info.to_json()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", _ioctl(s, SIOCGIFFLAGS, name), 16)[0]
        info.up = bool(flags & IFF_UP)
        info.mtu = struct.unpack_from("i", _ioctl(s, SIOCGIFMTU, name), 16)[0]
        hw = _ioctl(s, SIOCGIFHWADDR, name)[18:24]
        info.mac = ":".join(f"{b:02x}" for b in hw)
        try:
            info.ipv4 = socket.inet_ntoa(_ioctl(s, SIOCGIFADDR, name)[20:24])
            mask = _ioctl(s, SIOCGIFNETMASK, name)[20:24]
            info.prefixlen = bin(int.from_bytes(mask, "big")).count("1")
        except OSError:
            pass  # no IPv4 address
    for line in _read("/proc/self/net/route")[1:]:
        cols = line.split()
        if len(cols) >= 3 and cols[0] == name and cols[1] == "00000000" and cols[2] != "00000000":
            info.gateway = socket.inet_ntoa(struct.pack("<I", int(cols[2], 16)))
            break
    for line in _read("/proc/self/net/if_inet6"):
        cols = line.split()
        if len(cols) == 6 and cols[5] == name and int(cols[3], 16) == 0:  # scope global
            info.ipv6.append((_hex_ipv6(cols[0]), int(cols[2], 16)))
    for line in _read("/proc/self/net/ipv6_route"):
        cols = line.split()
        if len(cols) == 10 and cols[9] == name and cols[0] == "0" * 32 and cols[1] == "00" and cols[4] != "0" * 32:
            info.gateway6 = _hex_ipv6(cols[4])
            break
    return info.to_json()


def inspect(ns: NetNS, name: str, lo: bool = False) -> Interface:
    """``name`` as seen inside ``ns`` (and bring lo up first when ``lo``)."""

    def work() -> dict[str, Any]:
        if lo:
            lo_up()
        return inspect_interface(name)

    data = in_netns(ns, work, "inspect")
    data["ipv6"] = [tuple(a) for a in data.get("ipv6", [])]
    return Interface(**data)
