"""The network driver interface: one per way a container reaches the outside.

    driver = get_driver("pasta")               # or slirp4netns, none, host; default_driver()
    problem = driver.probe()                   # Features, or a HostError naming the admin's fix
    state = driver.setup(NetNS(path), options) # starts the helper; raises RLError, leaves nothing
    ... write state.resolv_conf / state.hosts into the container, save state.to_json()
    driver.teardown(state)                     # stops the helper (SIGTERM, waits, SIGKILL)

``teardown(NetworkState.from_json(saved))`` works in a later rl process: the helper is identified by
pid and start time, never by name.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import select
import signal
import time
from pathlib import Path
from typing import Any

from rootless.errors import HostError, RLError, UsageError
from rootless.executables import which
from rootless.network.dns import HOST_HOSTS, HOST_RESOLV_CONF
from rootless.network.netns import NetNS
from rootless.network.ports import PortMapping, docker_ports
from rootless.records import field, fields, record

DEFAULT_MTU = 65520
DEFAULT_READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@record(frozen=True)
class Features:
    """What a probed helper binary can do."""

    name: str
    path: str = ""
    version: str = ""
    flags: frozenset[str] = frozenset()
    ipv6: bool = False
    port_forwarding: bool = True

    def has(self, flag: str) -> bool:
        return flag in self.flags


ProbeResult = Features | HostError


@record
class NetworkOptions:
    """What the engine asks of the network (from `rl run` flags and the image)."""

    hostname: str = ""
    aliases: list[str] = field(default_factory=list)  # container name, --network-alias
    ports: list[PortMapping] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)  # image ExposedPorts keys, for inspect
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    add_hosts: list[tuple[str, str]] = field(default_factory=list)
    mtu: int = DEFAULT_MTU
    ipv6: bool = True
    host_loopback: bool = True  # may the container reach the host's 127.0.0.1 via the gateway address
    run_dir: Path | None = None  # private directory for pid files, API sockets, logs
    ready_timeout: float = DEFAULT_READY_TIMEOUT
    host_resolv_conf: str = HOST_RESOLV_CONF
    host_hosts: str = HOST_HOSTS
    extra_args: list[str] = field(default_factory=list)  # passed to the helper verbatim (containers.conf)


@record
class NetworkState:
    """What setup did: for the container's files, `rl inspect`, `rl port`, and teardown."""

    driver: str
    interface: str = ""
    ipv4: str = ""
    prefixlen: int = 0
    gateway: str = ""
    ipv6: str = ""
    ipv6_prefixlen: int = 0
    gateway6: str = ""
    mac: str = ""
    mtu: int = 0
    host_gateway: str = ""  # the address that reaches the host's 127.0.0.1 (host.containers.internal)
    dns_servers: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    helper_pid: int = 0
    helper_start_time: int = 0
    port_handler: str = ""  # who serves the published ports: "rl" (portfwd) or the helper's name
    relay_pid: int = 0  # rl's port forwarder (pasta, slirp4netns); user-defined networks: helper_pid
    relay_start_time: int = 0
    api_socket: str = ""
    resolv_conf: str = ""
    hosts: str = ""
    netns: NetNS | None = None
    # user-defined networks (and what container:NAME copied): name -> docker's Networks[name] entry
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("ports", "netns")}
        data["ports"] = [p.to_json() for p in self.ports]
        data["netns"] = self.netns.to_json() if self.netns else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkState:
        values = dict(data)
        values["ports"] = [PortMapping.from_json(p) for p in data.get("ports", [])]
        values["netns"] = NetNS.from_json(data["netns"]) if data.get("netns") else None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def network_settings(self) -> dict[str, Any]:
        """docker's NetworkSettings (the parts that apply)."""
        return {
            "Bridge": "",
            "SandboxKey": self.netns.path if self.netns else "",
            "Ports": docker_ports(self.ports, self.exposed),
            "Gateway": self.gateway,
            "IPAddress": self.ipv4,
            "IPPrefixLen": self.prefixlen,
            "GlobalIPv6Address": self.ipv6,
            "GlobalIPv6PrefixLen": self.ipv6_prefixlen,
            "IPv6Gateway": self.gateway6,
            "MacAddress": self.mac,
            "Networks": {
                name: {k: v for k, v in entry.items() if k not in ("Veth", "Bridge", "Interface")}
                for name, entry in self.networks.items()
            },
        }


