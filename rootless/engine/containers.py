"""Container lifecycle use cases: detached start under a monitor, stop, kill, rm, wait, logs, exec, attach.

A detached container is watched by its own small monitor (``rootless.runtime.monitor``); rl itself
exits. Where things are:

    S/containers/<id>/container.json   the record (ContainerStore)
    S/containers/<id>/spec.json        the runtime spec, written by create
    S/containers/<id>/exit.json        the monitor's exit file (persistent: survives a reboot)
    S/containers/<id>/container.log    json-file or k8s-file log
    R/containers/<id>/                 the monitor's state file, attach socket, monitor.log

When the container exits the monitor records the exit and calls ``monitor_exited`` (its on_exit
hook): the record becomes "exited", the network helper stops, the leaf cgroup goes, the root
filesystem is unmounted, and with --rm the container is removed. When the monitor itself dies,
``ContainerStore.refresh`` stops the container (nobody reads its output or would record its end)
and reports it exited; ``cleanup`` (idempotent) is run by rm, start and reset.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal as signals
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.engine.env import EngineEnv
from rootless.errors import ConflictError, NotFoundError, RLError, UsageError
from rootless.records import asdict, fields
from rootless.state.containers import CGROUP_KEY, ContainerRecord, ContainerStore, boot_id, now_rfc3339

if TYPE_CHECKING:
    from rootless.engine.runopts import RunOptions


ON_EXIT = "rootless.engine.containers:monitor_exited"
LOG_MAX_SIZE = 10 << 20
LOG_MAX_FILES = 3
RUN_OPTS_KEY = "run_options"
ANON_VOLUMES_KEY = "anonymous_volumes"
DEFAULT_STOP_TIMEOUT = 10


# ---------------------------------------------------------------- paths and small helpers


def store_of(env: EngineEnv) -> ContainerStore:
    return ContainerStore(env.storage)


def run_dir(env: EngineEnv, cid: str) -> Path:
    return env.runroot / "containers" / cid


def monitor_paths(env: EngineEnv, cid: str) -> Any:
    from rootless.runtime.monitor import Paths

    return Paths(str(run_dir(env, cid)), str(store_of(env).path(cid) / "exit.json"))


def log_path(env: EngineEnv, cid: str) -> Path:
    return store_of(env).path(cid) / "container.log"


def not_running(record: ContainerRecord, what: str = "") -> ConflictError:
    prefix = f"{what}: " if what else ""
    return ConflictError(f"{prefix}container {record.id} is not running",
                         f"start it with 'rl start {record.name}'")


def parse_signal(text: str | int | None, default: int = signals.SIGKILL) -> int:
    """docker's signal names: KILL, SIGKILL, 9; raises UsageError for anything else."""
    if text is None or text == "":
        return default
    if isinstance(text, int):
        value = text
    else:
        name = text.strip().upper()
        if name.isdigit():
            value = int(name)
        else:
            name = name if name.startswith("SIG") else f"SIG{name}"
            try:
                value = int(signals.Signals[name])
            except KeyError:
                if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
                    base = signals.SIGRTMIN if name.startswith("SIGRTMIN") else signals.SIGRTMAX
                    off = name[8:]
                    try:
                        value = int(base) + (int(off) if off else 0)
                    except ValueError:
                        value = -1
                else:
                    value = -1
    if not 0 < value < signals.NSIG:
        raise UsageError(f"invalid signal: {text}", "use a name like SIGTERM or TERM, or a number like 15")
    return value


def save_run_options(store: ContainerStore, cid: str, opts: RunOptions) -> None:
    with store.update(cid) as rec:
        rec.extra[RUN_OPTS_KEY] = asdict(opts)


def load_run_options(record: ContainerRecord) -> RunOptions:
    from rootless.engine.runopts import Mount, RunOptions

    data = dict(record.extra.get(RUN_OPTS_KEY) or {})
    if not data:
        return RunOptions(image=record.image)
    known = {f.name for f in fields(RunOptions)}
    data = {k: v for k, v in data.items() if k in known}
    data["mounts"] = [Mount(**{**m, "options": tuple(m.get("options") or ())}) for m in data.get("mounts") or []]
    data["add_hosts"] = [tuple(h) for h in data.get("add_hosts") or []]
    return RunOptions(**data)


