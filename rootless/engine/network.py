"""The container's network as the run engine uses it: choosing the driver, attaching it to the
container's new network namespace before the command starts, detaching it afterwards.

Kept apart from rootless.engine.run so that networking grows (user-defined networks, container:NAME)
without touching the rest of the start-up sequence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.engine.env import EngineEnv
from rootless.engine.runopts import RunOptions
from rootless.errors import RLError, UsageError
from rootless.state.containers import ContainerRecord, ContainerStore

if TYPE_CHECKING:
    from rootless.engine.run import Prepared

log = logging.getLogger("rl")


def choose_driver(env: EngineEnv, opts: RunOptions) -> Any:
    """The network driver for --network (or the configured default), probed before anything starts."""
    from rootless.errors import HostError
    from rootless.network.driver import Features, get_driver

    mode = opts.network or env.network_default
    if mode.startswith("container:"):
        raise UsageError(f"--network {mode} is not available in this version of rl",
                         "use --network pasta, slirp4netns, none or host")
    if mode in ("", "default", "private", "bridge"):
        try:
            return get_driver("")
        except HostError as e:
            if not env.fallback_to_host or opts.publish or opts.publish_all:
                raise
            warn_once(env, "network-fallback",
                       f"{e.message}: containers use the host's network instead "
                       "(set network.fallback_to_host = false to make this an error)")
            return get_driver("host")
    driver = get_driver(mode)
    probed = driver.probe()
    if not isinstance(probed, Features):
        raise probed
    return driver


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


def attach_network(env: EngineEnv, prepared: Prepared, ns_source: str) -> Any:
    """Give the created container (PID 1 waiting to exec) its network; returns the saved state.

    The namespace is bind-mounted to a file first: the helper, started as root in rl's user
    namespace, may not open /proc/PID/ns/net of another root-owned process.
    """
    from rootless.network.netns import NetNS
    from rootless.runtime.syscalls import MS_BIND, SYSCALLS
    from rootless.state.atomic import atomic_write_json

    record = prepared.record
    store = ContainerStore(env.storage)
    run_dir = net_run_dir(env, record.id)
    run_dir.mkdir(parents=True, exist_ok=True)
    ns_file = run_dir / "netns"
    ns_file.touch()
    SYSCALLS.mount(ns_source, str(ns_file), None, MS_BIND)
    try:
        state = prepared.net_driver.setup(NetNS(path=str(ns_file)), prepared.net_options)
    except BaseException:
        _release_netns(ns_file)
        raise
    userdata = store.path(record.id) / "userdata"
    for name, text in (("hosts", state.hosts), ("resolv.conf", state.resolv_conf)):
        with open(userdata / name, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write_json(store.path(record.id) / "network.json", state.to_json(), durable=False)
    return state


def _release_netns(ns_file: Path) -> None:
    from rootless.runtime.syscalls import MNT_DETACH, SYSCALLS

    with contextlib.suppress(OSError):
        SYSCALLS.umount(str(ns_file), MNT_DETACH)
    with contextlib.suppress(OSError):
        ns_file.unlink()


def detach_network(env: EngineEnv, record: ContainerRecord) -> None:
    """Stop the container's network helper and release its namespace file; safe to call twice."""
    from rootless.network.driver import NetworkState, get_driver
    from rootless.state.atomic import read_json

    store = ContainerStore(env.storage)
    saved = read_json(store.path(record.id) / "network.json", default=None, what="network state")
    if saved:
        state = NetworkState.from_json(saved)
        try:
            get_driver(state.driver).teardown(state)
        except RLError as e:
            log.warning(f"stopping the network of container {record.id[:12]}: {e.line()}")
        with contextlib.suppress(OSError):
            (store.path(record.id) / "network.json").unlink()
    run_dir = net_run_dir(env, record.id)
    _release_netns(run_dir / "netns")
    shutil.rmtree(run_dir, ignore_errors=True)


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
