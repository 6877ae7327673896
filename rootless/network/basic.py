"""``--network none`` (a private namespace with only lo, up) and ``--network host`` (no network
namespace: the container shares the host's, and gets the host's resolv.conf and hosts)."""

from __future__ import annotations

from rootless.errors import UsageError
from rootless.network import dns
from rootless.network.driver import Features, NetworkDriver, NetworkOptions, NetworkState, ProbeResult
from rootless.network.netns import NetNS


def _no_ports(name: str, options: NetworkOptions) -> None:
    if options.ports:
        raise UsageError(
            f"cannot publish ports with --network {name}",
            "leave out -p/-P, or use --network pasta or slirp4netns"
            + (" (with --network host the container's ports are the host's)" if name == "host" else ""),
        )


class NoneDriver(NetworkDriver):
    name = "none"
    files_before_start = True  # nothing to configure but lo, which the container's setup brings up

    def probe(self) -> ProbeResult:
        return Features(name=self.name)

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        _no_ports(self.name, options)
        # lo is already up: the container's setup process brings it up when it creates the namespace.
        # Without ``netns_`` (at create, before there is one) the state only carries the files.
        resolv = dns.container_resolv_conf(
            dns.read_host_resolv_conf(options.host_resolv_conf),
            ipv6=options.ipv6,
            dns=options.dns,
            dns_search=options.dns_search,
            dns_options=options.dns_options,
        )
        hosts = dns.container_hosts(hostname=options.hostname, aliases=options.aliases, add_hosts=options.add_hosts)
        return NetworkState(
            driver=self.name,
            interface="lo",
            dns_servers=resolv.nameservers,
            resolv_conf=resolv.render(),
            hosts=hosts,
            exposed=list(options.exposed),
            netns=netns_,
        )


class HostDriver(NetworkDriver):
    name = "host"
    needs_netns = False

    def probe(self) -> ProbeResult:
        return Features(name=self.name)

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        _no_ports(self.name, options)
        try:
            with open(options.host_resolv_conf) as f:
                resolv_text = f.read()
        except OSError:
            resolv_text = ""
        if options.dns or options.dns_search or options.dns_options:
            resolv = dns.container_resolv_conf(
                dns.parse_resolv_conf(resolv_text),
                dns=options.dns,
                dns_search=options.dns_search,
                dns_options=options.dns_options,
            )
            # the host's own loopback resolvers work here: keep them unless --dns replaced them
            if not options.dns:
                resolv.nameservers = dns.parse_resolv_conf(resolv_text).nameservers
            resolv_text = resolv.render()
        try:
            with open(options.host_hosts) as f:
                hosts_text = f.read()
        except OSError:
            hosts_text = dns.container_hosts()
        return NetworkState(
            driver=self.name,
            dns_servers=dns.parse_resolv_conf(resolv_text).nameservers,
            resolv_conf=resolv_text,
            hosts=dns.host_network_hosts(hosts_text, options.add_hosts),
            host_gateway="127.0.0.1",
        )


class ContainerNetDriver(NetworkDriver):
    """``--network container:NAME``: join another container's network namespace (like a pod).

    Nothing is set up and nothing runs: the container gets the other one's interfaces, its
    /etc/hosts and /etc/resolv.conf (copied), and no ports of its own."""

    needs_netns = False  # the spec joins ``join_path`` instead of creating a namespace

    def __init__(self, target_id: str, join_path: str, hosts: str, resolv_conf: str,
                 copied: NetworkState | None = None) -> None:
        self.name = f"container:{target_id}"
        self.target_id = target_id
        self.join_path = join_path
        self.hosts = hosts
        self.resolv_conf = resolv_conf
        self.copied = copied
        self.last_state: NetworkState | None = None

    def probe(self) -> ProbeResult:
        return Features(name="container")

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        if options.ports:
            raise UsageError(
                "cannot publish ports with --network container:NAME",
                "publish them on the container whose network this one joins",
            )
        c = self.copied
        self.last_state = NetworkState(
            driver="container",
            interface=c.interface if c else "",
            ipv4=c.ipv4 if c else "",
            prefixlen=c.prefixlen if c else 0,
            gateway=c.gateway if c else "",
            mac=c.mac if c else "",
            mtu=c.mtu if c else 0,
            dns_servers=list(c.dns_servers) if c else [],
            exposed=list(options.exposed),
            resolv_conf=self.resolv_conf,
            hosts=self.hosts,
            netns=NetNS(path=self.join_path),
        )
        return self.last_state

    def teardown(self, state: NetworkState) -> None:
        """The namespace belongs to the other container: nothing to stop."""