# ---------------------------------------------------------------- starting


def start_prepared(env: EngineEnv, prepared: Any, opts: RunOptions, *,
                   attach_client: Callable[[Any], Any] | None = None) -> Any:
    """Start a created, mounted container under a new monitor (inside rl's user namespace).

    ``attach_client(paths)`` is called while the container is held, before its command runs (rl start -a:
    connect the attach client so that no output is missed); its value is returned with the result as
    ``(result, client)``. Records the running state; on failure cleans up (and removes with --rm)."""
    from rootless.engine import limits as limits_glue
    from rootless.engine import network as network_glue
    from rootless.runtime import monitor

    store = store_of(env)
    record = prepared.record
    needs_netns = prepared.net_driver is not None and prepared.net_driver.needs_netns
    paths = monitor_paths(env, record.id)
    console = None
    if opts.tty:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            console = (size.lines, size.columns)
    leaf = limits_glue.leaf_of(record)
    arg = json.dumps({"storage": str(env.storage), "runroot": str(env.runroot)})
    log_driver, log_max_size, log_max_files = log_settings(record)
    config = monitor.MonitorConfig(
        record.id, prepared.spec, paths.run_dir, exit_file=paths.exit_file,
        log_path=str(log_path(env, record.id)), log_driver=log_driver,
        log_max_size=log_max_size, log_max_files=log_max_files,
        stdin=opts.interactive, stdin_once=opts.interactive and attach_client is not None,
        console_size=console, hold=needs_netns or attach_client is not None,
        on_exit=ON_EXIT, on_exit_arg=arg, cgroup=leaf.path if leaf is not None else "",
    )
    result = None
    client = None
    try:
        try:
            result = monitor.start_monitor(config)
        except RLError as e:
            with store.update(record.id) as rec:
                rec.state.update(Status="created" if rec.state.get("Status") == "created" else "exited",
                                 Running=False, Pid=0, ExitCode=e.exit_code, Error=e.message)
            raise
        if needs_netns:
            source = f"/proc/self/fd/{result.netns_fd}" if result.netns_fd is not None else f"/proc/{result.pid}/ns/net"
            network_glue.attach_network(env, prepared, source)
            result.close_netns()
        if attach_client is not None:
            client = attach_client(paths)
        if result.held:
            result.start()
        with store.update(record.id) as rec:
            rec.state.update(Status="running", Running=True, Paused=False, Pid=result.pid, ExitCode=0, Error="",
                             StartedAt=result.started_at, FinishedAt="0001-01-01T00:00:00Z", OOMKilled=False)
            rec.extra.update(pid_start_time=result.pid_start_time, monitor_pid=result.monitor_pid,
                             monitor_start_time=result.monitor_start_time, boot_id=boot_id())
            record.state, record.extra = dict(rec.state), dict(rec.extra)
    except BaseException:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if result is not None:
            with contextlib.suppress(OSError):
                os.kill(result.pid, signals.SIGKILL)
            result.release()
            from rootless.runtime.monitor import wait_exit

            wait_exit(paths, timeout=5)
            _wait_monitor_gone(paths, 5)
        cleanup(env, record)
        if opts.rm:
            remove_now(env, record, volumes=True)
        raise
    result.release()
    return (result, client) if attach_client is not None else result


def log_settings(record: ContainerRecord) -> tuple[str, int, int]:
    """(driver, max size in bytes (0: no limit), files kept) from HostConfig.LogConfig; rl's default is
    json-file with 10 MiB x 3 (docker's unbounded default fills disks of long-running jobs)."""
    from rootless.engine.runopts import parse_log_size

    conf = record.host_config.get("LogConfig") or {}
    driver = str(conf.get("Type") or "json-file")
    opts = dict(conf.get("Config") or {})
    if "max-size" not in opts and "max-file" not in opts:
        return driver, LOG_MAX_SIZE, LOG_MAX_FILES
    size = parse_log_size(str(opts["max-size"])) if "max-size" in opts else LOG_MAX_SIZE
    return driver, size, int(opts.get("max-file") or 1)


