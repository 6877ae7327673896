"""-p parsing (docker's accepted forms and errors), -P, host checks, output shapes."""

from __future__ import annotations

import socket

import pytest

from rootless.errors import ConflictError, HostError, UsageError
from rootless.network.ports import (
    PortMapping,
    assign_host_ports,
    check_host_ports,
    check_unprivileged,
    docker_ports,
    parse_exposed,
    parse_publish,
    parse_publish_list,
    port_lines,
    publish_all,
)

PM = PortMapping

ACCEPTED = [
    ("80", [PM(80)]),
    ("80/udp", [PM(80, protocol="udp")]),
    ("80/TCP", [PM(80)]),
    ("8080:80", [PM(80, 8080)]),
    ("8080:80/udp", [PM(80, 8080, "udp")]),
    ("127.0.0.1:8080:80", [PM(80, 8080, host_ip="127.0.0.1")]),
    ("127.0.0.1::80", [PM(80, 0, host_ip="127.0.0.1")]),
    ("[::1]:8080:80", [PM(80, 8080, host_ip="::1")]),
    ("[::]::80/udp", [PM(80, 0, "udp", "::")]),
    ("8080-8082:80-82", [PM(80, 8080), PM(81, 8081), PM(82, 8082)]),
    ("80-81", [PM(80), PM(81)]),
    ("127.0.0.1:8080-8081:80-81/udp", [PM(80, 8080, "udp", "127.0.0.1"), PM(81, 8081, "udp", "127.0.0.1")]),
    ("8000-8010:80", [PM(80, 0, host_range=(8000, 8010))]),
    ("65535:1", [PM(1, 65535)]),
]


@pytest.mark.parametrize(("spec", "expected"), ACCEPTED)
def test_accepted(spec: str, expected: list[PortMapping]) -> None:
    assert parse_publish(spec) == expected


REJECTED = [
    ("", "invalid -p"),
    (" 80", "invalid -p"),
    ("http", "invalid port 'http'"),
    ("0", "invalid port '0'"),
    ("65536", "invalid port '65536'"),
    ("8080:", "no container port"),
    ("8080:80/sctp", "sctp is not supported"),
    ("8080:80/icmp", "invalid protocol 'icmp'"),
    ("8080-8081:80-82", "differ in size"),
    ("8082-8080:80-82", "invalid port range"),
    ("80:8080-8081", "differ in size"),
    ("localhost:8080:80", "invalid IP address 'localhost'"),
    ("1.2.3:8080:80", "invalid IP address"),
    ("::1:8080:80", "write IPv6 addresses in brackets"),
    ("[::1:8080:80", "invalid IPv6 address"),
    ("[zz::]:8080:80", "invalid IP address"),
    ("-1:80", "invalid port '-1'"),
]


@pytest.mark.parametrize(("spec", "message"), REJECTED)
def test_rejected(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_publish(spec)
    assert message in info.value.line()
    assert "\n" not in info.value.line()


def test_same_host_port_twice() -> None:
    with pytest.raises(UsageError, match="published twice"):
        parse_publish_list(["8080:80", "8080:81"])
    # different protocol or address is fine
    assert len(parse_publish_list(["8080:80", "8080:80/udp", "127.0.0.1:8080:81"])) == 3


def test_exposed_and_publish_all() -> None:
    assert parse_exposed(["80/tcp", "53/udp", "9000-9001", "132/sctp"]) == [
        (80, "tcp"),
        (53, "udp"),
        (9000, "tcp"),
        (9001, "tcp"),
    ]
    got = publish_all(["80/tcp", "443/tcp"], parse_publish_list(["8080:80"]))
    assert got == [PM(443)]


def test_unprivileged_ports() -> None:
    check_unprivileged([PM(80, 1024)], start=1024)
    check_unprivileged([PM(80, 0)], start=1024)  # random ports are always unprivileged
    with pytest.raises(HostError) as info:
        check_unprivileged([PM(80, 80)], start=1024)
    assert "ports below 1024 are privileged" in info.value.message
    assert "sysctl net.ipv4.ip_unprivileged_port_start=80" in (info.value.hint or "")
    with pytest.raises(HostError):
        check_unprivileged([PM(80, 0, host_range=(1000, 1100))], start=1024)
    check_unprivileged([PM(80, 80)], start=0)


def test_conflict_detected_by_binding() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(ConflictError) as info:
            check_host_ports([PM(80, port)])
        assert info.value.message.startswith(f"port {port}/tcp is already in use on 0.0.0.0")
        check_host_ports([PM(80, port, "udp")])  # udp is a different port space


def test_assign_host_ports() -> None:
    got = assign_host_ports([PM(80), PM(53, protocol="udp"), PM(81, 18123)])
    assert all(m.host_port for m in got)
    assert got[2] == PM(81, 18123)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        picked = assign_host_ports([PM(80, 0, host_range=(busy, busy + 5))])[0]
        assert busy < picked.host_port <= busy + 5 and picked.host_range is None
        with pytest.raises(ConflictError, match="no free host port"):
            assign_host_ports([PM(80, 0, host_range=(busy, busy))])


def test_docker_shapes() -> None:
    mappings = [PM(80, 8080), PM(80, 8081, host_ip="127.0.0.1"), PM(53, 5353, "udp"), PM(80, 9090, host_ip="::1")]
    assert docker_ports(mappings, ["80/tcp", "443/tcp"]) == {
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "127.0.0.1", "HostPort": "8081"},
            {"HostIp": "::1", "HostPort": "9090"},
        ],
        "443/tcp": None,
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
    }
    assert port_lines(mappings) == [
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> 127.0.0.1:8081",
        "53/udp -> 0.0.0.0:5353",
        "80/tcp -> [::1]:9090",
    ]
    assert port_lines(mappings, "53/udp") == ["53/udp -> 0.0.0.0:5353"]
    assert port_lines(mappings, "53") == ["53/udp -> 0.0.0.0:5353"]
    assert PM.from_json(PM(80, 8080, "udp", "::1").to_json()) == PM(80, 8080, "udp", "::1")
