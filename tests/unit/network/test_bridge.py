"""User-defined networks without namespaces: the nftables rules, names, states, container:NAME."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import UsageError
from rootless.network.basic import ContainerNetDriver
from rootless.network.bridge import Attachment, BridgeDriver, RootlessNetns, network_entry, nft_ruleset, veth_name
from rootless.network.driver import NetworkOptions, NetworkState
from rootless.network.netns import NetNS
from rootless.network.networks import NetworkRecord
from rootless.network.ports import PortMapping


def record(name: str, n: int, internal: bool = False) -> NetworkRecord:
    return NetworkRecord(name=name, id=f"{n:064x}", subnet=f"10.89.{n}.0/24", gateway=f"10.89.{n}.1",
                         bridge=f"rl{n + 1}", created="2026-01-01T00:00:00Z", internal=internal)


def test_ruleset_isolates_bridges_and_masquerades_out() -> None:
    rules = nft_ruleset([record("a", 0), record("b", 1)], uplink="eth0")
    assert rules.startswith("table inet rl\ndelete table inet rl\n")  # idempotent replace
    assert 'iifname "rl1" oifname "rl1" accept' in rules
    assert 'iifname { "rl1", "rl2" } oifname { "rl1", "rl2" } drop' in rules
    assert 'ip saddr 10.89.0.0/24 oifname "eth0" masquerade' in rules
    assert 'ip saddr 10.89.1.0/24 oifname "eth0" masquerade' in rules


def test_internal_network_has_no_way_out() -> None:
    rules = nft_ruleset([record("a", 0, internal=True)])
    assert 'iifname "rl1" drop' in rules and 'oifname "rl1" drop' in rules
    assert "masquerade" not in rules


def test_veth_names_fit_ifnamsiz() -> None:
    name = veth_name("f" * 64, 12)
    assert len(name) <= 15 and name.startswith("veth")
    assert veth_name("a" * 64, 0) != veth_name("a" * 64, 1)


def test_bridge_state_has_docker_networks_and_peer_ready_files() -> None:
    net = record("front", 0)
    att = Attachment(net, "10.89.0.2", ["web"])
    driver = BridgeDriver(RootlessNetns.__new__(RootlessNetns), [net], cid="c" * 64)
    helper = NetworkState(driver="pasta", interface="eth0", dns_servers=["169.254.1.1"], host_gateway="192.0.2.1")
    entries = {"front": network_entry(att, "eth0", "vethcccccccc0", "02:00:00:00:00:01")}
    options = NetworkOptions(hostname="abc", aliases=["web"], host_resolv_conf="/nonexistent")
    state = driver.state(NetNS("/x"), options, helper, entries, att, [PortMapping(80, 8080)], 1, 2)
    assert (state.driver, state.ipv4, state.gateway, state.interface) == ("bridge", "10.89.0.2", "10.89.0.1", "eth0")
    assert "nameserver 169.254.1.1" in state.resolv_conf
    assert "10.89.0.2\tabc web" in state.hosts and "host.containers.internal" in state.hosts
    settings = NetworkState.from_json(state.to_json()).network_settings()
    assert settings["Networks"]["front"]["IPAddress"] == "10.89.0.2"
    assert "Veth" not in settings["Networks"]["front"]
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}


def test_container_network_copies_files_and_refuses_ports() -> None:
    other = NetworkState(driver="pasta", interface="eth0", ipv4="10.0.2.100", prefixlen=24)
    driver = ContainerNetDriver("d" * 64, "/run/x/netns", "hosts-text", "resolv-text", other)
    assert driver.name == "container:" + "d" * 64 and not driver.needs_netns
    state = driver.setup(None, NetworkOptions())
    assert (state.driver, state.hosts, state.resolv_conf, state.ipv4) == ("container", "hosts-text", "resolv-text",
                                                                         "10.0.2.100")
    assert state.helper_pid == 0 and state.netns == NetNS("/run/x/netns")
    with pytest.raises(UsageError, match="cannot publish ports"):
        driver.setup(None, NetworkOptions(ports=[PortMapping(80, 8080)]))


class _Helper:
    name = "pasta"


@pytest.mark.parametrize(("nft", "network", "expect"), [
    ("/usr/sbin/nft", "", "bridge"),
    ("/usr/sbin/nft", "bridge", "bridge"),
    (None, "", "pasta"),
    (None, "bridge", "error"),
])
def test_default_network_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                nft: str | None, network: str, expect: str) -> None:
    """No --network (or --network bridge): the default network when nft can do its NAT; without nft
    the default falls back to a helper of the container's own with one warning, and an explicit
    --network bridge is refused with the admin's fix."""
    from rootless.engine import network as glue
    from rootless.engine.env import EngineEnv
    from rootless.engine.runopts import RunOptions
    from rootless.errors import HostError
    from rootless.network import bridge

    monkeypatch.setattr(bridge, "nft_binary", lambda: nft)
    monkeypatch.setattr(bridge.RootlessNetns, "is_up", lambda self: False)
    monkeypatch.setattr("rootless.network.driver.default_driver", lambda **kw: _Helper())
    env = EngineEnv(storage=tmp_path / "store", runroot=tmp_path / "run")
    env.runroot.mkdir()
    opts = RunOptions(image="busybox", network=network)
    if expect == "error":
        with pytest.raises(HostError, match="nft is not installed") as e:
            glue.choose_driver(env, opts)
        assert "install nftables" in (e.value.hint or "")
        return
    driver = glue.choose_driver(env, opts)
    if expect == "bridge":
        assert isinstance(driver, BridgeDriver) and driver.name == "bridge"
        assert [r.subnet for r in driver.networks] == ["10.88.0.0/16"]
    else:
        assert isinstance(driver, _Helper)
        glue.choose_driver(env, opts)  # the warning is given once
        warnings = [r.getMessage() for r in caplog.records if "nft is not installed" in r.getMessage()]
        assert len(warnings) == 1 and "a pasta of its own" in warnings[0]


@pytest.mark.parametrize(("default", "nft", "status", "words"), [
    ("", "/usr/sbin/nft", "pass", "/dev/net/tun usable"),
    ("", None, "warn", "gets a pasta of its own"),
    ("bridge", None, "fail", "network.default = bridge, but nft is not installed"),
    ("bridge", "/usr/sbin/nft", "pass", "/dev/net/tun usable"),
    ("mynet", None, "pass", "/dev/net/tun usable"),  # a user-defined network is no helper to install
])
def test_system_check_network_and_nft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default: str,
                                      nft: str | None, status: str, words: str) -> None:
    from rootless.engine import check
    from rootless.network import bridge

    monkeypatch.setattr(bridge, "nft_binary", lambda: nft)
    monkeypatch.setattr(check, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(check, "tun_problem", lambda: None)
    ctx = check.Context(settings={"network.default": default}, storage=tmp_path, runroot=tmp_path, runroot_reason="")
    result = check.check_network(ctx)
    assert result.status == status and words in result.detail, result
    if status != "pass":
        assert "install nftables" in (result.fix or "")
