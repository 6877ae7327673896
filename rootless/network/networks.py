"""User-defined networks: the records behind `rl network create|ls|inspect|rm|prune`.

One JSON file per network under a store directory (``<name>.json``), written atomically under
``.lock`` (flock). Subnets are allocated as 10.89.N.0/24 without overlapping another network or a
route of the host; the gateway is the subnet's first address and lives on the network's bridge in
the per-user rootless network namespace (``rootless.network.bridge``).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import socket
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rootless.errors import ConflictError, NotFoundError, UsageError
from rootless.records import field, fields, record
from rootless.timefmt import now_rfc3339

POOL = ipaddress.IPv4Network("10.89.0.0/16")
PREFIX = 24
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
RESERVED = ("host", "none", "bridge", "pasta", "slirp4netns", "private", "default", "container")
BRIDGE_PREFIX = "rl"
LOCK = ".lock"

# The default network: what `rl run` without --network (or with --network bridge) joins, docker's
# "bridge" and podman's "podman". Always there, cannot be removed; no name resolution between its
# containers (docker's default bridge has none either); its own /16 out of the way of 10.89.N.0/24.
DEFAULT_NETWORK = "bridge"
DEFAULT_SUBNET = "10.88.0.0/16"
DEFAULT_BRIDGE = f"{BRIDGE_PREFIX}0"
DEFAULT_ID = "4f8a5bd6b8c0de0f5e1e4c7c0a9d8b2e6a3f1c5d7e9b0a2c4e6f8a1b3d5c7e9f"


@record
class NetworkRecord:
    name: str
    id: str
    subnet: str
    gateway: str
    bridge: str
    created: str
    driver: str = "bridge"
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    dns_enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    def inspect(self, containers: Iterable[str] = ()) -> dict[str, Any]:
        """docker's network inspect shape (the parts that apply)."""
        return {
            "Name": self.name,
            "Id": self.id,
            "Created": self.created,
            "Driver": self.driver,
            "Scope": "local",
            "Internal": self.internal,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": self.subnet, "Gateway": self.gateway}]},
            "Labels": dict(self.labels),
            "Containers": {c: {} for c in containers},
            "Options": {"com.docker.network.bridge.name": self.bridge},
        }


def validate_name(name: str) -> None:
    if not NAME_RE.match(name) or len(name) > 128:
        raise UsageError(
            f"invalid network name {name!r}", "use letters, digits, '_', '.', '-', starting with a letter or digit"
        )
    if name in RESERVED:
        raise UsageError(f"network name {name!r} is reserved", "choose another name")


