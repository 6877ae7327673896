"""The container's network as the run engine uses it: choosing the driver, attaching it to the
container's new network namespace before the command starts, detaching it afterwards.

Kept apart from rootless.engine.run so that networking grows (user-defined networks, container:NAME)
without touching the rest of the start-up sequence.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.engine.env import EngineEnv
from rootless.engine.runopts import RunOptions
from rootless.errors import ConflictError, NotFoundError, RLError, UsageError
from rootless.log import log
from rootless.state.containers import ContainerRecord, ContainerStore

if TYPE_CHECKING:
    from rootless.engine.run import Prepared



def choose_driver(env: EngineEnv, opts: RunOptions) -> Any:
    """The network driver for --network (or the configured default), probed before anything starts.

    The default (``bridge``) is the default network: a bridge in the user's rootless netns, whose
    one pasta (else slirp4netns) serves every container on it, so an idle container costs its
    monitor and no helper of its own. ``pasta`` and ``slirp4netns`` give the container a helper of
    its own (podman's default); ``pasta:port_handler=pasta`` (or slirp4netns:...) picks who forwards
    the published ports; ``container:NAME`` joins a running container's namespace; any other name
    that is not a builtin mode is a user-defined network (``a,b`` joins several, the first one gets
    the default route)."""
    from rootless.errors import HostError
    from rootless.network.driver import DRIVER_NAMES, Features, get_driver, parse_mode

    mode = opts.network or env.network_default
    if mode.startswith("container:"):
        return _container_driver(env, mode.partition(":")[2])
    mode, mode_options = parse_mode(mode)
    handler = {"port_handler": mode_options.get("port_handler", env.port_handler)}
    if mode in ("", "default", "private", "bridge"):
        from rootless.network.bridge import BridgeDriver, nft_binary

        shared = rootless_netns(env)
        if shared.is_up():
            return BridgeDriver(shared, [network_store(env).default()])
        try:  # the shared helper starts with the first container: pasta, else slirp4netns
            helper = get_driver("", **handler)
        except HostError as e:
            if not env.fallback_to_host or opts.publish or opts.publish_all:
                raise
            warn_once(env, "network-fallback",
                      f"{e.message}: containers use the host's network instead "
                      "(set network.fallback_to_host = false to make this an error)")
            return get_driver("host")
        if nft_binary() is None:
            if mode == "bridge":
                raise HostError("cannot use the bridge network: nft is not installed (it does the bridge's NAT)",
                                "ask the admin to install nftables, or use --network pasta")
            warn_once(env, "network-no-nft",
                      f"nft is not installed, which the default network needs for its NAT: each container "
                      f"gets a {helper.name} of its own instead (ask the admin to install nftables)")
            return helper
        return BridgeDriver(shared, [network_store(env).default()])
    if mode not in DRIVER_NAMES:
        from rootless.network.bridge import BridgeDriver

        names = [n for n in mode.split(",") if n]
        records = [network_store(env).get(n) for n in names]
        return BridgeDriver(rootless_netns(env), records)
    driver = get_driver(mode, **handler) if mode in ("pasta", "slirp4netns") else get_driver(mode)
    probed = driver.probe()
    if not isinstance(probed, Features):
        raise probed
    return driver


def _container_driver(env: EngineEnv, ref: str) -> Any:
    from rootless.network.basic import ContainerNetDriver
    from rootless.network.driver import NetworkState
    from rootless.state.atomic import read_json

    if not ref:
        raise UsageError("--network container: needs a container name or ID", "use --network container:NAME")
    store = ContainerStore(env.storage)
    other = store.get(ref)
    saved = read_json(store.path(other.id) / "network.json", default=None, what="network state")
    ns_file = net_run_dir(env, other.id) / "netns"
    if saved is not None and saved.get("driver") == "container":
        raise UsageError(f"container {other.name} itself shares the network of another container",
                         f"use --network {other.host_config.get('NetworkMode', 'container:...')}")
    if not other.running or not _mounted(ns_file):
        mode = other.host_config.get("NetworkMode", "")
        hint = ("that container shares the host's network: use --network host" if mode == "host"
                else f"start {other.name} first")
        raise ConflictError(f"cannot join the network of container {other.name}: it is not running", hint)
    userdata = store.path(other.id) / "userdata"
    texts = []
    for name in ("hosts", "resolv.conf"):
        try:
            texts.append((userdata / name).read_text())
        except OSError:
            texts.append("")
    copied = NetworkState.from_json(saved) if saved else None
    return ContainerNetDriver(other.id, str(ns_file), texts[0], texts[1], copied)


def _mounted(path: Path) -> bool:
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except OSError:
        return False


def network_store(env: EngineEnv) -> Any:
    """The user's network records (rootless.network.networks.NetworkStore)."""
    from rootless.network.networks import NetworkStore

    return NetworkStore(env.storage / "networks")


def rootless_netns(env: EngineEnv) -> Any:
    """The per-user rootless network namespace of user-defined networks (rootless.network.bridge)."""
    from rootless.network.bridge import RootlessNetns

    return RootlessNetns(net_run_dir(env, "rootless-netns"))


def warn_once(env: EngineEnv, key: str, message: str) -> None:
    """A warning given once per user namespace (the marker lives in the runtime dir)."""
    marker = env.runroot / f"warned-{key}"
    if marker.exists():
        return
    log.warning(message)
    with contextlib.suppress(OSError):
        marker.touch()


def network_options(opts: RunOptions, hostname: str, name: str, exposed: tuple[str, ...], run_dir: Path) -> Any:
    from rootless.network import ports
    from rootless.network.driver import NetworkOptions

    mappings = ports.parse_publish_list(opts.publish)
    if opts.publish_all:
        mappings += ports.publish_all(exposed, mappings)
    return NetworkOptions(
        hostname=hostname,
        aliases=[name] if name else [],
        ports=mappings,
        exposed=list(exposed),
        dns=opts.dns,
        dns_search=opts.dns_search,
        dns_options=opts.dns_option,
        add_hosts=opts.add_hosts,
        run_dir=run_dir,
    )


def attach_network(env: EngineEnv, prepared: Prepared, ns_source: str, write_files: bool = True) -> Any:
    """Give the created container (PID 1 waiting to exec) its network; returns the saved state.

    The namespace is bind-mounted to a file first: the helper, started as root in rl's user
    namespace, may not open /proc/PID/ns/net of another root-owned process. Without
    ``write_files`` (a driver whose files were written at create, attached after the start) the
    container's hosts and resolv.conf are left alone: it may be reading them.
    """
    from rootless.network.netns import NetNS
    from rootless.runtime.syscalls import MS_BIND, SYSCALLS

    record = prepared.record
    run_dir = net_run_dir(env, record.id)
    run_dir.mkdir(parents=True, exist_ok=True)
    ns_file = run_dir / "netns"
    ns_file.touch()
    SYSCALLS.mount(ns_source, str(ns_file), None, MS_BIND)
    driver = prepared.net_driver
    try:
        if getattr(driver, "kind", "") == "bridge":
            return _attach_bridge(env, record, driver, NetNS(path=str(ns_file)), prepared.net_options)
        state = driver.setup(NetNS(path=str(ns_file)), prepared.net_options)
    except BaseException:
        _release_netns(ns_file)
        raise
    _save(env, record.id, state, files=write_files)
    return state


def _save(env: EngineEnv, cid: str, state: Any, files: bool = True) -> None:
    from rootless.state.atomic import atomic_write_json

    store = ContainerStore(env.storage)
    if files:
        userdata = store.path(cid) / "userdata"
        for name, text in (("hosts", state.hosts), ("resolv.conf", state.resolv_conf)):
            with open(userdata / name, "w", encoding="utf-8") as f:  # in place: the bind mount shows it
                f.write(text)
    atomic_write_json(store.path(cid) / "network.json", state.to_json(), durable=False)


def _attach_bridge(env: EngineEnv, record: ContainerRecord, driver: Any, ns: Any, options: Any) -> Any:
    from rootless.network.bridge import Attachment
    from rootless.network.networks import allocate_address

    nets = network_store(env)
    with nets.locked():
        attached = attached_containers(env)
        records = nets.records()
        by_name = {r.name: r for r in records}
        driver.attachments = []
        for wanted in driver.networks:
            current = by_name.get(wanted.name)
            if current is None:
                raise NotFoundError(f"no such network: {wanted.name}", "see 'rl network ls'")
            taken = [e["IPAddress"] for _, _, st in attached for n, e in st.networks.items() if n == current.name]
            driver.attachments.append(Attachment(current, allocate_address(current, taken), _names(record)))
        driver.networks = records  # every bridge is kept in the rootless netns, and isolated
        driver.cid = record.id
        state = driver.setup(ns, options)
        try:
            _save(env, record.id, state)
            if any(a.record.dns_enabled for a in driver.attachments):
                refresh_hosts(env, records)
        except BaseException:
            driver.teardown(state)
            raise
    return state


def _names(record: ContainerRecord) -> list[str]:
    names = [record.name, record.id[:12], str(record.config.get("Hostname") or "")]
    return [n for n in dict.fromkeys(names) if n]


def attached_containers(env: EngineEnv) -> list[tuple[ContainerRecord, Path, Any]]:
    """(record, directory, NetworkState) of every container whose network is up (its netns file is
    mounted) and that is on at least one user-defined network."""
    from rootless.network.driver import NetworkState
    from rootless.state.atomic import read_json

    store = ContainerStore(env.storage)
    result = []
    for cid in store.ids():
        with contextlib.suppress(RLError, OSError, ValueError, TypeError, KeyError):
            saved = read_json(store.path(cid) / "network.json", default=None, what="network state")
            if not saved or not saved.get("networks") or saved.get("driver") == "container":
                continue
            if not _mounted(net_run_dir(env, cid) / "netns"):
                continue
            record = store._load(cid)
            if record is not None:
                result.append((record, store.path(cid), NetworkState.from_json(saved)))
    return result


def refresh_hosts(env: EngineEnv, records: Any = None) -> None:
    """Rewrite (in place) the /etc/hosts of every container on a user-defined network: its own lines
    and one per peer sharing a network with name resolution (not the default network) with it."""
    named = {r.name for r in (records if records is not None else network_store(env).records()) if r.dns_enabled}
    attached = attached_containers(env)
    for record, path, state in attached:
        lines: list[str] = []
        for other, _, other_state in attached:
            if other.id == record.id:
                continue
            for net, entry in other_state.networks.items():
                if net in named and net in state.networks and entry.get("IPAddress"):
                    names = [*_names(other), *[a for a in entry.get("Aliases", []) if a not in _names(other)]]
                    lines.append(f"{entry['IPAddress']}\t{' '.join(names)}\n")
        text = state.hosts + "".join(dict.fromkeys(lines))
        with contextlib.suppress(OSError), open(path / "userdata" / "hosts", "w", encoding="utf-8") as f:
            f.write(text)


def prepare_spec(env: EngineEnv, record: ContainerRecord, spec: Any, driver: Any) -> None:
    """container:NAME: the spec joins the other container's namespace, and the state is saved for
    inspect (nothing runs, nothing to tear down)."""
    if getattr(driver, "join_path", ""):
        spec.namespaces.net = driver.join_path
        if driver.last_state is not None:
            _save(env, record.id, driver.last_state, files=False)


def _remove_run_dir(run_dir: Path) -> None:
    """The network's runtime directory: a few files (netns, pid files, a helper's socket), so plain
    unlinks; shutil (whose import pulls in zlib, bz2 and lzma) only if it ever holds a directory."""
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    import shutil

                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        os.rmdir(run_dir)
    except OSError:
        pass


def _release_netns(ns_file: Path) -> None:
    from rootless.runtime.syscalls import MNT_DETACH, SYSCALLS

    with contextlib.suppress(OSError):
        SYSCALLS.umount(str(ns_file), MNT_DETACH)
    with contextlib.suppress(OSError):
        ns_file.unlink()


def load_state(env: EngineEnv, cid: str) -> Any:
    """The saved NetworkState of a container, or None."""
    from rootless.network.driver import NetworkState
    from rootless.state.atomic import read_json

    saved = read_json(ContainerStore(env.storage).path(cid) / "network.json", default=None, what="network state")
    return NetworkState.from_json(saved) if saved else None


def network_settings(env: EngineEnv, record: ContainerRecord) -> dict[str, Any]:
    """docker's NetworkSettings for `rl inspect` (empty values when the container's network is down)."""
    from rootless.network.driver import NetworkState

    state = load_state(env, record.id) or NetworkState(driver=str(record.host_config.get("NetworkMode", "")))
    settings = state.network_settings()
    if not settings["Ports"]:
        from rootless.network.ports import docker_ports

        settings["Ports"] = docker_ports([], list(record.config.get("ExposedPorts") or {}))
    return settings


def detach_network(env: EngineEnv, record: ContainerRecord) -> None:
    """Stop the container's network helper and release its namespace file; safe to call twice."""
    from rootless.network.driver import get_driver

    store = ContainerStore(env.storage)
    state = None
    with contextlib.suppress(RLError):
        state = load_state(env, record.id)
    if state is not None:
        try:
            if state.networks and state.driver != "container":
                _bridge_teardown(env, state)
            elif state.driver not in ("bridge", "container"):
                get_driver(state.driver).teardown(state)
        except RLError as e:
            log.warning(f"stopping the network of container {record.id[:12]}: {e.line()}")
        with contextlib.suppress(OSError):
            (store.path(record.id) / "network.json").unlink()
    run_dir = net_run_dir(env, record.id)
    _release_netns(run_dir / "netns")
    _remove_run_dir(run_dir)
    if state is not None and state.networks and state.driver != "container":
        nets = network_store(env)
        with nets.locked():
            records = nets.records()
            if any(r.dns_enabled and r.name in state.networks for r in records):
                refresh_hosts(env, records)


def _bridge_teardown(env: EngineEnv, state: Any) -> None:
    from rootless.network.bridge import BridgeDriver, disconnect
    from rootless.network.driver import get_driver

    if state.driver == "bridge":
        BridgeDriver(rootless_netns(env), []).teardown(state)
        return
    get_driver(state.driver).teardown(state)  # pasta or slirp4netns, plus networks connected later
    helper = rootless_netns(env)
    if helper.is_up():
        disconnect(helper, list(state.networks.values()), wait=False)


# ---------------------------------------------------------------- rl network connect / disconnect


def connect(env: EngineEnv, network: str, ref: str, aliases: list[str] | None = None) -> None:
    """Put a running container on one more user-defined network (eth<N>, no default route)."""
    from rootless.network import bridge
    from rootless.network.netns import NetNS
    from rootless.network.networks import allocate_address

    store = ContainerStore(env.storage)
    record = store.get(ref)
    nets = network_store(env)
    with nets.locked():
        net = nets.get(network)
        state = load_state(env, record.id)
        ns_file = net_run_dir(env, record.id) / "netns"
        if state is None or not record.running or not _mounted(ns_file):
            raise ConflictError(f"cannot connect container {record.name}: it is not running with a network "
                                "of its own", "start it (or run it with --network NAME) first")
        if state.driver in ("host", "container"):
            raise ConflictError(f"cannot connect container {record.name}: it uses --network "
                                f"{record.host_config.get('NetworkMode', state.driver)}",
                                "run it with --network NAME instead")
        if net.name in state.networks:
            raise ConflictError(f"container {record.name} is already connected to network {net.name}",
                                "nothing to do")
        taken = [e["IPAddress"] for _, _, st in attached_containers(env) for n, e in st.networks.items()
                 if n == net.name]
        att = bridge.Attachment(net, allocate_address(net, taken), [*_names(record), *(aliases or [])])
        used = {state.interface, *(e.get("Interface", "") for e in state.networks.values())}
        index = next(i for i in range(64) if f"eth{i}" not in used)
        helper = rootless_netns(env)
        helper.ensure()
        helper.sync(nets.records())
        entry = bridge.connect(helper, NetNS(path=str(ns_file)), att, record.id, index,
                               default_route=state.driver == "bridge" and not state.networks)
        state.networks[net.name] = entry
        _save(env, record.id, state, files=False)
        refresh_hosts(env)


def disconnect(env: EngineEnv, network: str, ref: str) -> None:
    from rootless.network import bridge

    store = ContainerStore(env.storage)
    record = store.get(ref)
    nets = network_store(env)
    with nets.locked():
        net = nets.get(network)
        state = load_state(env, record.id)
        if state is None or net.name not in state.networks:
            raise NotFoundError(f"container {record.name} is not connected to network {net.name}",
                                "see 'rl network inspect " + net.name + "'")
        entry = state.networks.pop(net.name)
        helper = rootless_netns(env)
        if helper.is_up():
            bridge.disconnect(helper, [entry])
        _save(env, record.id, state, files=False)
        refresh_hosts(env)
        if not state.networks:  # its own line stays; the peers' lines about it are gone
            with contextlib.suppress(OSError), \
                    open(store.path(record.id) / "userdata" / "hosts", "w", encoding="utf-8") as f:
                f.write(state.hosts)


# ---------------------------------------------------------------- rl network rm / prune


def users_of(env: EngineEnv) -> dict[str, list[str]]:
    """network name -> names of the containers attached to it now."""
    result: dict[str, list[str]] = {}
    for record, _, state in attached_containers(env):
        for name in state.networks:
            result.setdefault(name, []).append(record.name)
    return result


def remove_networks(env: EngineEnv, refs: list[str], force: bool = False) -> list[str]:
    """`rl network rm`: refuses a network in use (unless ``force`` disconnects those containers)."""
    nets = network_store(env)
    removed = []
    for ref in refs:
        net = nets.get(ref)
        users = users_of(env).get(net.name, [])
        if force:
            for user in users:
                disconnect(env, net.name, user)
            users = []
        nets.remove(net.name, users)  # takes the store's lock itself
        with nets.locked():
            _drop_bridges(env, nets, [net.bridge])
        removed.append(net.name)
    return removed


def prune_networks(env: EngineEnv) -> list[str]:
    """`rl network prune`: every network no container uses; the rootless netns stops when no
    container is on any network any more."""
    nets = network_store(env)
    before = {r.name: r.bridge for r in nets.records()}
    removed = nets.prune(users_of(env))  # takes the store's lock itself
    with nets.locked():
        if not attached_containers(env):
            rootless_netns(env).stop()
        else:
            _drop_bridges(env, nets, [before[n] for n in removed])
    return removed


def _drop_bridges(env: EngineEnv, nets: Any, bridges: list[str]) -> None:
    helper = rootless_netns(env)
    if bridges and helper.is_up():
        helper.sync(nets.records(), remove=bridges)


def stop_rootless_netns(env: EngineEnv) -> bool:
    """For `rl system migrate` and `rl system reset`: stop the rootless netns and its helper."""
    try:
        return bool(rootless_netns(env).stop())
    except RLError as e:
        log.warning(f"stopping the rootless network namespace: {e.line()}")
        return False


def net_run_dir(env: EngineEnv, cid: str) -> Path:
    """Pid files, API sockets and the netns file of a container's network: a short path, because a
    unix socket's path must stay under 108 bytes."""
    path = env.runroot / "net" / cid[:16]
    if len(str(path)) > 80:  # room for "/slirp4netns.sock" and the like
        import hashlib
        import tempfile

        # Named after the runtime dir, not the uid: inside rl's user namespace every user is uid 0.
        tag = hashlib.sha256(str(env.runroot).encode()).hexdigest()[:12]
        base = Path(tempfile.gettempdir()) / f"rl-net-{tag}"
        base.mkdir(mode=0o700, exist_ok=True)
        if base.stat().st_uid != os.getuid():
            raise RLError(f"{base} belongs to another user", "set TMPDIR to a directory of your own")
        path = base / cid[:16]
    return path
