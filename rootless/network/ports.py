"""Published ports: docker's ``-p``/``-P`` syntax, host-side checks, and the shapes ``rl port`` and
``rl inspect`` print.

Parsing is pure. ``assign_host_ports`` and ``check_host_ports`` touch the host: they bind each host
port once (then close it) so a port in use is reported before any helper starts.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from rootless.errors import ConflictError, HostError, UsageError
from rootless.records import record, replace

PROTOCOLS = ("tcp", "udp")
UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


@record(frozen=True)
class PortMapping:
    """One container port published on one host port.

    ``host_ip`` is "" for every address (docker prints it as 0.0.0.0). ``host_port`` 0 means "pick a
    free one" until ``assign_host_ports`` fills it in; ``host_range`` is set for docker's
    ``8000-8010:80`` form (any free port of the range).
    """

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"
    host_ip: str = ""
    host_range: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        """docker's port key: ``80/tcp``."""
        return f"{self.container_port}/{self.protocol}"

    @property
    def display_ip(self) -> str:
        return self.host_ip or "0.0.0.0"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host_ip else socket.AF_INET

    def __str__(self) -> str:
        """``rl port`` form: ``80/tcp -> 0.0.0.0:8080``."""
        ip = f"[{self.host_ip}]" if self.family == socket.AF_INET6 else self.display_ip
        return f"{self.key} -> {ip}:{self.host_port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "containerPort": self.container_port,
            "hostPort": self.host_port,
            "protocol": self.protocol,
            "hostIP": self.host_ip,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PortMapping:
        return cls(
            container_port=int(data["containerPort"]),
            host_port=int(data.get("hostPort", 0)),
            protocol=str(data.get("protocol", "tcp")),
            host_ip=str(data.get("hostIP", "")),
        )


# ---------------------------------------------------------------- parsing


def _port(text: str, spec: str, what: str) -> int:
    if not text.isdigit():
        raise UsageError(f"invalid port {text!r} in -p {spec}", f"the {what} port must be a number from 1 to 65535")
    value = int(text)
    if not 1 <= value <= 65535:
        raise UsageError(f"invalid port {text!r} in -p {spec}", f"the {what} port must be a number from 1 to 65535")
    return value


