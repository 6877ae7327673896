"""resolv.conf and /etc/hosts generation."""

from __future__ import annotations

import pytest

from rootless.errors import UsageError
from rootless.network.dns import (
    ResolvConf,
    container_hosts,
    container_resolv_conf,
    host_network_hosts,
    parse_add_host,
    parse_resolv_conf,
)

HOST = parse_resolv_conf(
    "# generated\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.com corp.example\noptions ndots:2\n"
)
RESOLVED = parse_resolv_conf("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")


def test_parse() -> None:
    assert ResolvConf(["192.0.2.53", "2001:db8::53"], ["example.com", "corp.example"], ["ndots:2"]) == HOST
    assert parse_resolv_conf("domain a.example\nsearch b.example\n").search == ["b.example"]
    assert parse_resolv_conf("nameserver 1.1.1.1 ; comment\n").nameservers == ["1.1.1.1"]


def test_pasta_copies_reachable_host_servers() -> None:
    conf = container_resolv_conf(HOST, forwarder="169.254.1.1")
    assert conf.render() == (
        "search example.com corp.example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:2\n"
    )
    assert container_resolv_conf(HOST, forwarder="169.254.1.1", ipv6=False).nameservers == ["192.0.2.53"]


def test_loopback_servers_are_replaced_by_the_forwarder() -> None:
    conf = container_resolv_conf(RESOLVED, forwarder="169.254.1.1")
    assert conf.nameservers == ["169.254.1.1"]
    assert conf.search == ["lan"] and conf.options == ["edns0", "trust-ad"]
    # without a forwarder (none) loopback servers are still not copied
    assert container_resolv_conf(RESOLVED).nameservers == []


def test_slirp_prefers_its_forwarder() -> None:
    assert container_resolv_conf(HOST, forwarder="10.0.2.3", prefer_forwarder=True).nameservers == ["10.0.2.3"]


def test_overrides() -> None:
    conf = container_resolv_conf(
        RESOLVED, forwarder="169.254.1.1", dns=["9.9.9.9"], dns_search=["x.example"], dns_options=["ndots:1"]
    )
    assert conf.render() == "search x.example\nnameserver 9.9.9.9\noptions ndots:1\n"
    assert container_resolv_conf(HOST, dns_search=["."]).search == []
    with pytest.raises(UsageError, match=r"invalid --dns 'dns\.google'"):
        container_resolv_conf(HOST, dns=["dns.google"])


def test_hosts() -> None:
    text = container_hosts(
        hostname="web",
        aliases=["mycontainer"],
        addresses=["10.0.2.100"],
        add_hosts=[("db", "192.0.2.7"), ("gw", "host-gateway")],
        host_gateway="10.0.2.2",
        peers=[("10.89.0.3", ["other", "other-alias"])],
    )
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4",
        "::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6",
        "192.0.2.7\tdb",
        "10.0.2.2\tgw",
        "10.0.2.100\tweb mycontainer",
        "10.89.0.3\tother other-alias",
        "10.0.2.2\thost.containers.internal host.docker.internal",
    ]


def test_hosts_without_address_or_gateway() -> None:
    lines = container_hosts(hostname="box").splitlines()
    assert "127.0.0.1\tbox" in lines and "::1\tbox" in lines
    assert not any("host.containers.internal" in line for line in lines)
    with pytest.raises(UsageError, match="no host gateway"):
        container_hosts(add_hosts=[("gw", "host-gateway")])
    # --add-host host.docker.internal:IP wins over the automatic line
    lines = container_hosts(add_hosts=[("host.docker.internal", "192.0.2.9")], host_gateway="10.0.2.2").splitlines()
    assert lines[-1] == "10.0.2.2\thost.containers.internal"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("db:192.0.2.7", ("db", "192.0.2.7")),
        ("db=192.0.2.7", ("db", "192.0.2.7")),
        ("db:[2001:db8::1]", ("db", "2001:db8::1")),
        ("db=2001:db8::1", ("db", "2001:db8::1")),
        ("gw:host-gateway", ("gw", "host-gateway")),
    ],
)
def test_parse_add_host(entry: str, expected: tuple[str, str]) -> None:
    assert parse_add_host(entry) == expected


@pytest.mark.parametrize("entry", ["db", "db:", ":1.2.3.4", "db:not-an-ip"])
def test_parse_add_host_rejects(entry: str) -> None:
    with pytest.raises(UsageError, match="invalid --add-host"):
        parse_add_host(entry)


def test_host_network_hosts() -> None:
    assert host_network_hosts("127.0.0.1 localhost", [("x", "192.0.2.1"), ("gw", "host-gateway")]) == (
        "127.0.0.1 localhost\n192.0.2.1\tx\n127.0.0.1\tgw\n"
    )
