"""User-defined networks: one rootless network namespace per user, a bridge per network inside it,
and a veth pair per container and network (the design podman uses for rootless bridge networks).

    host netns ── pasta (or slirp4netns) ── eth0 │ rootless netns │ rl1 (10.89.0.1/24) ── vethA ═ eth0 of A
                                                 │  ip_forward=1  │                   └─ vethB ═ eth0 of B
                                                 │  nft: NAT out, │ rl2 (10.89.1.1/24) ── vethC ═ eth0 of C
                                                 │  no rl1<->rl2  │

The rootless netns is created inside rl's user namespace (no root anywhere) and bind-mounted to a
file in the runtime directory, so that later rl commands can join it; pasta (or slirp4netns), the
same helper ``--network pasta`` uses, gives it the way out and keeps running after the last container
(as podman's does) until ``rl network prune``, ``rl system migrate`` or ``rl system reset``.

Isolation: packets between two bridges are dropped in the forward hook (nftables, table ``inet rl``);
traffic leaving for the outside is masqueraded to the helper's interface. Containers find each other
through /etc/hosts lines the engine writes into every peer's hosts file.

Published ports of a container on a user-defined network are served by a small forwarder
(``rootless.network.portfwd``, podman's rootlessport in miniature): it listens on the host and
connects to the container's address from inside the rootless netns.

pyroute2 is imported only in the forked children that configure links.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rootless.errors import HostError, RLError, RuntimeSetupError, UsageError
from rootless.executables import which
from rootless.network import dns
from rootless.network.driver import (
    Features,
    NetworkDriver,
    NetworkOptions,
    NetworkState,
    ProbeResult,
    alive,
    get_driver,
    stop_helper,
)
from rootless.network.netns import NetNS, in_netns, run_detached
from rootless.network.networks import NetworkRecord
from rootless.records import field, record

NFT_TABLE = "rl"
BRIDGE_MTU = 65520  # as pasta's and slirp4netns's links: the bridges carry their traffic
VETH_PREFIX = "veth"


def _is_mountpoint(path: Path) -> bool:
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except OSError:
        return False


def nft_ruleset(records: Sequence[NetworkRecord], uplink: str = "") -> str:
    """The whole nftables configuration of the rootless netns for these networks.

    Forwarding between two different bridges is dropped (isolation); an ``internal`` network may
    not leave its bridge at all; everything else from a network's subnet is masqueraded on the way
    out.
    """
    lines = [f"table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}", f"table inet {NFT_TABLE} {{"]
    lines += ["  chain rl_forward {", "    type filter hook forward priority 0; policy accept;"]
    for r in records:
        lines.append(f'    iifname "{r.bridge}" oifname "{r.bridge}" accept')
        if r.internal:
            lines.append(f'    iifname "{r.bridge}" drop')
            lines.append(f'    oifname "{r.bridge}" drop')
    bridges = ", ".join(f'"{r.bridge}"' for r in records)
    if bridges:
        lines.append(f"    iifname {{ {bridges} }} oifname {{ {bridges} }} drop")
    lines.append("  }")
    lines += ["  chain rl_postrouting {", "    type nat hook postrouting priority 100; policy accept;"]
    for r in records:
        if not r.internal:
            out = f'oifname "{uplink}" ' if uplink else f"oifname != {{ {bridges} }} "
            lines.append(f"    ip saddr {r.subnet} {out}masquerade")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def nft_binary() -> str | None:
    """nft, which sets up NAT and isolation in the rootless netns (also outside a user's PATH)."""
    return which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None)


# ---------------------------------------------------------------- work done inside namespaces


