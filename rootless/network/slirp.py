"""slirp4netns(1): a user-mode TCP/IP stack behind a tap device, 10.0.2.0/24.

10.0.2.2 is the gateway and reaches the host's 127.0.0.1 (unless --disable-host-loopback),
10.0.2.3 is its DNS forwarder, the container is 10.0.2.100. slirp4netns does not daemonise: rl
starts it detached (double fork, own session, so it outlives `rl run -d`) and waits on --ready-fd.
Published ports go through rl's forwarder (rootless.network.portfwd, straight into the namespace,
podman's default port_handler=rootlesskit), or with ``port_handler=slirp4netns`` through
slirp4netns' API socket (add_hostfwd: IPv4 only, and every byte through the user-mode TCP stack).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

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

INTERFACE = "tap0"
ADDRESS = "10.0.2.100"
GATEWAY = "10.0.2.2"
DNS_SERVER = "10.0.2.3"
GATEWAY6 = "fd00::2"
MAX_MTU = 65521

_probed: dict[str, ProbeResult] = {}


def slirp_features(help_text: str, version_text: str = "", path: str = "") -> ProbeResult:
    """rootlesskit's DetectFeatures idea: what the ``--help`` text offers decides what rl may use."""
    flags = parse_help(help_text)
    missing = [f for f in ("configure", "ready-fd", "api-socket") if f not in flags]
    if missing:
        return HostError(
            f"slirp4netns at {path or 'slirp4netns'} is too old: no --{', --'.join(missing)}",
            "install slirp4netns 0.4 or later",
        )
    version = ""
    for line in version_text.splitlines():
        if line.startswith("slirp4netns version"):
            version = line.split()[-1]
    return Features(name="slirp4netns", path=path, version=version, flags=flags, ipv6="enable-ipv6" in flags)


def build_args(
    binary: str, ns: NetNS, options: NetworkOptions, features: Features, ready_fd: int, api: str
) -> list[str]:
    mtu = min(options.mtu or 65520, MAX_MTU)
    args = [binary, "--configure", f"--mtu={mtu}", f"--ready-fd={ready_fd}", f"--api-socket={api}"]
    if options.ipv6 and features.has("enable-ipv6"):
        args.append("--enable-ipv6")
    if not options.host_loopback:
        if not features.has("disable-host-loopback"):
            raise HostError(
                "slirp4netns here cannot keep the container from the host's loopback (no --disable-host-loopback)",
                "install slirp4netns 0.4 or later",
            )
        args.append("--disable-host-loopback")
    if features.has("enable-seccomp"):
        args.append("--enable-seccomp")
    args += options.extra_args
    if features.has("netns-type"):
        args.append("--netns-type=path")
        if ns.userns:
            args.append(f"--userns-path={ns.userns}")
        args += [ns.path, INTERFACE]
    elif ns.pid:
        args += [str(ns.pid), INTERFACE]
    else:
        raise HostError("slirp4netns here needs a pid (no --netns-type=path)", "install slirp4netns 0.4 or later")
    return args


