"""User-defined network records and subnet allocation."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from rootless.errors import ConflictError, NotFoundError, UsageError
from rootless.network.networks import NetworkStore, allocate_address, allocate_subnet, host_routes

N = ipaddress.IPv4Network


def test_allocate_skips_used_and_host_routes() -> None:
    assert allocate_subnet([]) == N("10.89.0.0/24")
    assert allocate_subnet([N("10.89.0.0/24"), N("10.89.1.0/24")]) == N("10.89.2.0/24")
    assert allocate_subnet([N("10.89.0.0/24")], [N("10.89.1.0/25")]) == N("10.89.2.0/24")
    with pytest.raises(ConflictError, match="no free subnet"):
        allocate_subnet([N("10.89.0.0/16")])


def test_host_routes(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000259C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "br0\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
    )
    assert host_routes(str(table)) == [N("192.89.2.0/24"), N("10.89.0.0/16")]


def test_store_lifecycle(tmp_path: Path) -> None:
    store = NetworkStore(tmp_path / "networks")
    a = store.create("front", labels={"app": "x"}, avoid=[])
    b = store.create("back", avoid=[])
    assert (a.subnet, a.gateway, a.bridge) == ("10.89.0.0/24", "10.89.0.1", "rl1")
    assert (b.subnet, b.gateway, b.bridge) == ("10.89.1.0/24", "10.89.1.1", "rl2")
    assert len(a.id) == 64 and a.created.endswith("Z")
    assert json.loads((tmp_path / "networks" / "front.json").read_text())["labels"] == {"app": "x"}
    assert [r.name for r in store.records()] == ["bridge", "back", "front"]
    assert store.get(a.id[:12]).name == "front"
    with pytest.raises(ConflictError, match="already exists"):
        store.create("front", avoid=[])
    with pytest.raises(ConflictError, match="overlaps network front"):
        store.create("c", subnet="10.89.0.128/25", avoid=[])
    c = store.create("c", subnet="10.90.0.0/16", gateway="10.90.0.254", avoid=[])
    assert c.gateway == "10.90.0.254"
    with pytest.raises(ConflictError, match="in use by web"):
        store.remove("front", in_use=["web"])
    store.remove("front")
    with pytest.raises(NotFoundError):
        store.get("front")
    d = store.create("d", avoid=[])
    assert d.subnet == "10.89.0.0/24" and d.bridge == "rl1"  # freed subnet and bridge are reused
    assert sorted(store.prune({"d": ["web"]})) == ["back", "c"]
    assert [r.name for r in store.records()] == ["bridge", "d"]
    assert d.inspect(["web"])["IPAM"]["Config"] == [{"Subnet": "10.89.0.0/24", "Gateway": "10.89.0.1"}]


@pytest.mark.parametrize("name", ["", "-x", "a b", "host", "none", "x" * 129])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError):
        NetworkStore(tmp_path).create(name, avoid=[])


@pytest.mark.parametrize(
    ("subnet", "gateway", "message"),
    [
        ("10.1.0.0/31", None, "too small"),
        ("fd00::/64", None, "only IPv4"),
        ("nope", None, "invalid --subnet"),
        ("10.1.0.0/24", "10.2.0.1", "not a host address"),
        ("10.1.0.0/24", "10.1.0.0", "not a host address"),
    ],
)
def test_bad_subnets(tmp_path: Path, subnet: str, gateway: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        NetworkStore(tmp_path).create("n", subnet=subnet, gateway=gateway, avoid=[])


def test_allocate_address(tmp_path: Path) -> None:
    record = NetworkStore(tmp_path).create("n", subnet="10.1.0.0/30", avoid=[])
    assert allocate_address(record, []) == "10.1.0.2"
    with pytest.raises(ConflictError, match="no free address"):
        allocate_address(record, ["10.1.0.2"])


def test_default_network(tmp_path: Path) -> None:
    """`bridge` is always there (written on first use, the same afterwards), takes no user's name or
    subnet, resolves no names, and is neither removed nor pruned."""
    store = NetworkStore(tmp_path / "networks")
    default = store.default()
    assert (default.name, default.subnet, default.gateway, default.bridge) == ("bridge", "10.88.0.0/16",
                                                                             "10.88.0.1", "rl0")
    assert not default.dns_enabled and len(default.id) == 64
    assert store.default() == default and store.get("bridge") == default
    with pytest.raises(UsageError, match="reserved"):
        store.create("bridge", avoid=[])
    with pytest.raises(ConflictError, match="overlaps network bridge"):
        store.create("x", subnet="10.88.5.0/24", avoid=[])
    with pytest.raises(ConflictError, match="bridge is a pre-defined network and cannot be removed"):
        store.remove("bridge")
    assert store.prune() == [] and [r.name for r in store.records()] == ["bridge"]
