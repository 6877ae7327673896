"""`rl run` and `rl create`: from an image and the user's flags to a running container.

The order matters and is the whole design:
1. join rl's user namespace (before any thread: pulls start threads);
2. make sure the image is present;
3. record the container, mount its root filesystem with the storage driver (in the namespace's
   mount namespace, so later commands see it);
4. build the spec (plain data) and launch the process from it;
5. wait, relaying signals and the terminal; record the exit; clean up for --rm.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rootless.engine import limits as limits_glue
from rootless.engine import network as network_glue
from rootless.engine.env import EngineEnv
from rootless.engine.runopts import RunOptions
from rootless.errors import RLError, UsageError
from rootless.log import log
from rootless.records import record
from rootless.state.containers import ContainerRecord, ContainerStore, new_id, now_rfc3339, process_start_time


@record
class Prepared:
    """A created container, mounted and ready to launch."""

    record: ContainerRecord
    spec: Any  # rootless.runtime.spec.ContainerSpec
    rootfs: Path
    net_driver: Any = None  # rootless.network.driver.NetworkDriver
    net_options: Any = None  # rootless.network.driver.NetworkOptions


def container_dirs(store: ContainerStore, cid: str) -> tuple[Path, Path, Path]:
    """(driver dir, rootfs mount point, userdata dir) of a container."""
    base = store.path(cid)
    return base / "storage", base / "rootfs", base / "userdata"


def _read_in_root(rootfs: Path, path: str) -> str:
    from rootless.runtime.securejoin import secure_join

    try:
        with open(secure_join(str(rootfs), path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _image_defaults(config: Any) -> Any:
    from rootless.engine.specgen import ImageDefaults

    return ImageDefaults(
        env=tuple(config.env),
        cmd=config.cmd,
        entrypoint=config.entrypoint,
        working_dir=config.working_dir,
        user=config.user,
        stop_signal=config.stop_signal,
        labels=dict(config.labels),
        exposed_ports=tuple(config.exposed_ports),
        volumes=tuple(config.volumes),
    )


def _docker_config(opts: RunOptions, image: Any, hostname: str) -> dict[str, Any]:
    return {
        "Hostname": hostname,
        "User": opts.user or image.user,
        "Env": opts.env,
        "Cmd": opts.command or (list(image.cmd) if image.cmd else None),
        "Entrypoint": opts.entrypoint if opts.entrypoint is not None else
        (list(image.entrypoint) if image.entrypoint else None),
        "WorkingDir": opts.workdir or image.working_dir,
        "Labels": {**image.labels, **opts.labels},
        "Image": opts.image,
        "Tty": opts.tty,
        "OpenStdin": opts.interactive,
        "AttachStdin": opts.interactive,
        "AttachStdout": not opts.detach,
        "AttachStderr": not opts.detach,
        "StopSignal": opts.stop_signal or image.stop_signal or "SIGTERM",
        "ExposedPorts": {p: {} for p in image.exposed_ports},
        "Volumes": {v: {} for v in image.volumes} or None,
    }


def _host_config(opts: RunOptions, network: str, driver: str) -> dict[str, Any]:
    return {
        "Binds": [f"{m.source}:{m.destination}{':ro' if m.readonly else ''}" for m in opts.mounts
                  if m.type == "bind"],
        "NetworkMode": network,
        "AutoRemove": opts.rm,
        "CapAdd": opts.cap_add,
        "CapDrop": opts.cap_drop,
        "SecurityOpt": opts.security_opt,
        "Privileged": opts.privileged,
        "ReadonlyRootfs": opts.read_only,
        "Init": opts.init,
        "UsernsMode": opts.userns,
        "ExtraHosts": [f"{n}:{ip}" for n, ip in opts.add_hosts],
        "Tmpfs": {m.destination: ",".join(m.options) for m in opts.mounts if m.type == "tmpfs"},
        "Dns": opts.dns,
        "DnsSearch": opts.dns_search,
        "DnsOptions": opts.dns_option,
        "StorageDriver": driver,
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "LogConfig": {"Type": opts.log_driver or "json-file", "Config": dict(opts.log_opts)},
    }


def _write_userdata(userdata: Path, hostname: str, files: dict[str, str]) -> dict[str, str]:
    """The container's /etc/hosts, /etc/hostname and /etc/resolv.conf as files rl binds in.

    Written in place (not renamed) so that a later rewrite, once the network is up, shows through
    the bind mounts."""
    userdata.mkdir(parents=True, exist_ok=True)
    contents = {"/etc/hosts": "", "/etc/resolv.conf": "", **files, "/etc/hostname": hostname + "\n"}
    result = {}
    for dest, text in contents.items():
        path = userdata / dest.rsplit("/", 1)[1]
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        result[dest] = str(path)
    return result


def _prepare_binds(opts: RunOptions) -> None:
    """docker creates a missing host directory for -v; --mount type=bind requires it to exist."""
    for m in opts.mounts:
        if m.type != "bind":
            continue
        if not os.path.exists(m.source):
            try:
                os.makedirs(m.source, exist_ok=True)
            except OSError as e:
                raise UsageError(
                    f"cannot create host directory {m.source} for the bind mount on {m.destination}: "
                    f"{(e.strerror or str(e)).lower()}",
                    "create it yourself or choose another path",
                ) from None


def _named_volume_dirs(env: EngineEnv, opts: RunOptions, rootfs: Path, store: ContainerStore,
                       cid: str) -> dict[str, str]:
    from rootless.engine.volumes import volume_dirs

    return volume_dirs(env, opts, rootfs, store, cid)


def _volume_dirs(env: EngineEnv, opts: RunOptions) -> dict[str, str]:
    result = {}
    for m in opts.mounts:
        if m.type != "volume":
            continue
        name = m.source or new_id()
        data = env.storage / "volumes" / name / "_data"
        data.mkdir(parents=True, exist_ok=True)
        result[m.destination] = str(data)
    return result


def create(env: EngineEnv, opts: RunOptions, progress: Callable[[str], None] | None = None) -> Prepared:
    """Everything up to (not including) starting the process. Leaves no trace when it fails."""
    from rootless.engine import images
    from rootless.engine.specgen import build
    from rootless.engine.users import resolve_user
    from rootless.runtime import pause
    from rootless.storage.driver import get_driver

    limit_plan = limits_glue.plan_limits(env, opts)  # before the user namespace: may ask systemd for a scope
    ns = pause.enter(env.runroot)
    keep_id = _keep_id(opts.userns, ns)
    nested = _keep_id_plan(keep_id, ns) if keep_id else None
    net_driver = network_glue.choose_driver(env, opts)
    network = net_driver.name
    image_record, config = images.ensure_image_config(env, opts.image, opts.pull, opts.platform,
                                                       tls_verify=opts.tls_verify, progress=progress)
    defaults = _image_defaults(config)
    from rootless.engine.volumes import image_volume_mounts

    opts.mounts = [*opts.mounts, *image_volume_mounts(defaults.volumes, opts.mounts)]  # the image's VOLUMEs
    driver_name, owners = _choose_storage(env, opts, nested)
    driver = get_driver(driver_name)

    store = ContainerStore(env.storage)
    cid = new_id()
    hostname = opts.hostname or (socket.gethostname() if network == "host" and not opts.hostname else cid[:12])
    record = ContainerRecord(
        id=cid,
        name=opts.name,
        image=opts.image,
        image_id=image_record.id,
        created=now_rfc3339(),
        config=_docker_config(opts, defaults, hostname),
        host_config=_host_config(opts, network, driver_name),
        driver=driver_name,
        mounts=[{"Type": m.type, "Source": m.source, "Destination": m.destination, "RW": not m.readonly}
                for m in opts.mounts],
    )
    limits_glue.describe(limit_plan, record)
    store.create(record)
    storage_dir, rootfs, userdata = container_dirs(store, cid)
    try:
        limits_glue.attach(limit_plan, store, record, described=True)
        from rootless.image.store import Store

        image_store = Store(env.storage)
        layers = [image_store.layer_dir(d) for d in image_record.diff_ids]
        rootfs.mkdir(exist_ok=True)
        if owners is not None:
            driver.set_owner_map(storage_dir, owners)
        mounted = driver.mount(storage_dir, layers, rootfs)
        user_spec = opts.user or (f"{keep_id[0]}:{keep_id[1]}" if keep_id else defaults.user)
        user = resolve_user(user_spec, _read_in_root(mounted, "/etc/passwd"), _read_in_root(mounted, "/etc/group"))
        _prepare_binds(opts)
        net_options = network_glue.network_options(opts, hostname, record.name, defaults.exposed_ports,
                                                   network_glue.net_run_dir(env, cid))
        early: dict[str, str] = {}
        if not net_driver.needs_netns or net_driver.files_before_start:  # host, none: the files are known now
            state = net_driver.setup(None, net_options)
            early = {"/etc/hosts": state.hosts, "/etc/resolv.conf": state.resolv_conf}
        etc_files = _write_userdata(userdata, hostname, early)
        spec = build(
            image=defaults,
            opts=opts,
            rootfs=str(mounted),
            user=user,
            hostname=hostname,
            etc_files=etc_files,
            volume_dirs=_named_volume_dirs(env, opts, mounted, store, cid),
            pts_gid=None if ns.single_id else 5,
            host_network=not net_driver.needs_netns,
        )
        if nested is not None:
            spec.user_namespace = {"uid_map": nested.uid_map.text(), "gid_map": nested.gid_map.text()}
        network_glue.prepare_spec(env, record, spec, net_driver)
        from rootless.runtime.spec import to_json
        from rootless.state.atomic import atomic_write_bytes

        atomic_write_bytes(store.path(cid) / "spec.json", to_json(spec).encode(), durable=False)
    except BaseException:
        limits_glue.release(record)
        remove_container_storage(env, record)
        store.remove(cid)
        raise
    return Prepared(record, spec, mounted, net_driver, net_options)


def _keep_id(userns: str, ns: Any) -> tuple[int, int] | None:
    """--userns=keep-id[:uid=U,gid=G]: the ids the user keeps inside (default: their own)."""
    if not userns.startswith("keep-id"):
        if userns not in ("", "host"):
            raise UsageError(f"--userns={userns} is not supported", "use --userns=keep-id or leave it out")
        return None
    uid, gid = ns.host_uid, ns.host_gid
    for item in userns.partition(":")[2].split(","):
        key, _, value = item.partition("=")
        if key in ("uid", "gid") and value.isdigit():
            uid, gid = (int(value), gid) if key == "uid" else (uid, int(value))
        elif item:
            raise UsageError(f"invalid --userns option {item!r}", "use --userns=keep-id[:uid=N,gid=N]")
    if ns.single_id:
        raise UsageError(
            "--userns=keep-id needs subordinate ids: rl runs with a single-ID mapping here",
            "ask the admin to add ranges for you to /etc/subuid and /etc/subgid (helpers/grant-subids.sh)",
        )
    return uid, gid


def _keep_id_plan(ids: tuple[int, int], ns: Any) -> Any:
    """The maps (rootless.runtime.idmap.MappingPlan) of the keep-id namespace nested in rl's namespace ``ns``."""
    from rootless.runtime.idmap import keep_id_mapping

    return keep_id_mapping(ids[0], ids[1], ns.uid_count, ns.gid_count)