class NetworkDriver(abc.ABC):
    """One way of giving a container's network namespace (or not) its network."""

    name: str = ""
    needs_netns: bool = True  # False for host: the container shares rl's network namespace
    # True when hosts and resolv.conf are known without the namespace and nothing must run before
    # the command does (none): the files are written at create, and the driver attached after start.
    files_before_start: bool = False

    @abc.abstractmethod
    def probe(self) -> ProbeResult:
        """Features when this driver can work here, else a HostError (not raised) saying why."""

    @abc.abstractmethod
    def setup(self, netns: NetNS | None, options: NetworkOptions) -> NetworkState:
        """Give ``netns`` its network. Raises RLError; on error nothing is left running."""

    def teardown(self, state: NetworkState) -> None:
        """Stop the port forwarder and the helper of ``state`` (a no-op for drivers without them)."""
        stop_helper(state.relay_pid, state.relay_start_time)
        stop_helper(state.helper_pid, state.helper_start_time)
        if state.api_socket:
            with contextlib.suppress(OSError):
                os.unlink(state.api_socket)

    def check_ports(self, options: NetworkOptions) -> list[PortMapping]:
        """Validate and assign host ports before any helper starts (shared by pasta and slirp4netns)."""
        from rootless.network import ports

        ports.check_unprivileged(options.ports)
        assigned = ports.assign_host_ports(options.ports, dual_stack=self.dual_stack_ports(options))
        ports.check_host_ports([m for m in assigned if m in options.ports], self.dual_stack_ports(options))
        return assigned

    def dual_stack_ports(self, options: NetworkOptions) -> bool:
        return False


# ---------------------------------------------------------------- helper processes


class HelperDriver(NetworkDriver):
    """A driver that runs a user-mode networking program (pasta, slirp4netns): found on PATH (or at
    ``binary``), checked (``host_problem``), and probed once per binary for its features from its
    ``--help`` and ``--version`` (``features``; the results are kept in ``probed``)."""

    program = ""  # the command's name
    package = ""  # what provides it
    install_hint = ""
    probed: dict[str, ProbeResult]

    def __init__(self, binary: str | None = None, port_handler: str = "rl") -> None:
        self.binary = binary
        self.port_handler = resolve_port_handler(port_handler, self.name)

    def _binary(self) -> str | None:
        return find_binary(self.program, self.binary)

    def host_problem(self) -> HostError | None:
        """Why the program cannot work here although it is installed, or None."""
        return None

    @abc.abstractmethod
    def features(self, help_text: str, version_text: str, binary: str) -> ProbeResult:
        """What the program's --help and --version texts say it can do (or a HostError)."""

    def probe(self) -> ProbeResult:
        import subprocess

        binary = self._binary()
        if binary is None:
            return HostError(f"{self.program} is not installed", self.install_hint)
        problem = self.host_problem()
        if problem is not None:
            return problem
        if binary not in self.probed:
            try:
                help_run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
                version_run = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired) as e:
                return HostError(f"cannot run {binary} --help: {e}", f"reinstall {self.package}")
            self.probed[binary] = self.features(
                help_run.stdout + help_run.stderr, version_run.stdout + version_run.stderr, binary
            )
        return self.probed[binary]


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (0 when the process is gone or a zombie)."""
    from rootless.procfs import start_time as read_start_time

    return read_start_time(pid) or 0


def alive(pid: int, started: int) -> bool:
    """Whether ``pid`` runs (not a zombie) and is the process that started at ``started`` (any, when 0)."""
    if pid <= 0:
        return False
    now = start_time(pid)
    return now != 0 and (not started or now == started)


def _wait_exit(pid: int, pidfd: int | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    if pidfd is not None:
        readable, _, _ = select.select([pidfd], [], [], seconds)
        if readable:
            return True
    while time.monotonic() < deadline:
        if not alive(pid, 0):
            return True
        time.sleep(0.005)
    return not alive(pid, 0)


def stop_helper(pid: int, started: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the helper if it is still the process we started, wait, then SIGKILL."""
    if not pid or not alive(pid, started):
        return
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    try:
        if pidfd is not None and not alive(pid, started):  # recycled between the check and the open
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _wait_exit(pid, pidfd, timeout):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, pidfd, timeout)
        _reap(pid)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    except OSError as e:  # pragma: no cover
        if e.errno != errno.ECHILD:
            raise