def host_routes(path: str = "/proc/net/route") -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes (not the default route)."""
    result: list[ipaddress.IPv4Network] = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return result
    for line in lines:
        cols = line.split()
        if len(cols) < 8:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(cols[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(cols[7], 16)))
        if dest == "0.0.0.0":
            continue
        with contextlib.suppress(ValueError):
            result.append(ipaddress.IPv4Network(f"{dest}/{mask}", strict=False))
    return result


def allocate_subnet(
    used: Iterable[ipaddress.IPv4Network], avoid: Iterable[ipaddress.IPv4Network] = ()
) -> ipaddress.IPv4Network:
    """The first 10.89.N.0/24 overlapping neither ``used`` (other networks) nor ``avoid`` (host routes)."""
    taken = [*used, *avoid]
    for candidate in POOL.subnets(new_prefix=PREFIX):
        if not any(candidate.overlaps(t) for t in taken):
            return candidate
    raise ConflictError(f"no free subnet left in {POOL}", "remove unused networks with 'rl network prune'")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"invalid --subnet {text!r}", "use CIDR notation, e.g. --subnet 10.90.0.0/24") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise UsageError(f"invalid --subnet {text!r}: only IPv4 subnets are supported", "use an IPv4 subnet")
    if net.prefixlen > 30:
        raise UsageError(f"invalid --subnet {text!r}: too small", "use a /30 or larger subnet")
    return net


class NetworkStore:
    """The network records of one user, in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def records(self) -> list[NetworkRecord]:
        """Every network, the default one first."""
        result = [self.default()]
        for path in sorted(self.root.glob("*.json")):
            if path.name != f"{DEFAULT_NETWORK}.json":
                with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                    result.append(NetworkRecord.from_json(json.loads(path.read_text())))
        return result

    def default(self) -> NetworkRecord:
        """The default network's record, written the first time it is asked for (its creation time
        is then the first use, as docker's is the daemon's first start)."""
        path = self._path(DEFAULT_NETWORK)
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return NetworkRecord.from_json(json.loads(path.read_text()))
        record = NetworkRecord(
            name=DEFAULT_NETWORK,
            id=DEFAULT_ID,
            subnet=DEFAULT_SUBNET,
            gateway=str(ipaddress.IPv4Network(DEFAULT_SUBNET).network_address + 1),
            bridge=DEFAULT_BRIDGE,
            created=now_rfc3339(),
            dns_enabled=False,
        )
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._write(record)
        return record

    def get(self, name_or_id: str) -> NetworkRecord:
        records = self.records()
        for r in records:
            if r.name == name_or_id or r.id == name_or_id:
                return r
        matches = [r for r in records if len(name_or_id) >= 3 and r.id.startswith(name_or_id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConflictError(f"network id prefix {name_or_id!r} is ambiguous", "give more of the id")
        raise NotFoundError(f"no such network: {name_or_id}", "see 'rl network ls'")

    def _write(self, record: NetworkRecord) -> None:
        path = self._path(record.name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    def create(
        self,
        name: str,
        *,
        subnet: str | None = None,
        gateway: str | None = None,
        labels: dict[str, str] | None = None,
        internal: bool = False,
        avoid: Iterable[ipaddress.IPv4Network] | None = None,
    ) -> NetworkRecord:
        validate_name(name)
        with self.locked():
            records = self.records()
            if any(r.name == name for r in records):
                raise ConflictError(f"network {name} already exists", "choose another name or remove it first")
            used = [r.network for r in records]
            if subnet:
                net = parse_subnet(subnet)
                clash = next((r for r in records if r.network.overlaps(net)), None)
                if clash:
                    raise ConflictError(
                        f"subnet {net} overlaps network {clash.name} ({clash.subnet})", "choose another --subnet"
                    )
            else:
                net = allocate_subnet(used, host_routes() if avoid is None else avoid)
            if gateway:
                try:
                    gw = ipaddress.IPv4Address(gateway)
                except ValueError:
                    raise UsageError(f"invalid --gateway {gateway!r}", "use an IPv4 address") from None
                if gw not in net or gw in (net.network_address, net.broadcast_address):
                    raise UsageError(f"--gateway {gateway} is not a host address of {net}", "use one inside --subnet")
            else:
                gw = net.network_address + 1
            index = 1
            bridges = {r.bridge for r in records}
            while f"{BRIDGE_PREFIX}{index}" in bridges:
                index += 1
            record = NetworkRecord(
                name=name,
                id=secrets.token_hex(32),
                subnet=str(net),
                gateway=str(gw),
                bridge=f"{BRIDGE_PREFIX}{index}",
                created=now_rfc3339(),
                labels=dict(labels or {}),
                internal=internal,
            )
            self._write(record)
            return record

    def remove(self, name_or_id: str, in_use: Iterable[str] = ()) -> NetworkRecord:
        """Remove a record; ConflictError when containers (``in_use``) are still attached."""
        with self.locked():
            record = self.get(name_or_id)
            if record.name == DEFAULT_NETWORK:
                raise ConflictError(f"{DEFAULT_NETWORK} is a pre-defined network and cannot be removed",
                                    "remove the user-defined networks by their names")
            users = list(in_use)
            if users:
                raise ConflictError(
                    f"network {record.name} is in use by {', '.join(users)}",
                    "remove or disconnect those containers first",
                )
            self._path(record.name).unlink(missing_ok=True)
            return record

    def prune(self, in_use: dict[str, list[str]] | None = None) -> list[str]:
        """Remove every network no container uses; their names."""
        in_use = in_use or {}
        removed = []
        with self.locked():
            for record in self.records():
                if record.name != DEFAULT_NETWORK and not in_use.get(record.name):
                    self._path(record.name).unlink(missing_ok=True)
                    removed.append(record.name)
        return removed


def allocate_address(record: NetworkRecord, taken: Iterable[str]) -> str:
    """The first free host address of the network (not the gateway)."""
    used = {ipaddress.IPv4Address(a) for a in taken} | {ipaddress.IPv4Address(record.gateway)}
    for host in record.network.hosts():
        if host not in used:
            return str(host)
    raise ConflictError(f"network {record.name} ({record.subnet}) has no free address", "use a larger --subnet")