def _choose_storage(env: EngineEnv, opts: RunOptions, nested: Any) -> tuple[str, Any]:
    """The container's storage driver, and the owner map it must show (a storage.driver.OwnerMap, or None).

    In a nested keep-id namespace (``nested``: its MappingPlan) the image's files, owned on disk by
    the ids of rl's namespace, would appear shifted: the image's root files as the user's. fuse-overlayfs
    can show them with the image's owners through the nested map and takes native overlay's place
    when it works here, unless a driver was asked for by flag or configuration; otherwise the
    container runs as it is, with one warning.
    """
    from rootless.storage import select
    from rootless.storage.driver import OwnerMap

    chosen = opts.storage_driver or select.choose(env.driver, store=env.storage)
    if nested is None:
        return chosen, None
    forced = bool(opts.storage_driver or env.driver) and chosen != "fuse-overlayfs"
    name, problem = (chosen, f"the {chosen} storage driver was asked for") if forced else \
        select.owner_mapping_driver(chosen)
    if problem is None:
        return name, OwnerMap(_triples(nested.uid_map), _triples(nested.gid_map))
    if name == "overlay" and not forced:
        hint = ("ask the admin to install fuse-overlayfs (Debian/Ubuntu: apt install fuse-overlayfs) and to make"
                " /dev/fuse usable (helpers/enable-devices.sh)")
    else:
        hint = "use --storage-driver fuse-overlayfs"
    log.warning(f"--userns=keep-id: the image's root-owned files appear owned by you in the container, as {problem};"
                f" to see the image's owners, {hint}")
    return name, None


