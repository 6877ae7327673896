"""pasta(1) from passt: the container gets a tap interface with the host's addresses and routes.

pasta daemonises once the namespace is configured (addresses, routes, lo up) and its ports are
bound, so "the command returned 0" is readiness; ``--pid`` names the daemon. Published ports go
through rl's forwarder (rootless.network.portfwd) and pasta gets ``-t none -u none``, unless
``port_handler=pasta``: then pasta binds them itself (its splice path hands connections from the
host's loopback to the container's 127.0.0.1; the 2023-03 passt loses UDP replies when host and
container ports differ).

Connections to the gateway address are mapped to the host's loopback (unless ``--no-map-gw``), which
is what host.containers.internal resolves to. DNS: ``--dns-forward 169.254.1.1`` relays queries sent
there to the host's first resolver, even when that is 127.0.0.53.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from rootless.errors import ConflictError, HostError, UsageError
from rootless.network import dns, netns, portfwd
from rootless.network.driver import (
    Features,
    HelperDriver,
    NetworkOptions,
    NetworkState,
    ProbeResult,
    helper_error_text,
    parse_help,
    start_time,
    stop_helper,
)
from rootless.network.netns import NetNS
from rootless.network.ports import PortMapping

DNS_FORWARD = "169.254.1.1"
INTERFACE = "eth0"
TUN = "/dev/net/tun"

_probed: dict[str, ProbeResult] = {}


def pasta_features(help_text: str, version_text: str = "", path: str = "") -> ProbeResult:
    flags = parse_help(help_text)
    missing = [f for f in ("config-net", "netns", "pid") if f not in flags]
    if missing:
        return HostError(
            f"pasta at {path or 'pasta'} is too old: no --{', --'.join(missing)}",
            "install a passt package from 2022-09 or later",
        )
    first = version_text.strip().splitlines()[0] if version_text.strip() else ""
    return Features(
        name="pasta",
        path=path,
        version=first.removeprefix("pasta ").strip(),
        flags=flags,
        ipv6="ipv6-only" in flags or "ipv4-only" in flags,
    )


def _spec_runs(mappings: Iterable[PortMapping]) -> list[str]:
    """pasta -t/-u specs, consecutive ports folded into ranges: ``127.0.0.1/8080-8082:80-82``."""
    runs: list[list[PortMapping]] = []
    for m in sorted(mappings, key=lambda m: (m.host_ip, m.host_port)):
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and last.host_ip == m.host_ip
            and m.host_port == last.host_port + 1
            and m.container_port == last.container_port + 1
        ):
            runs[-1].append(m)
        else:
            runs.append([m])
    specs = []
    for run in runs:
        first, last = run[0], run[-1]
        host = f"{first.host_port}" if len(run) == 1 else f"{first.host_port}-{last.host_port}"
        cont = f"{first.container_port}" if len(run) == 1 else f"{first.container_port}-{last.container_port}"
        prefix = f"{first.host_ip}/" if first.host_ip else ""
        specs.append(f"{prefix}{host}:{cont}")
    return specs


def port_args(mappings: Iterable[PortMapping]) -> list[str]:
    """``-t``/``-u`` options; "none" for a protocol without mappings (pasta's default is auto, and
    UDP would otherwise follow the TCP port numbers)."""
    mappings = list(mappings)
    args: list[str] = []
    for flag, proto in (("-t", "tcp"), ("-u", "udp")):
        specs = _spec_runs(m for m in mappings if m.protocol == proto)
        args += [flag, ",".join(specs)] if specs else [flag, "none"]
    return args


def build_args(binary: str, ns: NetNS, options: NetworkOptions, ports: list[PortMapping], pidfile: str) -> list[str]:
    args = [binary, "--config-net", "--quiet", "-I", INTERFACE, "--dns-forward", DNS_FORWARD]
    if options.mtu and options.mtu != 65520:
        args += ["-m", str(options.mtu)]
    if not options.ipv6:
        args.append("-4")
    if not options.host_loopback:
        args.append("--no-map-gw")
    args += port_args(ports)
    args += ["-T", "none", "-U", "none"]  # the container's own 127.0.0.1 stays its own
    args += ["--pid", pidfile]
    args += options.extra_args
    args += ["--netns", ns.path]
    args += ["--userns", ns.userns] if ns.userns else ["--netns-only"]
    return args


class PastaDriver(HelperDriver):
    """``port_handler``: "rl" (the default) relays published ports with rootless.network.portfwd and
    starts pasta with ``-t none -u none``; "pasta" lets pasta bind and forward them itself."""

    name = "pasta"
    program = "pasta"
    package = "passt"
    install_hint = "install the passt package (it provides pasta)"
    probed = _probed

    def host_problem(self) -> HostError | None:
        if not os.access(TUN, os.R_OK | os.W_OK):
            return HostError(
                f"pasta cannot use {TUN}: not readable and writable", f"the admin can run 'chmod 0666 {TUN}'"
            )
        return None

    def features(self, help_text: str, version_text: str, binary: str) -> ProbeResult:
        return pasta_features(help_text, version_text, binary)

    def dual_stack_ports(self, options: NetworkOptions) -> bool:
        return options.ipv6

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        if netns_ is None:
            raise UsageError("pasta needs a network namespace", "this is a bug in the caller")
        binary = self._binary()
        if binary is None:
            raise HostError("cannot set up pasta networking: pasta is not installed", "install the passt package")
        ports = self.check_ports(options)
        relayed = self.port_handler == "rl" and bool(ports)
        tmp = None
        if options.run_dir is None:
            tmp = tempfile.mkdtemp(prefix="rl-pasta-")
            run_dir = Path(tmp)
        else:
            run_dir = options.run_dir
        pidfile = run_dir / "pasta.pid"
        pid = started = 0
        forwarder = None
        try:
            if relayed:  # bound and started first: it gets ready while pasta does
                forwarder = portfwd.Forwarder(ports, netns_.path, options.run_dir, userns=netns_.userns,
                                              dual_stack=self.dual_stack_ports(options))
            pidfile.unlink(missing_ok=True)
            own = [] if relayed else ports
            pid, started = _run_pasta(build_args(binary, netns_, options, own, str(pidfile)), pidfile,
                                      options.ready_timeout, own)
            state = self._state(netns_, options, ports, pid, started)
            if forwarder is not None:
                state.relay_pid, state.relay_start_time = forwarder.serve(state.ipv4, state.ipv6,
                                                                          options.ready_timeout)
        except BaseException:
            if forwarder is not None:
                forwarder.cancel()
            stop_helper(pid, started)
            raise
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        return state

    def _state(
        self, ns: NetNS, options: NetworkOptions, ports: list[PortMapping], pid: int, started: int
    ) -> NetworkState:
        iface = netns.inspect(ns, INTERFACE)
        host_gateway = iface.gateway if options.host_loopback else ""
        resolv = dns.container_resolv_conf(
            dns.read_host_resolv_conf(options.host_resolv_conf),
            forwarder=DNS_FORWARD,
            ipv6=options.ipv6,
            dns=options.dns,
            dns_search=options.dns_search,
            dns_options=options.dns_options,
        )
        addresses = [a for a in [iface.ipv4, *(a for a, _ in iface.ipv6[:1])] if a]
        hosts = dns.container_hosts(
            hostname=options.hostname,
            aliases=options.aliases,
            addresses=addresses,
            add_hosts=options.add_hosts,
            host_gateway=host_gateway or None,
        )
        v6, v6len = iface.ipv6[0] if iface.ipv6 else ("", 0)
        return NetworkState(
            driver=self.name,
            interface=INTERFACE,
            ipv4=iface.ipv4,
            prefixlen=iface.prefixlen,
            gateway=iface.gateway,
            ipv6=v6,
            ipv6_prefixlen=v6len,
            gateway6=iface.gateway6,
            mac=iface.mac,
            mtu=iface.mtu,
            host_gateway=host_gateway,
            dns_servers=resolv.nameservers,
            ports=ports,
            exposed=list(options.exposed),
            helper_pid=pid,
            helper_start_time=started,
            port_handler=self.port_handler if ports else "",
            resolv_conf=resolv.render(),
            hosts=hosts,
            netns=ns,
        )


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _run_pasta(args: list[str], pidfile: Path, timeout: float, ports: list[PortMapping]) -> tuple[int, int]:
    """Run pasta until it daemonises; (daemon pid, start time). Nothing is left running on error."""
    try:
        run = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        _cleanup(pidfile)
        raise HostError(
            f"cannot set up pasta networking: pasta did not get ready within {timeout:g}s",
            "run the same pasta command with --debug to see where it hangs",
        ) from None
    except OSError as e:
        raise HostError(
            f"cannot set up pasta networking: cannot run {args[0]}: {e.strerror}", "reinstall passt"
        ) from None
    pid = _read_pid(pidfile)
    if run.returncode != 0:
        _cleanup(pidfile)
        reason = helper_error_text(run.stderr + run.stdout) or f"exit status {run.returncode}"
        if "bind" in reason and ports:
            raise ConflictError(
                f"cannot publish ports with pasta: {reason}",
                "a host port was taken after rl checked it; publish another one",
            )
        raise HostError(
            f"cannot set up pasta networking: pasta exited with status {run.returncode}: {reason}",
            "check that /dev/net/tun works and that pasta runs by hand",
        )
    started = start_time(pid) if pid else 0
    for _ in range(100):  # the pid file is written just before pasta forks: wait for the daemon
        if pid and started:
            break
        time.sleep(0.001)
        pid = pid or _read_pid(pidfile)
        started = start_time(pid) if pid else 0
    if not pid or not started:
        raise HostError(
            "cannot set up pasta networking: pasta exited without a running daemon", "run pasta by hand with --debug"
        )
    return pid, started


def _cleanup(pidfile: Path) -> None:
    pid = _read_pid(pidfile)
    if pid:
        stop_helper(pid, start_time(pid))
