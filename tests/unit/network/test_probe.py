"""Feature probing from captured --help texts, and the helper command lines built from features."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import HostError
from rootless.network import pasta, slirp
from rootless.network.driver import Features, NetworkOptions, helper_error_text
from rootless.network.netns import NetNS
from rootless.network.ports import PortMapping

from .help_texts import PASTA_2023_03, SLIRP4NETNS_0_3, SLIRP4NETNS_1_2, SLIRP4NETNS_1_2_VERSION


def test_pasta_features() -> None:
    got = pasta.pasta_features(PASTA_2023_03, "pasta unknown version\n", "/usr/bin/pasta")
    assert isinstance(got, Features)
    for flag in ("config-net", "netns", "userns", "netns-only", "dns-forward", "no-map-gw", "pid", "ns-ifname"):
        assert got.has(flag), flag
    assert not got.has("map-host-loopback")  # newer pasta only
    assert got.ipv6


def test_pasta_too_old() -> None:
    got = pasta.pasta_features("Usage: pasta [OPTION]...\n  -d, --debug\n", "", "/opt/pasta")
    assert isinstance(got, HostError)
    assert "--config-net" in got.message and "/opt/pasta" in got.message


def test_slirp_features() -> None:
    got = slirp.slirp_features(SLIRP4NETNS_1_2, SLIRP4NETNS_1_2_VERSION, "/usr/bin/slirp4netns")
    assert isinstance(got, Features)
    assert got.version == "1.2.0"
    for flag in (
        "configure",
        "ready-fd",
        "exit-fd",
        "api-socket",
        "enable-ipv6",
        "disable-host-loopback",
        "netns-type",
        "userns-path",
        "enable-sandbox",
        "enable-seccomp",
        "disable-dns",
        "cidr",
    ):
        assert got.has(flag), flag
    assert got.ipv6


def test_slirp_too_old() -> None:
    got = slirp.slirp_features(SLIRP4NETNS_0_3)
    assert isinstance(got, HostError)
    assert "--api-socket" in got.message


def test_slirp_args() -> None:
    features = slirp.slirp_features(SLIRP4NETNS_1_2, SLIRP4NETNS_1_2_VERSION, "/s")
    assert isinstance(features, Features)
    ns = NetNS("/run/user/1/netns/c1", userns="/proc/9/ns/user")
    args = slirp.build_args("/s", ns, NetworkOptions(), features, 5, "/r/api.sock")
    assert args == [
        "/s",
        "--configure",
        "--mtu=65520",
        "--ready-fd=5",
        "--api-socket=/r/api.sock",
        "--enable-ipv6",
        "--enable-seccomp",
        "--netns-type=path",
        "--userns-path=/proc/9/ns/user",
        "/run/user/1/netns/c1",
        "tap0",
    ]
    args = slirp.build_args(
        "/s", NetNS("/n"), NetworkOptions(ipv6=False, host_loopback=False, mtu=70000), features, 5, "/a"
    )
    assert "--disable-host-loopback" in args and "--mtu=65521" in args and "--enable-ipv6" not in args
    old = Features("slirp4netns", flags=frozenset({"configure", "ready-fd", "api-socket"}))
    assert slirp.build_args("/s", NetNS("/proc/7/ns/net", pid=7), NetworkOptions(), old, 5, "/a")[-2:] == ["7", "tap0"]
    with pytest.raises(HostError, match="disable-host-loopback"):
        slirp.build_args("/s", NetNS("/n", pid=7), NetworkOptions(host_loopback=False), old, 5, "/a")


def test_pasta_args() -> None:
    ports = [
        PortMapping(80, 8080),
        PortMapping(81, 8081),
        PortMapping(82, 8082),
        PortMapping(443, 8443, host_ip="127.0.0.1"),
        PortMapping(53, 5353, "udp"),
    ]
    args = pasta.build_args("/p", NetNS("/n"), NetworkOptions(), ports, "/r/pasta.pid")
    assert args == [
        "/p",
        "--config-net",
        "--quiet",
        "-I",
        "eth0",
        "--dns-forward",
        "169.254.1.1",
        "-t",
        "8080-8082:80-82,127.0.0.1/8443:443",
        "-u",
        "5353:53",
        "-T",
        "none",
        "-U",
        "none",
        "--pid",
        "/r/pasta.pid",
        "--netns",
        "/n",
        "--netns-only",
    ]
    args = pasta.build_args(
        "/p", NetNS("/n", userns="/u"), NetworkOptions(ipv6=False, host_loopback=False, mtu=1500), [], "/x"
    )
    assert args[args.index("-t") : args.index("-t") + 4] == ["-t", "none", "-u", "none"]
    assert "-4" in args and "--no-map-gw" in args and args[-2:] == ["--userns", "/u"]
    assert args[args.index("-m") + 1] == "1500"


def test_helper_error_text() -> None:
    stderr = "Failed to send 57 bytes to syslog\nFailed to bind any port for '-t 8080:80', exiting\n"
    assert helper_error_text(stderr) == "failed to bind any port for '-t 8080:80', exiting"
    assert (
        helper_error_text("WARNING: Support for IPv6 is experimental\nopen tap: Bad thing.\n") == "open tap: bad thing"
    )


def test_default_run_dir_not_needed(tmp_path: Path) -> None:
    assert NetworkOptions().run_dir is None