def _triples(idmap: Any) -> tuple[tuple[int, int, int], ...]:
    return tuple((line.inner, line.outer, line.count) for line in idmap.lines)


def remove_container_storage(env: EngineEnv, record: ContainerRecord, delete: bool = True) -> None:
    """Unmount the container's root filesystem and, with ``delete``, its files (inside the user
    namespace: they belong to subordinate IDs). Without ``delete`` the caller removes the directory."""
    from rootless.storage.driver import get_driver

    store = ContainerStore(env.storage)
    storage_dir, rootfs, _ = container_dirs(store, record.id)
    driver = get_driver(record.driver or "vfs")
    try:
        driver.unmount(storage_dir, rootfs)
        if delete and storage_dir.exists():
            driver.remove(storage_dir)
    except RLError as e:
        log.warning(f"cleaning up the storage of container {record.id[:12]}: {e.line()}")


def unmount_container(env: EngineEnv, record: ContainerRecord) -> None:
    from rootless.storage.driver import get_driver

    store = ContainerStore(env.storage)
    storage_dir, rootfs, _ = container_dirs(store, record.id)
    try:
        get_driver(record.driver or "vfs").unmount(storage_dir, rootfs)
    except RLError as e:
        log.debug(f"unmount of {record.id[:12]} failed: {e.line()}")