def _port_range(text: str, spec: str, what: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if sep and (not low or not high):
        raise UsageError(f"invalid port {text!r} in -p {spec}", f"the {what} port must be a number from 1 to 65535")
    first = _port(low, spec, what)
    last = _port(high, spec, what) if sep else first
    if last < first:
        raise UsageError(f"invalid port range {text!r} in -p {spec}", "the range must go from low to high")
    return first, last


def _split_ip(spec: str, body: str) -> tuple[str, str]:
    """Split ``[ip:]rest``; IPv6 addresses are written in brackets: ``[::1]:8080:80``."""
    if body.startswith("["):
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise UsageError(f"invalid IPv6 address in -p {spec}", "write it in brackets: -p [::1]:8080:80")
        ip, rest = body[1:end], body[end + 2 :]
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            raise UsageError(
                f"invalid IP address {ip!r} in -p {spec}", "use an IPv4 or bracketed IPv6 address"
            ) from None
        return str(ipaddress.IPv6Address(ip)), rest
    parts = body.split(":")
    if len(parts) <= 2:
        return "", body
    if len(parts) > 3:
        raise UsageError(f"invalid -p {spec}", "write IPv6 addresses in brackets: -p [::1]:8080:80")
    ip = parts[0]
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IP address {ip!r} in -p {spec}", "use an IPv4 or bracketed IPv6 address") from None
    return str(parsed), f"{parts[1]}:{parts[2]}"


def parse_publish(spec: str) -> list[PortMapping]:
    """docker's ``-p [ip:][hostPort:]containerPort[/tcp|/udp]`` with ranges, one mapping per port.

    Accepted: ``80``, ``8080:80``, ``127.0.0.1:8080:80``, ``127.0.0.1::80``, ``[::1]:8080:80``,
    ``8080-8082:80-82``, ``80-82`` (random host ports), ``8000-8010:80`` (a free port of the range),
    ``/udp`` or ``/tcp`` after the container port.
    """
    if not spec or spec.strip() != spec:
        raise UsageError(f"invalid -p {spec!r}", "use -p [ip:][hostPort:]containerPort[/tcp|/udp]")
    body, slash, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
    if slash:
        proto = proto.lower()
        if proto == "sctp":
            raise UsageError(
                f"cannot publish -p {spec}: sctp is not supported by rootless networking", "use tcp or udp"
            )
        if proto not in PROTOCOLS:
            raise UsageError(f"invalid protocol {proto!r} in -p {spec}", "use /tcp or /udp")
    host_ip, rest = _split_ip(spec, body)
    host_part, colon, container_part = rest.rpartition(":")
    if not colon:
        host_part, container_part = "", rest
    if not container_part:
        raise UsageError(f"invalid -p {spec}: no container port", "use -p [ip:][hostPort:]containerPort[/tcp|/udp]")
    c_first, c_last = _port_range(container_part, spec, "container")
    count = c_last - c_first + 1
    if not host_part:
        return [PortMapping(p, 0, proto, host_ip) for p in range(c_first, c_last + 1)]
    h_first, h_last = _port_range(host_part, spec, "host")
    if count == 1 and h_last > h_first:
        return [PortMapping(c_first, 0, proto, host_ip, host_range=(h_first, h_last))]
    if h_last - h_first + 1 != count:
        raise UsageError(
            f"invalid -p {spec}: host range {host_part} and container range {container_part} differ in size",
            "give ranges of the same length, e.g. -p 8080-8082:80-82",
        )
    return [PortMapping(c_first + i, h_first + i, proto, host_ip) for i in range(count)]


def parse_publish_list(specs: Iterable[str]) -> list[PortMapping]:
    """Every ``-p``; the same host port twice (same ip and protocol) is an error."""
    result: list[PortMapping] = []
    for spec in specs:
        result.extend(parse_publish(spec))
    seen: dict[tuple[str, int, str], str] = {}
    for m in result:
        if not m.host_port:
            continue
        k = (m.host_ip, m.host_port, m.protocol)
        if k in seen:
            raise UsageError(f"host port {m.host_port}/{m.protocol} is published twice", "publish each host port once")
        seen[k] = m.key
    return result


def parse_exposed(exposed: Iterable[str]) -> list[tuple[int, str]]:
    """The image's ExposedPorts keys (``80/tcp``, ``53/udp``, ``8000-8002``) as (port, protocol)."""
    result: list[tuple[int, str]] = []
    for key in exposed:
        port, _, proto = key.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in PROTOCOLS:
            continue  # sctp: nothing rootless can publish
        first, last = _port_range(port, key, "exposed")
        result.extend((p, proto) for p in range(first, last + 1))
    return result


def publish_all(exposed: Iterable[str], published: Sequence[PortMapping] = ()) -> list[PortMapping]:
    """``-P``: every exposed port not already published with ``-p``, on a random host port."""
    done = {(m.container_port, m.protocol) for m in published}
    return [PortMapping(p, 0, proto) for p, proto in parse_exposed(exposed) if (p, proto) not in done]


# ---------------------------------------------------------------- host checks


def unprivileged_port_start(path: str = UNPRIVILEGED_PORT_START) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def check_unprivileged(mappings: Iterable[PortMapping], start: int | None = None) -> None:
    """Rootless helpers bind host ports as the user: ports below the sysctl cannot be bound."""
    start = unprivileged_port_start() if start is None else start
    for m in mappings:
        low = m.host_range[0] if m.host_range else m.host_port
        if low and low < start:
            raise HostError(
                f"cannot publish host port {low}/{m.protocol}: ports below {start} are privileged"
                f" (net.ipv4.ip_unprivileged_port_start={start})",
                f"publish a port >= {start} (-p {max(start, 8000)}:{m.container_port}), or the admin can run"
                f" 'sysctl net.ipv4.ip_unprivileged_port_start={low}'",
            )


def _bind_probe(ip: str, port: int, protocol: str, v6only: bool = False) -> OSError | None:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, kind)
    except OSError as e:  # no IPv6 on this host
        return None if e.errno == errno.EAFNOSUPPORT else e
    with sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        if family == socket.AF_INET6 and v6only:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((ip, port))
            if kind == socket.SOCK_STREAM:
                sock.listen(1)
        except OSError as e:
            return e
    return None