def api_request(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on the slirp4netns API socket; its JSON answer."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
                continue
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            answer: dict[str, Any] = json.loads(data or b"{}")
            return answer
        finally:
            sock.close()


def add_hostfwd(api: str, m: PortMapping) -> dict[str, Any]:
    return api_request(
        api,
        {
            "execute": "add_hostfwd",
            "arguments": {
                "proto": m.protocol,
                "host_addr": m.host_ip or "0.0.0.0",
                "host_port": m.host_port,
                "guest_port": m.container_port,
            },
        },
    )


def spawn_detached(argv: list[str], keep_fd: int, stderr_path: str) -> int:
    """Start ``argv`` as a grandchild in its own session (not our child); its pid."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    null = os.open(os.devnull, os.O_RDWR)
                    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(null, 0)
                    os.dup2(null, 1)
                    os.dup2(err, 2)
                    os.set_inheritable(keep_fd, True)
                    os.execv(argv[0], argv)
                except OSError as e:
                    os.write(2, f"cannot run {argv[0]}: {e.strerror}\n".encode())
                os._exit(127)
            os.write(w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = os.read(r, 64)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return int(data or b"0")


class SlirpDriver(HelperDriver):
    """``port_handler``: "rl" (the default) or "slirp4netns" (add_hostfwd)."""

    name = "slirp4netns"
    program = "slirp4netns"
    package = "slirp4netns"
    install_hint = "install the slirp4netns package"
    probed = _probed

    def features(self, help_text: str, version_text: str, binary: str) -> ProbeResult:
        return slirp_features(help_text, version_text, binary)

    def dual_stack_ports(self, options: NetworkOptions) -> bool:
        return self.port_handler == "rl" and options.ipv6

    def setup(self, netns_: NetNS | None, options: NetworkOptions) -> NetworkState:
        if netns_ is None:
            raise UsageError("slirp4netns needs a network namespace", "this is a bug in the caller")
        features = self.probe()
        if isinstance(features, HostError):
            raise features
        relayed = self.port_handler == "rl"
        for m in options.ports:
            if ":" in m.host_ip and not relayed:
                raise UsageError(
                    f"cannot publish {m.key} on [{m.host_ip}] with slirp4netns: it forwards IPv4 host addresses only",
                    "use an IPv4 address, or leave out port_handler=slirp4netns",
                )
        ports = self.check_ports(options)
        tmp = None
        if options.run_dir is None:
            tmp = tempfile.mkdtemp(prefix="rl-slirp-")
            run_dir = Path(tmp)
        else:
            run_dir = options.run_dir
        api = str(run_dir / "slirp4netns.sock")
        log = str(run_dir / "slirp4netns.log")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(api)
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = started = 0
        forwarder = None
        try:
            if relayed and ports:  # bound and started first: it gets ready while slirp4netns does
                forwarder = portfwd.Forwarder(ports, netns_.path, options.run_dir, userns=netns_.userns,
                                              dual_stack=self.dual_stack_ports(options))
            args = build_args(features.path, netns_, options, features, w, api)
            pid = spawn_detached(args, w, log)
            os.close(w)
            w = -1
            started = start_time(pid)
            self._wait_ready(r, pid, log, options.ready_timeout)
            for m in [] if relayed else ports:
                answer = add_hostfwd(api, m)
                if "error" in answer:
                    desc = (
                        str(answer["error"].get("desc", answer["error"])) if isinstance(answer["error"], dict) else ""
                    )
                    raise ConflictError(
                        f"port {m.host_port}/{m.protocol} is already in use on {m.display_ip}: slirp4netns: {desc}",
                        f"publish another host port (-p OTHER:{m.container_port})",
                    )
            state = self._state(netns_, options, ports, pid, started, api, options.ipv6 and features.ipv6)
            if forwarder is not None:
                state.relay_pid, state.relay_start_time = forwarder.serve(state.ipv4, state.ipv6,
                                                                          options.ready_timeout)
        except BaseException:
            if forwarder is not None:
                forwarder.cancel()
            stop_helper(pid, started)
            with contextlib.suppress(OSError):
                os.unlink(api)
            raise
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        if tmp:
            state.api_socket = ""  # removed with the temporary directory: no more port changes
        return state

    def _wait_ready(self, ready: int, pid: int, log: str, timeout: float) -> None:
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            pidfd = None
        try:
            watch = [ready] + ([pidfd] if pidfd is not None else [])
            readable, _, _ = select.select(watch, [], [], timeout)
            if ready in readable:
                data = os.read(ready, 16)
                if data.startswith(b"1"):
                    return
            if not readable:
                raise HostError(
                    f"cannot set up slirp4netns networking: slirp4netns did not get ready within {timeout:g}s",
                    "run slirp4netns by hand to see where it hangs",
                )
            try:
                with open(log) as f:
                    reason = helper_error_text(f.read())
            except OSError:
                reason = ""
            raise HostError(
                f"cannot set up slirp4netns networking: slirp4netns exited: {reason or 'no error message'}",
                "check that /dev/net/tun works and that slirp4netns runs by hand",
            )
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _state(
        self,
        ns: NetNS,
        options: NetworkOptions,
        ports: list[PortMapping],
        pid: int,
        started: int,
        api: str,
        ipv6_on: bool,
    ) -> NetworkState:
        iface = netns.inspect(ns, INTERFACE)
        host_gateway = GATEWAY if options.host_loopback else ""
        resolv = dns.container_resolv_conf(
            dns.read_host_resolv_conf(options.host_resolv_conf),
            forwarder=DNS_SERVER,
            prefer_forwarder=True,
            ipv6=False,
            dns=options.dns,
            dns_search=options.dns_search,
            dns_options=options.dns_options,
        )
        ipv4 = iface.ipv4 or ADDRESS
        hosts = dns.container_hosts(
            hostname=options.hostname,
            aliases=options.aliases,
            addresses=[ipv4],
            add_hosts=options.add_hosts,
            host_gateway=host_gateway or None,
        )
        v6, v6len = iface.ipv6[0] if iface.ipv6 else ("", 0)
        return NetworkState(
            driver=self.name,
            interface=INTERFACE,
            ipv4=ipv4,
            prefixlen=iface.prefixlen or 24,
            gateway=iface.gateway or GATEWAY,
            ipv6=v6,
            ipv6_prefixlen=v6len,
            gateway6=GATEWAY6 if ipv6_on else "",
            mac=iface.mac,
            mtu=iface.mtu,
            host_gateway=host_gateway,
            dns_servers=resolv.nameservers,
            ports=ports,
            exposed=list(options.exposed),
            helper_pid=pid,
            helper_start_time=started,
            port_handler=self.port_handler if ports else "",
            api_socket=api,
            resolv_conf=resolv.render(),
            hosts=hosts,
            netns=ns,
        )