def run_foreground(env: EngineEnv, prepared: Prepared, opts: RunOptions) -> int:
    """Launch the prepared container attached to rl's terminal, wait, record the exit, clean up."""
    from rootless.errors import CannotInvokeError, CommandNotFoundError
    from rootless.runtime import process

    store = ContainerStore(env.storage)
    record = prepared.record
    stdin_fd = None
    devnull = None
    if not opts.interactive:
        devnull = os.open(os.devnull, os.O_RDONLY)
        stdin_fd = devnull
    console = None
    if opts.tty:
        try:
            size = os.get_terminal_size(0)
            console = (size.lines, size.columns)
        except OSError:
            console = None
    code: int
    # Signals that arrive while the container starts are kept and sent on once it runs.
    pending: list[int] = []
    forwarded = tuple(process.FORWARDED_SIGNALS)
    previous = {s: signal.signal(s, lambda signum, _f: pending.append(signum)) for s in forwarded}
    try:
        needs_netns = prepared.net_driver is not None and prepared.net_driver.needs_netns
        # With a network namespace the container is held (created, not started) until its network
        # is attached and the record says running; a driver with nothing to do before the command
        # runs (none) is attached after the start, off rl run's critical path.
        attach_later = needs_netns and prepared.net_driver.files_before_start

        def mark_running(pid: int) -> None:
            with store.update(record.id) as rec:
                rec.state.update(Status="running", Running=True, Pid=pid, StartedAt=now_rfc3339())
                rec.extra["pid_start_time"] = process_start_time(pid)

        try:
            procs_fd = limits_glue.open_procs(record)
            try:
                # held: the record says running before the command starts (who sees its output sees
                # it running), written while PID 1 sets itself up
                proc = process.launch(prepared.spec, stdin=stdin_fd, console_size=console, hold=needs_netns,
                                      cgroup_procs=procs_fd, on_pid=mark_running if needs_netns else None)
            finally:
                limits_glue.close_fd(procs_fd)
            if not needs_netns:  # launched through its exec: already running
                mark_running(proc.pid)
            else:
                if not attach_later:
                    _attach_or_kill(env, prepared, proc, write_files=True)
                proc.start()
        except BaseException as e:
            not_invoked = isinstance(e, CommandNotFoundError | CannotInvokeError)
            exit_code, error = (e.exit_code, e.message) if isinstance(e, RLError) and not_invoked else (0, "")
            with store.update(record.id) as rec:
                rec.state.update(Status="created", Running=False, Pid=0, ExitCode=exit_code, Error=error)
            raise
        finally:
            if devnull is not None:
                os.close(devnull)
        if attach_later:
            _attach_or_kill(env, prepared, proc, write_files=False)
        # the terminal's own size changes are relay_tty's business; every other signal goes on
        signals = tuple(s for s in forwarded if s != signal.SIGWINCH) if opts.tty else forwarded
        with process.forward_signals(proc, signals=signals):
            for signum in pending:
                proc.signal(signum)
            if opts.tty and proc.pty is not None:
                code = process.relay_tty(proc) if opts.interactive else _drain_pty(proc)
            else:
                code = proc.wait()
        for s, h in previous.items():
            signal.signal(s, h)
        proc.close()
        if not opts.rm:  # with --rm the record goes in a moment: no need to write the exit into it first
            with store.update(record.id) as rec:
                rec.state.update(Status="exited", Running=False, Pid=0, ExitCode=code, FinishedAt=now_rfc3339(),
                                 **limits_glue.exit_state(record))
        return code
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        limits_glue.release(record)
        network_glue.detach_network(env, record)
        if opts.rm:
            # unmounted now; the files go in a detached child so that rl returns at once
            remove_container_storage(env, record, delete=False)
            from rootless.engine.containers import remove_anonymous_volumes

            remove_anonymous_volumes(env, record.id)  # docker's --rm takes them too
            store.remove(record.id, background=True)
        else:
            unmount_container(env, record)