def port_problem(ip: str, port: int, protocol: str, dual_stack: bool = False) -> OSError | None:
    """Why ``port`` cannot be bound on ``ip`` ("" = every address), or None when it is free."""
    if ip:
        return _bind_probe(ip, port, protocol)
    problem = _bind_probe("0.0.0.0", port, protocol)
    if problem is None and dual_stack:
        problem = _bind_probe("::", port, protocol, v6only=True)
    return problem


def port_conflict(m: PortMapping, problem: OSError) -> ConflictError | HostError:
    where = f"{m.display_ip}" if ":" not in m.host_ip else f"[{m.host_ip}]"
    if problem.errno == errno.EADDRINUSE:
        return ConflictError(
            f"port {m.host_port}/{m.protocol} is already in use on {where}",
            f"stop what listens there or publish another host port (-p OTHER:{m.container_port})",
        )
    if problem.errno == errno.EADDRNOTAVAIL:
        return HostError(
            f"cannot publish port {m.host_port}/{m.protocol} on {where}: the host has no such address",
            "use an address of this host, or leave the address out",
        )
    return HostError(
        f"cannot publish port {m.host_port}/{m.protocol} on {where}: {(problem.strerror or str(problem)).lower()}",
        "check the host address and port",
    )


def check_host_ports(mappings: Iterable[PortMapping], dual_stack: bool = False) -> None:
    """ConflictError for the first host port something else holds (bound once here, then closed)."""
    for m in mappings:
        problem = port_problem(m.host_ip, m.host_port, m.protocol, dual_stack)
        if problem is not None:
            raise port_conflict(m, problem)


def free_port(ip: str = "", protocol: str = "tcp") -> int:
    """A port the kernel considers free now (ephemeral range)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.bind((ip or "0.0.0.0", 0))
        return int(sock.getsockname()[1])


def assign_host_ports(mappings: Sequence[PortMapping], dual_stack: bool = False) -> list[PortMapping]:
    """Fill in host port 0 (a random free port) and ``8000-8010:80`` (the first free of the range)."""
    result: list[PortMapping] = []
    taken = {(m.host_ip, m.host_port, m.protocol) for m in mappings if m.host_port}
    for m in mappings:
        if m.host_port:
            result.append(m)
            continue
        if m.host_range:
            for port in range(m.host_range[0], m.host_range[1] + 1):
                if (m.host_ip, port, m.protocol) in taken:
                    continue
                if port_problem(m.host_ip, port, m.protocol, dual_stack) is None:
                    break
            else:
                raise ConflictError(
                    f"no free host port in {m.host_range[0]}-{m.host_range[1]}/{m.protocol} on {m.display_ip}",
                    "publish a wider range or another one",
                )
        else:
            for _ in range(20):
                port = free_port(m.host_ip, m.protocol)
                if (m.host_ip, port, m.protocol) not in taken and (
                    port_problem(m.host_ip, port, m.protocol, dual_stack) is None
                ):
                    break
            else:  # pragma: no cover - the kernel keeps handing out ports in use
                raise ConflictError(f"cannot find a free host port for {m.key}", "try again")
        taken.add((m.host_ip, port, m.protocol))
        result.append(replace(m, host_port=port, host_range=None))
    return result


# ---------------------------------------------------------------- output shapes


def docker_ports(
    mappings: Iterable[PortMapping], exposed: Iterable[str] = ()
) -> dict[str, list[dict[str, str]] | None]:
    """NetworkSettings.Ports: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": None}``."""
    result: dict[str, list[dict[str, str]] | None] = {}
    for port, proto in parse_exposed(exposed):
        result.setdefault(f"{port}/{proto}", None)
    for m in mappings:
        bindings = result.get(m.key) or []
        bindings.append({"HostIp": m.display_ip, "HostPort": str(m.host_port)})
        result[m.key] = bindings
    return result


def port_lines(mappings: Iterable[PortMapping], private: str | None = None) -> list[str]:
    """``rl port CONTAINER [PRIVATE_PORT[/PROTO]]`` output lines."""
    lines = []
    for m in mappings:
        if private:
            port, _, proto = private.partition("/")
            if str(m.container_port) != port or (proto and proto.lower() != m.protocol):
                continue
        lines.append(str(m))
    return lines