def _sync_links(records: list[dict[str, Any]], remove: list[str], ruleset: str) -> dict[str, Any]:
    """Runs in the rootless netns: bridges up with their gateway, forwarding on, nftables rules."""
    from pyroute2 import IPRoute

    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")
    with IPRoute() as ipr:
        for name in remove:
            for idx in ipr.link_lookup(ifname=name):
                ipr.link("del", index=idx)
        for r in records:
            found = ipr.link_lookup(ifname=r["bridge"])
            if not found:
                ipr.link("add", ifname=r["bridge"], kind="bridge")
                found = ipr.link_lookup(ifname=r["bridge"])
            idx = found[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
            if r["gateway"] not in have:
                ipr.addr("add", index=idx, address=r["gateway"], prefixlen=int(r["subnet"].split("/")[1]))
            ipr.link("set", index=idx, state="up")
    nft = nft_binary()
    if nft is None:
        return {"nft": "nft is not installed"}
    run = subprocess.run([nft, "-f", "-"], input=ruleset, capture_output=True, text=True, timeout=20)
    return {"nft": run.stderr.strip() if run.returncode else ""}


def _connect(container_ns: str, bridge: str, veth: str, ifname: str, address: str, prefixlen: int,
             gateway: str, default_route: bool, mtu: int) -> dict[str, Any]:
    """Runs in the rootless netns: a veth pair, ``veth`` on ``bridge`` and ``ifname`` created in the
    container's netns, which is then joined to give ``ifname`` its address, the link and the
    default route when asked. Plain rtnetlink (``rootless.network.rtnl``): no pyroute2 per run."""
    import socket

    from rootless.network import rtnl
    from rootless.network.netns import lo_up, mac_address
    from rootless.runtime.syscalls import CLONE_NEWNET, SYSCALLS

    fd = os.open(container_ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rtnl.Netlink() as nl:
            nl.delete_link(veth)  # a leftover of an earlier start of the same container
            nl.add_veth(veth, ifname, fd, mtu, master=socket.if_nametoindex(bridge))
        veth_index = socket.if_nametoindex(veth)
        SYSCALLS.setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    index = socket.if_nametoindex(ifname)
    with rtnl.Netlink() as nl:
        nl.add_address(index, address, prefixlen)
        nl.set_up(index)
        if default_route:
            nl.add_default_route(index, gateway)
    lo_up()
    return {"mac": mac_address(ifname), "index": veth_index}


def _disconnect(veths: list[tuple[str, int]]) -> None:
    from rootless.network import rtnl

    with rtnl.Netlink() as nl:
        for name, index in veths:
            with contextlib.suppress(OSError):
                nl.delete_link(name, index)


# ---------------------------------------------------------------- the rootless netns


class RootlessNetns:
    """The per-user rootless network namespace: ``netns`` (bind-mounted nsfs file), ``state.json``
    (the helper's NetworkState) and ``.lock`` in ``run_dir``; every method runs as root in rl's
    user namespace (after ``pause.enter``)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "netns"
        self.state_file = run_dir / "state.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @property
    def netns(self) -> NetNS:
        return NetNS(path=str(self.path))

    def helper_state(self) -> NetworkState | None:
        try:
            return NetworkState.from_json(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def is_up(self) -> bool:
        state = self.helper_state()
        return (
            _is_mountpoint(self.path)
            and state is not None
            and (state.driver == "none" or alive(state.helper_pid, state.helper_start_time))
        )

    def ensure(self, helper: str = "") -> NetworkState:
        """The running rootless netns (created with its helper when missing); the helper's state."""
        with self.locked():
            state = self.helper_state()
            if state is not None and self.is_up():
                return state
            self._stop_locked()
            return self._create(helper)

    def _create(self, helper: str) -> NetworkState:
        from rootless.runtime.syscalls import CLONE_NEWNET, MS_BIND, SYSCALLS

        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.touch()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                SYSCALLS.unshare(CLONE_NEWNET)
                SYSCALLS.mount("/proc/self/ns/net", str(self.path), None, MS_BIND)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0 or not _is_mountpoint(self.path):
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise RuntimeSetupError(
                "cannot create the rootless network namespace: unshare or bind mount failed",
                "run 'rl system check'; the kernel must allow network namespaces in user namespaces",
            )
        try:
            driver = get_driver(helper)
            probed = driver.probe()
            if not isinstance(probed, Features):
                raise probed
            state = driver.setup(self.netns, NetworkOptions(run_dir=self.run_dir, ipv6=False))
        except BaseException:
            self._release()
            raise
        self.state_file.write_text(json.dumps(state.to_json()))
        return state

    def _release(self) -> None:
        from rootless.runtime.syscalls import MNT_DETACH, SYSCALLS

        with contextlib.suppress(OSError):
            SYSCALLS.umount(str(self.path), MNT_DETACH)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _stop_locked(self) -> bool:
        state = self.helper_state()
        was = state is not None or _is_mountpoint(self.path)
        if state is not None:
            with contextlib.suppress(RLError):
                get_driver(state.driver).teardown(state)
        self._release()
        for leftover in self.run_dir.iterdir():  # the helper's pid file, logs, sockets
            if leftover.name != ".lock":
                with contextlib.suppress(OSError):
                    leftover.unlink()
        return was

    def stop(self) -> bool:
        """Stop the helper and drop the namespace (with every bridge and veth in it)."""
        if not self.run_dir.exists():
            return False
        with self.locked():
            return self._stop_locked()

    def sync(self, records: Sequence[NetworkRecord], remove: Sequence[str] = ()) -> None:
        """Bridges for ``records`` (all of the user's networks) and the nftables rules between them."""
        state = self.helper_state()
        uplink = state.interface if state and state.interface not in ("", "lo") else ""
        ruleset = nft_ruleset(records, uplink)
        data = [{"bridge": r.bridge, "gateway": r.gateway, "subnet": r.subnet} for r in records]
        key = json.dumps([data, ruleset])
        synced = self.run_dir / "synced"
        if not remove:
            with contextlib.suppress(OSError):
                if synced.read_text() == key:
                    return  # bridges and rules as they are: no fork, no pyroute2, no nft
        result = in_netns(self.netns, lambda: _sync_links(data, list(remove), ruleset), "set up the bridges in")
        if result.get("nft"):
            raise HostError(
                f"cannot set up network isolation in the rootless network namespace: {result['nft']}",
                "check that nft works ('nft list ruleset' in 'rl unshare'), or use --network pasta",
            )
        tmp = synced.with_name(f".synced.{os.getpid()}")
        tmp.write_text(key)
        os.replace(tmp, synced)


# ---------------------------------------------------------------- the driver


@record
class Attachment:
    """One network a container joins: its record and the address allocated there."""

    record: NetworkRecord
    address: str
    aliases: list[str] = field(default_factory=list)


def veth_name(cid: str, index: int) -> str:
    return f"{VETH_PREFIX}{cid[:8]}{index}"[:15]


def network_entry(att: Attachment, ifname: str, veth: str, mac: str, veth_index: int = 0) -> dict[str, Any]:
    """docker's NetworkSettings.Networks[name] (the parts that apply), plus what teardown needs."""
    return {
        "NetworkID": att.record.id,
        "IPAddress": att.address,
        "IPPrefixLen": att.record.network.prefixlen,
        "Gateway": att.record.gateway,
        "MacAddress": mac,
        "Aliases": list(att.aliases),
        "Interface": ifname,
        "Veth": veth,
        "VethIndex": veth_index,
        "Bridge": att.record.bridge,
    }


class BridgeDriver(NetworkDriver):
    """``--network NAME`` for user-defined networks. ``name`` is the mode (the network names);
    states say ``driver="bridge"``."""

    kind = "bridge"

    def __init__(self, helper: RootlessNetns, networks: Sequence[NetworkRecord], cid: str = "") -> None:
        self.helper = helper
        self.networks = list(networks)
        self.name = ",".join(r.name for r in networks)
        self.cid = cid
        self.attachments: list[Attachment] = []  # filled by the engine (addresses) before setup
        self.peers: list[tuple[str, list[str]]] = []

    def probe(self) -> ProbeResult:
        return Features(name="bridge")

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        if netns_ is None:
            raise UsageError("a user-defined network needs a network namespace", "this is a bug in the caller")
        if not self.attachments:
            raise UsageError("no network to attach", "this is a bug in the caller")
        helper_state = self.helper.ensure()
        self.helper.sync(self.networks)
        entries: dict[str, dict[str, Any]] = {}
        try:
            for index, att in enumerate(self.attachments):
                entries[att.record.name] = connect(self.helper, netns_, att, self.cid, index, default_route=index == 0)
            pid = started = 0
            if options.ports:
                from rootless.network import portfwd

                ports = self.check_ports(options)
                pid, started = portfwd.start(ports, self.attachments[0].address, self.helper.path,
                                             options.run_dir or self.helper.run_dir)
            else:
                ports = []
        except BaseException:
            disconnect(self.helper, list(entries.values()))
            raise
        first = self.attachments[0]
        return self.state(netns_, options, helper_state, entries, first, ports, pid, started)

    def state(self, netns_: NetNS, options: NetworkOptions, helper_state: NetworkState,
              entries: dict[str, dict[str, Any]], first: Attachment, ports: list[Any], pid: int,
              started: int) -> NetworkState:
        forwarder = helper_state.dns_servers[0] if helper_state.dns_servers else None
        resolv = dns.container_resolv_conf(
            dns.read_host_resolv_conf(options.host_resolv_conf),
            forwarder=forwarder,
            prefer_forwarder=helper_state.driver == "slirp4netns",
            ipv6=False,
            dns=options.dns,
            dns_search=options.dns_search,
            dns_options=options.dns_options,
        )
        hosts = dns.container_hosts(
            hostname=options.hostname,
            aliases=options.aliases,
            addresses=[first.address],
            add_hosts=options.add_hosts,
            host_gateway=helper_state.host_gateway or None,
        )
        entry = entries[first.record.name]
        return NetworkState(
            driver=self.kind,
            interface=entry["Interface"],
            ipv4=first.address,
            prefixlen=first.record.network.prefixlen,
            gateway=first.record.gateway,
            mac=entry["MacAddress"],
            mtu=BRIDGE_MTU,
            host_gateway=helper_state.host_gateway,
            dns_servers=resolv.nameservers,
            ports=ports,
            exposed=list(options.exposed),
            helper_pid=pid,
            helper_start_time=started,
            resolv_conf=resolv.render(),
            hosts=hosts,
            netns=netns_,
            networks=entries,
        )

    def teardown(self, state: NetworkState) -> None:
        stop_helper(state.helper_pid, state.helper_start_time)
        if state.networks and self.helper.is_up():
            disconnect(self.helper, list(state.networks.values()), wait=False)


def connect(helper: RootlessNetns, container: NetNS, att: Attachment, cid: str, index: int,
            default_route: bool) -> dict[str, Any]:
    """Put the container (its netns ``container``) on ``att``'s bridge as eth<index>."""
    veth = veth_name(cid, index)
    ifname = f"eth{index}"
    rec = att.record
    result = in_netns(
        helper.netns,
        lambda: _connect(container.path, rec.bridge, veth, ifname, att.address, rec.network.prefixlen,
                         rec.gateway, default_route, BRIDGE_MTU),
        f"connect to network {rec.name} through",
    )
    return network_entry(att, ifname, veth, str(result.get("mac", "")), int(result.get("index", 0)))


def disconnect(helper: RootlessNetns, entries: Sequence[dict[str, Any]], wait: bool = True) -> None:
    """Delete the veth pairs of these network entries (the container's end goes with its host end).

    Without ``wait`` the work is left to a detached child: deleting a link waits for the kernel's
    RCU grace period (~15 ms here), which a stopping container need not sit through. The link is
    deleted by its index, so a pair made meanwhile under the same name (a restart) is not touched.
    """
    veths = [(str(e["Veth"]), int(e.get("VethIndex") or 0)) for e in entries if e.get("Veth")]
    if not veths:
        return
    if wait:
        with contextlib.suppress(RLError):
            in_netns(helper.netns, lambda: _disconnect(veths), "remove the veth pairs in")
    elif all(index for _, index in veths):
        run_detached(helper.netns, lambda: _disconnect(veths))
    else:  # entries of an older rl: by name, so wait
        disconnect(helper, entries)