def parse_help(text: str) -> frozenset[str]:
    """Long options a helper's ``--help`` text mentions (``--dns-forward`` -> ``dns-forward``)."""
    import re

    return frozenset(re.findall(r"(?<![\w-])--([a-z0-9][a-z0-9-]*)", text))


def find_binary(name: str, explicit: str | None = None) -> str | None:
    """The helper on $PATH (as `rl system check` looks for it), or the explicit path when executable."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return which(name)


def helper_error_text(stderr: str) -> str:
    """The helper's own error line, without pasta's "Failed to send N bytes to syslog" noise."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("Failed to send") and not line.startswith("WARNING")
    ]
    return lines[-1].rstrip(".").lower() if lines else ""


# ---------------------------------------------------------------- registry

DRIVER_NAMES = ("pasta", "slirp4netns", "none", "host")


def resolve_port_handler(value: str, helper: str) -> str:
    """``rl`` (rl's forwarder; podman's name ``rootlesskit`` means the same) or ``helper`` (the
    helper's own forwarding, also called by its name) -> "rl" or the helper's name."""
    if value in ("", "rl", "rootlesskit"):
        return "rl"
    if value in ("helper", helper):
        return helper
    raise UsageError(
        f"unknown port handler {value!r} for {helper}",
        f"use --network {helper}:port_handler=rl (rl's forwarder, the default) or port_handler={helper}",
    )


def parse_mode(mode: str) -> tuple[str, dict[str, str]]:
    """``--network pasta:port_handler=pasta`` -> ("pasta", {"port_handler": "pasta"}). Options are
    taken for pasta and slirp4netns only; other modes come back whole with no options."""
    name, sep, rest = mode.partition(":")
    if not sep or name not in ("pasta", "slirp4netns"):
        return mode, {}
    options: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if key != "port_handler" or not eq:
            raise UsageError(
                f"unknown option {item!r} in --network {mode}",
                f"rl knows one option: --network {name}:port_handler=rl|{name}",
            )
        options[key] = value
    return name, options


def get_driver(name: str, **kwargs: Any) -> NetworkDriver:
    """The driver for ``--network NAME`` (``private`` and ``""`` mean the default)."""
    if name in ("", "private", "default"):
        return default_driver(**kwargs)
    if name == "pasta":
        from rootless.network.pasta import PastaDriver

        return PastaDriver(**kwargs)
    if name == "slirp4netns":
        from rootless.network.slirp import SlirpDriver

        return SlirpDriver(**kwargs)
    if name == "none":
        from rootless.network.basic import NoneDriver

        return NoneDriver()
    if name == "host":
        from rootless.network.basic import HostDriver

        return HostDriver()
    raise UsageError(f"unknown network mode {name!r}", "use --network pasta, slirp4netns, none, host or a network name")


def default_driver(**kwargs: Any) -> NetworkDriver:
    """pasta when it works here, else slirp4netns; HostError when neither does."""
    problems: list[RLError] = []
    for name in ("pasta", "slirp4netns"):
        driver = get_driver(name, **kwargs)
        result = driver.probe()
        if isinstance(result, Features):
            return driver
        problems.append(result)
    raise HostError(
        "cannot set up rootless networking: neither pasta nor slirp4netns works here"
        f" ({'; '.join(p.message for p in problems)})",
        "install passt (pasta) or slirp4netns, or run with --network none or --network host",
    )