def _wait_monitor_gone(paths: Any, timeout: float) -> None:
    from rootless.runtime.monitor import monitor_alive

    deadline = time.monotonic() + timeout
    while monitor_alive(paths) and time.monotonic() < deadline:
        time.sleep(0.02)


def prepare_existing(env: EngineEnv, record: ContainerRecord, opts: RunOptions) -> Any:
    """A Prepared for a container created earlier: its root filesystem mounted again, its spec and network."""
    from rootless.engine import network as network_glue
    from rootless.engine.run import Prepared, container_dirs
    from rootless.image.store import Store
    from rootless.runtime.spec import from_json
    from rootless.storage.driver import get_driver

    store = store_of(env)
    spec_file = store.path(record.id) / "spec.json"
    try:
        spec = from_json(spec_file.read_text())
    except OSError:
        raise RLError(f"container {record.id[:12]} has no saved spec", "remove it and create it again") from None
    storage_dir, rootfs, _ = container_dirs(store, record.id)
    driver = get_driver(record.driver or "vfs")
    if not driver.is_mounted(rootfs):
        image_store = Store(env.storage)
        diff_ids = _diff_ids_of(env, record)
        layers = [image_store.layer_dir(d) for d in diff_ids]
        rootfs.mkdir(exist_ok=True)
        driver.mount(storage_dir, layers, rootfs)
    net_driver = network_glue.choose_driver(env, opts)
    net_options = network_glue.network_options(
        opts, str(record.config.get("Hostname") or record.id[:12]), record.name,
        tuple(record.config.get("ExposedPorts") or {}), network_glue.net_run_dir(env, record.id))
    return Prepared(record, spec, rootfs, net_driver, net_options)


def _diff_ids_of(env: EngineEnv, record: ContainerRecord) -> list[str]:
    from rootless.engine.images import ImageEngine

    engine = ImageEngine(env.storage, env.runroot)
    rec = engine.find(record.image_id)
    return list(rec.diff_ids)


def start(env: EngineEnv, ref: str, *, attach: bool = False, interactive: bool = False) -> tuple[ContainerRecord, Any]:
    """rl start: (record, MonitorResult or (result, client) with ``attach``). A running container is left alone."""
    from rootless.engine import limits as limits_glue
    from rootless.runtime import pause

    store = store_of(env)
    record = store.get(ref)
    if record.running:
        return record, None
    opts = load_run_options(record)
    opts.interactive = interactive or (opts.interactive and attach)
    opts.rm = bool(record.host_config.get("AutoRemove"))
    plan = limits_glue.plan_limits(env, opts) if limits_glue.leaf_of(record) is None else None
    pause.enter(env.runroot)
    _wait_monitor_gone(monitor_paths(env, record.id), 5)  # a previous run's on_exit may still be busy
    record = store.get(record.id)
    if record.running:
        return record, None
    if plan is not None:
        limits_glue.attach(plan, store, record)
    try:
        prepared = prepare_existing(env, record, opts)
    except BaseException:
        cleanup(env, record)
        raise
    client_factory = None
    if attach:
        from rootless.runtime import attach as attach_mod

        def client_factory(paths: Any) -> Any:
            return attach_mod.connect(paths, stdin=opts.interactive, held=True)

    return record, start_prepared(env, prepared, opts, attach_client=client_factory)


# ---------------------------------------------------------------- the end of a container


def monitor_exited(cid: str, result: dict[str, Any], arg: str) -> None:
    """The monitor's on_exit hook: record the exit, stop the network, unmount; --rm removes."""
    from rootless.engine import limits as limits_glue

    data = json.loads(arg)
    env = EngineEnv(storage=Path(data["storage"]), runroot=Path(data["runroot"]))
    store = store_of(env)
    try:
        with store.update(cid) as rec:
            if int(rec.extra.get("monitor_pid") or 0) not in (0, os.getpid()):
                return  # a newer run owns the container now
            rec.state.update(Status="exited", Running=False, Paused=False, Pid=0,
                             ExitCode=int(result.get("exit_code", 0)),
                             FinishedAt=str(result.get("finished_at") or now_rfc3339()))
            rec.state.update(limits_glue.exit_state(rec))
            record = rec
    except NotFoundError:
        return
    cleanup(env, record)
    if record.host_config.get("AutoRemove"):
        remove_now(env, record, volumes=True)