def _attach_or_kill(env: EngineEnv, prepared: Prepared, proc: Any, write_files: bool) -> None:
    """Attach the network to the container's namespace; a failure kills the container and is raised."""
    try:
        source = f"/proc/self/fd/{proc.netns}" if proc.netns is not None else f"/proc/{proc.pid}/ns/net"
        network_glue.attach_network(env, prepared, source, write_files=write_files)
    except BaseException:
        proc.signal(signal.SIGKILL)
        proc.wait()
        proc.close()
        raise


def _drain_pty(proc: Any) -> int:
    """-t without a terminal on rl's side: copy the container's terminal output to stdout."""
    import select

    fd = proc.pty
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            os.write(1, data)
        elif proc.poll() is not None:
            break
    return int(proc.wait())


def reset(env: EngineEnv) -> list[str]:
    """Remove every container, image, layer and volume of this store, then stop the user namespace.

    Runs inside the user namespace: layer files belong to subordinate IDs the user can't delete
    from outside.
    """
    from rootless.image.unpack import remove_tree
    from rootless.runtime import pause

    removed: list[str] = []
    if env.storage.exists():
        pause.enter(env.runroot)
        store = ContainerStore(env.storage)
        from rootless.engine.containers import reset_containers

        removed.extend(reset_containers(env))  # detached ones too: their monitors and network helpers
        store.remove_leftovers()
        remove_tree(env.storage)
        removed.append(f"storage {env.storage}")
    network_glue.stop_rootless_netns(env)
    pause.migrate(env.runroot)
    return removed
