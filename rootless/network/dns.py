"""The container's /etc/resolv.conf and /etc/hosts, as text. Pure functions; the drivers choose the
inputs (the helper's DNS forwarder, the address that reaches the host, the container's own address).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from rootless.errors import UsageError
from rootless.records import field, record

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"
# Names that reach the host from inside a container (podman's and docker's).
HOST_ALIASES = ("host.containers.internal", "host.docker.internal")
# docker's --add-host NAME:host-gateway
HOST_GATEWAY = "host-gateway"
MAX_SEARCH = 6  # glibc before 2.26 ignored more; docker warns above it


@record
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = []
        if self.search:
            lines.append("search " + " ".join(self.search))
        lines.extend(f"nameserver {ns}" for ns in self.nameservers)
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> ResolvConf:
    """nameserver/search/domain/options lines of resolv.conf(5); the last search or domain wins."""
    conf = ResolvConf()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        word, *args = line.split()
        if word == "nameserver" and args:
            conf.nameservers.append(args[0])
        elif word in ("search", "domain"):
            conf.search = args if word == "search" else args[:1]
        elif word == "options":
            conf.options.extend(args)
    return conf


def read_host_resolv_conf(path: str = HOST_RESOLV_CONF) -> ResolvConf:
    try:
        with open(path) as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return ResolvConf()


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def is_ipv6(address: str) -> bool:
    return ":" in address


def validate_dns(servers: Iterable[str]) -> list[str]:
    """``--dns`` values: IP addresses only."""
    result = []
    for server in servers:
        try:
            result.append(str(ipaddress.ip_address(server)))
        except ValueError:
            raise UsageError(f"invalid --dns {server!r}: not an IP address", "use --dns 1.1.1.1") from None
    return result


def container_resolv_conf(
    host: ResolvConf,
    *,
    forwarder: str | None = None,
    prefer_forwarder: bool = False,
    ipv6: bool = True,
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_options: Sequence[str] = (),
) -> ResolvConf:
    """What the container's resolv.conf says.

    Servers: ``--dns`` if given; else the helper's forwarder when ``prefer_forwarder`` (slirp4netns'
    10.0.2.3) or when the host's servers are all loopback (systemd-resolved's 127.0.0.53 means
    nothing inside the container); else the host's non-loopback servers (IPv6 ones only with IPv6).
    ``--dns-search .`` clears the search list, as in docker. ``--dns-option`` replaces the host's.
    """
    if dns:
        servers = validate_dns(dns)
    else:
        usable = [s for s in host.nameservers if not is_loopback(s) and (ipv6 or not is_ipv6(s))]
        servers = [forwarder] if forwarder and (prefer_forwarder or not usable) else usable
    if dns_search:
        search = [] if list(dns_search) == ["."] else [s for s in dns_search if s != "."]
    else:
        search = list(host.search)
    options = list(dns_options) if dns_options else list(host.options)
    return ResolvConf(servers, search[:MAX_SEARCH] if dns_search else search, options)


# ---------------------------------------------------------------- /etc/hosts

LOCALHOST_LINES = (
    ("127.0.0.1", ("localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4")),
    ("::1", ("localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6")),
)


def parse_add_host(entry: str) -> tuple[str, str]:
    """``--add-host NAME:IP`` (also ``NAME=IP``, ``NAME:[v6]``, ``NAME:host-gateway``) -> (name, ip)."""
    name, sep, ip = entry.partition("=")
    if not sep:
        name, sep, ip = entry.partition(":")
    ip = ip.strip()
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if not sep or not name or not ip:
        raise UsageError(f"invalid --add-host {entry!r}", "use --add-host NAME:IP or NAME:host-gateway")
    if ip != HOST_GATEWAY:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise UsageError(f"invalid --add-host {entry!r}: {ip!r} is not an IP address", "use NAME:IP") from None
    return name, ip


def container_hosts(
    *,
    hostname: str = "",
    addresses: Sequence[str] = (),
    aliases: Sequence[str] = (),
    add_hosts: Sequence[tuple[str, str]] = (),
    host_gateway: str | None = None,
    peers: Sequence[tuple[str, Sequence[str]]] = (),
) -> str:
    """The container's /etc/hosts.

    ``addresses`` are the container's own (its hostname and aliases map to them; with none, the
    hostname maps to loopback so it still resolves); ``host_gateway`` is the address reaching the
    host (host.containers.internal, host.docker.internal, and ``--add-host X:host-gateway``);
    ``peers`` are (ip, names) of other containers on the same user-defined network.
    """
    lines = [f"{ip}\t{' '.join(names)}" for ip, names in LOCALHOST_LINES]
    for name, ip in add_hosts:
        if ip == HOST_GATEWAY:
            if not host_gateway:
                raise UsageError(
                    f"cannot resolve --add-host {name}:{HOST_GATEWAY}: this network has no host gateway",
                    "give an IP address instead",
                )
            ip = host_gateway
        lines.append(f"{ip}\t{name}")
    own = [n for n in (hostname, *aliases) if n]
    own = list(dict.fromkeys(own))
    if own:
        if addresses:
            lines.extend(f"{ip}\t{' '.join(own)}" for ip in addresses)
        else:
            lines.append(f"127.0.0.1\t{' '.join(own)}")
            lines.append(f"::1\t{' '.join(own)}")
    for ip, names in peers:
        if names:
            lines.append(f"{ip}\t{' '.join(names)}")
    if host_gateway:
        taken = {name for name, _ in add_hosts}
        names = [n for n in HOST_ALIASES if n not in taken]
        if names:
            lines.append(f"{host_gateway}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def host_network_hosts(host_text: str, add_hosts: Sequence[tuple[str, str]] = ()) -> str:
    """``--network host``: the host's /etc/hosts plus ``--add-host`` lines (host-gateway is 127.0.0.1)."""
    text = host_text if host_text.endswith("\n") or not host_text else host_text + "\n"
    extra = [f"{'127.0.0.1' if ip == HOST_GATEWAY else ip}\t{name}" for name, ip in add_hosts]
    return text + "".join(line + "\n" for line in extra)