def cleanup(env: EngineEnv, record: ContainerRecord) -> None:
    """What a stopped container must not keep: its cgroup, network helper, root filesystem mount. Idempotent;
    inside rl's user namespace."""
    from rootless.engine import limits as limits_glue
    from rootless.engine import network as network_glue
    from rootless.engine.run import unmount_container

    limits_glue.release(record)
    network_glue.detach_network(env, record)
    unmount_container(env, record)


def remove_now(env: EngineEnv, record: ContainerRecord, volumes: bool = False) -> None:
    from rootless.engine.run import remove_container_storage

    remove_container_storage(env, record, delete=False)
    store = store_of(env)
    if volumes:
        remove_anonymous_volumes(env, record.id)
    store.remove(record.id, background=True)
    import shutil

    shutil.rmtree(run_dir(env, record.id), ignore_errors=True)


def remove_anonymous_volumes(env: EngineEnv, cid: str) -> None:
    """rm -v and --rm: the container's anonymous volumes, unless another container uses them (inside the
    user namespace: their files belong to the container's IDs)."""
    from rootless.engine import volumes as volume_glue

    store = store_of(env)
    try:
        names = store.get(cid).extra.get(ANON_VOLUMES_KEY) or []
    except NotFoundError:
        return
    for name in names:
        with contextlib.suppress(RLError):
            volume_glue.VolumeStore(env.storage).remove(name, force=False, store=store, exclude=cid)


def _signal_record(record: ContainerRecord, signum: int) -> bool:
    from rootless.engine import limits as limits_glue
    from rootless.runtime.monitor import is_running

    pid = int(record.state.get("Pid") or 0)
    if not is_running(pid, record.extra.get("pid_start_time")):
        return False
    if signum == signals.SIGKILL and limits_glue.leaf_of(record) is not None:
        with contextlib.suppress(RLError, OSError):
            if limits_glue.kill(record, signum):
                return True
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _wait_stopped(env: EngineEnv, record: ContainerRecord, timeout: float | None) -> dict[str, Any] | None:
    from rootless.runtime.monitor import is_running, wait_exit

    paths = monitor_paths(env, record.id)
    pid = int(record.state.get("Pid") or 0)
    start = record.extra.get("pid_start_time")
    if os.path.exists(paths.state_file):
        return wait_exit(paths, timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while is_running(pid, start):
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return {"exit_code": 137}


def _wait_recorded(env: EngineEnv, cid: str, timeout: float = 10) -> ContainerRecord | None:
    """Until the monitor's on_exit has recorded the end (or the monitor is gone)."""
    store = store_of(env)
    paths = monitor_paths(env, cid)
    _wait_monitor_gone(paths, timeout)
    try:
        return store.get(cid)
    except NotFoundError:
        return None


def stop(env: EngineEnv, ref: str, timeout: int | None = None, signal_name: str | None = None) -> ContainerRecord:
    """The container's StopSignal, SIGKILL after ``timeout`` seconds; waits for its end."""
    store = store_of(env)
    record = store.get(ref)
    if not record.running:
        return record
    signum = parse_signal(signal_name or record.config.get("StopSignal") or "SIGTERM", signals.SIGTERM)
    if timeout is None:
        timeout = int(record.config.get("StopTimeout") or DEFAULT_STOP_TIMEOUT)
    if _signal_record(record, signum) and _wait_stopped(env, record, float(timeout)) is None:
        _signal_record(record, signals.SIGKILL)
        _wait_stopped(env, record, 30.0)
    return _wait_recorded(env, record.id) or record


def kill(env: EngineEnv, ref: str, signal_name: str | None = None) -> ContainerRecord:
    signum = parse_signal(signal_name, signals.SIGKILL)
    store = store_of(env)
    record = store.get(ref)
    if not record.running or not _signal_record(record, signum):
        raise ConflictError(f"cannot kill container {record.id}: container is not running",
                            "'rl ps -a' shows its state")
    if signum == signals.SIGKILL:
        _wait_stopped(env, record, 10.0)
    return record


def remove(env: EngineEnv, ref: str, *, force: bool = False, volumes: bool = False,
           timeout: int | None = None) -> ContainerRecord:
    from rootless.runtime import pause

    store = store_of(env)
    record = store.get(ref)
    if record.running:
        if not force:
            raise ConflictError(
                f"cannot remove container {record.id}: container is running",
                "stop the container before removing it, or force remove with 'rl rm -f'")
        if timeout is not None:
            stop(env, record.id, timeout)
        else:
            _signal_record(record, signals.SIGKILL)
            _wait_stopped(env, record, 10.0)
    pause.enter(env.runroot)
    _kill_monitor_if_orphaned(env, record)
    _wait_monitor_gone(monitor_paths(env, record.id), 10)
    try:
        record = store.get(record.id)
    except NotFoundError:
        return record  # --rm removed it meanwhile
    cleanup(env, record)
    remove_now(env, record, volumes=volumes)
    return record


def _kill_monitor_if_orphaned(env: EngineEnv, record: ContainerRecord) -> None:
    """A monitor whose container is gone finishes on its own; one left waiting for rl is ended here."""
    from rootless.runtime.monitor import is_running

    pid = int(record.extra.get("monitor_pid") or 0)
    if pid and is_running(pid, record.extra.get("monitor_start_time")):
        deadline = time.monotonic() + 5
        while is_running(pid, record.extra.get("monitor_start_time")) and time.monotonic() < deadline:
            time.sleep(0.02)
        if is_running(pid, record.extra.get("monitor_start_time")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)


def wait(env: EngineEnv, ref: str) -> int:
    """Block until the container is not running; its exit code."""
    from rootless.runtime.monitor import read_exit

    store = store_of(env)
    record = store.get(ref)
    while record.state.get("Status") == "created":
        time.sleep(0.1)
        record = store.get(record.id)
    if record.running:
        exit_status = _wait_stopped(env, record, None)
        paths = monitor_paths(env, record.id)
        exit_status = read_exit(paths) or exit_status
        if exit_status is not None:
            return int(exit_status.get("exit_code", 0))
        with contextlib.suppress(NotFoundError):
            record = store.get(record.id)
    return int(record.state.get("ExitCode") or 0)


def prune(env: EngineEnv) -> list[str]:
    from rootless.runtime import pause

    store = store_of(env)
    records = [r for r in store.list() if not r.running]
    if not records:
        return []
    pause.enter(env.runroot)
    removed = []
    for record in records:
        with contextlib.suppress(NotFoundError):
            remove(env, record.id)
            removed.append(record.id)
    return removed


def reset_containers(env: EngineEnv) -> list[str]:
    """rl system reset: kill every container, its monitor and network helper; remove them (in the namespace)."""
    from rootless.engine import limits as limits_glue
    from rootless.engine import network as network_glue
    from rootless.engine.run import remove_container_storage
    from rootless.runtime.monitor import is_running

    store = store_of(env)
    removed = []
    for record in store.list():
        monitor_pid = int(record.extra.get("monitor_pid") or 0)
        if monitor_pid and is_running(monitor_pid, record.extra.get("monitor_start_time")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(monitor_pid, signals.SIGKILL)
        pid = int(record.state.get("Pid") or 0)
        if pid and is_running(pid, record.extra.get("pid_start_time")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)
        with contextlib.suppress(RLError, OSError):
            limits_glue.release(record)
        network_glue.detach_network(env, record)
        remove_container_storage(env, record)
        store.remove(record.id)
        removed.append(f"container {record.id[:12]}")
    import shutil

    shutil.rmtree(env.runroot / "containers", ignore_errors=True)
    return removed


# ---------------------------------------------------------------- logs, exec, attach, top


def logs(env: EngineEnv, ref: str, *, follow: bool = False, tail: int | None = None, since: float | None = None,
         until: float | None = None, timestamps: bool = False) -> Iterator[Any]:
    from rootless.runtime import logs as logmod
    from rootless.runtime import monitor

    store = store_of(env)
    record = store.get(ref)
    if str(record.host_config.get("LogConfig", {}).get("Type")) == "none":
        raise UsageError("configured logging driver does not support reading",
                         "the container runs with --log-driver none")
    paths = monitor_paths(env, record.id)

    def ended() -> bool:
        if monitor.exited(paths):
            return True
        current = store.get(record.id) if store.exists(record.id) else None
        return current is None or not current.running

    path = str(log_path(env, record.id))
    return logmod.read_logs(path, since=since, until=until, tail=tail, timestamps=timestamps,
                            follow=follow and record.running, stop_when=ended)


def exec_process(env: EngineEnv, ref: str, args: list[str], *, env_vars: list[str], user: str = "", workdir: str = "",
                 tty: bool = False, interactive: bool = False, privileged: bool = False) -> Any:
    """Start ``args`` in the running container; returns the ContainerProcess (rl waits or not)."""
    from rootless.runtime import pause
    from rootless.runtime.exec import ExecOptions, exec_in
    from rootless.runtime.spec import from_json

    store = store_of(env)
    record = store.get(ref)
    if not record.running:
        raise ConflictError(f"container {record.id} is not running", f"start it first: rl start {record.name}")
    pause.enter(env.runroot)
    spec = from_json((store.path(record.id) / "spec.json").read_text())
    exec_user = None
    if user:
        from rootless.engine.run import _read_in_root
        from rootless.engine.users import resolve_user

        root = Path(spec.rootfs)
        found = resolve_user(user, _read_in_root(root, "/etc/passwd"), _read_in_root(root, "/etc/group"))
        from rootless.runtime.spec import User

        exec_user = User(found.uid, found.gid, list(found.additional_gids))
    console = None
    if tty:
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(0)
            console = (size.lines, size.columns)
    stdin = None
    devnull = None
    if not interactive:
        devnull = os.open(os.devnull, os.O_RDONLY)
        stdin = devnull
    leaf = None
    if record.extra.get(CGROUP_KEY):  # the cgroup code only when there is a cgroup to join
        from rootless.engine import limits as limits_glue

        leaf = limits_glue.leaf_of(record)
    try:
        return exec_in(int(record.state["Pid"]), spec,
                       ExecOptions(args=args, env=env_vars, user=exec_user, cwd=workdir or None, tty=tty,
                                   privileged=privileged, console_size=console),
                       pid_start_time=record.extra.get("pid_start_time"), stdin=stdin,
                       cgroup=leaf.path if leaf is not None else None)
    except ConflictError:
        raise ConflictError(f"container {record.id} is not running",
                            f"start it first: rl start {record.name}") from None
    finally:
        if devnull is not None:
            os.close(devnull)


def attach(env: EngineEnv, ref: str, *, stdin: bool = True, detach_keys: str | None = None) -> int | None:
    from rootless.runtime import attach as attach_mod

    store = store_of(env)
    record = store.get(ref)
    if not record.running:
        raise ConflictError("you cannot attach to a stopped container, start it first",
                            f"rl start -a {record.name}")
    kwargs: dict[str, Any] = {}
    if detach_keys:
        kwargs["detach_keys"] = parse_detach_keys(detach_keys)
    interactive = stdin and bool(record.config.get("OpenStdin"))
    return attach_mod.attach(monitor_paths(env, record.id), stdin=interactive, tty=bool(record.config.get("Tty")),
                             **kwargs)


def parse_detach_keys(text: str) -> bytes:
    out = bytearray()
    for part in text.split(","):
        part = part.strip()
        if part.startswith("ctrl-") and len(part) == 6:
            c = part[5]
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(c)
            out.append(code if code is not None else (ord(c.lower()) - ord("a") + 1))
        elif len(part) == 1:
            out.append(ord(part))
        else:
            raise UsageError(f"invalid detach keys {text!r}", "use e.g. ctrl-p,ctrl-q")
    return bytes(out)


def container_pids(record: ContainerRecord) -> list[int]:
    """Every process in the container's PID namespace (or its cgroup)."""
    from rootless.engine import limits as limits_glue

    pid = int(record.state.get("Pid") or 0)
    leaf = limits_glue.leaf_of(record)
    if leaf is not None:
        with contextlib.suppress(OSError):
            text = Path(leaf.path, "cgroup.procs").read_text()
            pids = sorted(int(x) for x in text.split())
            if pids:
                return pids
    try:
        target = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return [pid] if pid else []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") == target:
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def top_rows(env: EngineEnv, ref: str) -> tuple[list[str], list[list[str]]]:
    """docker top's default columns (ps -ef): UID PID PPID C STIME TTY TIME CMD."""
    record = store_of(env).get(ref)
    if not record.running:
        raise ConflictError(f"container {record.id} is not running", f"start it first: rl start {record.name}")
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    except (OSError, StopIteration):
        btime = 0
    rows = []
    for pid in container_pids(record):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fb:
                cmd = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{pid}/status") as f:
                uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        cmd = cmd or "[" + stat[stat.index("(") + 1:stat.rindex(")")] + "]"
        cpu = (int(rest[11]) + int(rest[12])) // ticks
        started = time.strftime("%H:%M", time.localtime(btime + int(rest[19]) // ticks))
        tty = "?" if int(rest[4]) == 0 else "pts/" + str(int(rest[4]) & 0xFF)
        rows.append([uid, str(pid), rest[1], "0", started, tty, time.strftime("%H:%M:%S", time.gmtime(cpu)), cmd])
    return ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], rows


# ---------------------------------------------------------------- inspect and ps rows


def inspect_doc(env: EngineEnv, record: ContainerRecord) -> dict[str, Any]:
    """docker's container inspect document."""
    from rootless.engine import network as network_glue
    from rootless.engine.run import container_dirs

    store = store_of(env)
    state = dict(record.state)
    status = state.get("Status", "created")
    state["Status"] = status
    storage_dir, rootfs, userdata = container_dirs(store, record.id)
    try:
        network_settings = network_glue.network_settings(env, record)
    except (RLError, OSError, KeyError, TypeError):
        network_settings = {"Ports": {}, "Networks": {}}
    path = (record.config.get("Entrypoint") or []) + (record.config.get("Cmd") or [])
    return {
        "Id": record.id,
        "Created": record.created,
        "Path": path[0] if path else "",
        "Args": path[1:],
        "State": {
            "Status": status, "Running": bool(state.get("Running")), "Paused": bool(state.get("Paused")),
            "Restarting": False, "OOMKilled": bool(state.get("OOMKilled")), "Dead": bool(state.get("Dead")),
            "Pid": int(state.get("Pid") or 0), "ExitCode": int(state.get("ExitCode") or 0),
            "Error": state.get("Error", ""), "StartedAt": state.get("StartedAt"),
            "FinishedAt": state.get("FinishedAt"),
        },
        "Image": record.image_id,
        "ResolvConfPath": str(userdata / "resolv.conf"),
        "HostnamePath": str(userdata / "hostname"),
        "HostsPath": str(userdata / "hosts"),
        "LogPath": str(log_path(env, record.id)),
        "Name": "/" + record.name,
        "RestartCount": 0,
        "Driver": record.driver,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": record.host_config,
        "GraphDriver": {"Name": record.driver, "Data": {"MergedDir": str(rootfs), "UpperDir": str(storage_dir)}},
        "Mounts": [_mount_doc(env, m) for m in record.mounts],
        "Config": {**record.config, "Image": record.image},
        "NetworkSettings": network_settings,
    }


def _mount_doc(env: EngineEnv, m: dict[str, Any]) -> dict[str, Any]:
    doc = {"Type": m.get("Type"), "Source": m.get("Source"), "Destination": m.get("Destination"),
           "Mode": "", "RW": bool(m.get("RW", True)), "Propagation": "rprivate" if m.get("Type") == "bind" else ""}
    if m.get("Type") == "volume":
        name = m.get("Name") or m.get("Source") or ""
        doc.update(Name=name, Driver="local", Source=str(env.storage / "volumes" / name / "_data"))
    return doc
