"""`rl run`'s flags as data, read by click or by a fast path, and the run itself.

The flags of `rl run`, `rl create` and rl's global options are declared once, here, without
click: the click command and group are built from these tables (``click_options``), and a
command line of ``[global flags] run [run flags] IMAGE [COMMAND...]`` is parsed by ``parse`` without
importing click at all. Importing click costs `rl run` 10-20 ms on the machines rl targets, up
to a fifth of a whole container run. ``parse`` accepts exactly what click accepts for these
flags (tests/unit/test_runargs.py holds them to the same results) and gives up on anything else
(``--help``, an unknown flag, a missing or bad value): that command line goes through click,
which owns the help and the error messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rootless.records import record

NO_RESTART = (
    "Not supported: rl has no daemon to restart containers. Use a systemd user unit "
    "(Restart=on-failure) or your batch system's requeue instead; see the README."
)
LOG_LEVELS = ("debug", "error", "info", "warn", "warning")


@record(frozen=True)
class Flag:
    """One option. ``kind``: value, int, multi (repeatable value), bool (a flag), or switch
    (``--x/--no-x``: ``off`` names the turning-off spellings)."""

    dest: str
    names: tuple[str, ...]
    kind: str = "value"
    default: Any = None
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    off: tuple[str, ...] = ()
    show_default: bool = False

    @property
    def takes_value(self) -> bool:
        return self.kind in ("value", "int", "multi")

    def initial(self) -> Any:
        if self.kind == "multi":
            return ()
        if self.kind == "bool":
            return False
        return self.default


LIMIT_FLAGS: tuple[Flag, ...] = (
    Flag("memory", ("-m", "--memory"), metavar="BYTES", help="Memory limit (e.g. 512m)."),
    Flag("memory_swap", ("--memory-swap",), metavar="BYTES",
         help="Memory plus swap limit; -1: unlimited swap (default: twice --memory)."),
    Flag("memory_reservation", ("--memory-reservation",), metavar="BYTES", help="Memory soft limit."),
    Flag("cpus", ("--cpus",), metavar="N", help="Number of CPUs (e.g. 0.5)."),
    Flag("cpu_period", ("--cpu-period",), "int", help="CPU CFS period (µs)."),
    Flag("cpu_quota", ("--cpu-quota",), "int", help="CPU CFS quota (µs per period)."),
    Flag("cpu_shares", ("-c", "--cpu-shares"), "int", help="CPU shares (relative weight, 1024 default)."),
    Flag("cpu_weight", ("--cpu-weight",), "int", help="cgroup v2 cpu.weight (1-10000)."),
    Flag("cpuset_cpus", ("--cpuset-cpus",), metavar="LIST", help="CPUs to run on (0-3, 0,1)."),
    Flag("cpuset_mems", ("--cpuset-mems",), metavar="LIST", help="Memory nodes to use (0-3, 0,1)."),
    Flag("pids_limit", ("--pids-limit",), "int", help="Maximum number of processes (-1: unlimited)."),
    Flag("blkio_weight", ("--blkio-weight",), "int", help="Block IO weight (10-1000)."),
)
LIMIT_KEYS = tuple(f.dest for f in LIMIT_FLAGS)

CREATE_FLAGS: tuple[Flag, ...] = (
    Flag("name", ("--name",), default="", help="Assign a name to the container."),
    Flag("rm", ("--rm",), "bool", help="Remove the container when it exits."),
    Flag("interactive", ("-i", "--interactive"), "bool", help="Keep STDIN open."),
    Flag("tty", ("-t", "--tty"), "bool", help="Allocate a pseudo-TTY."),
    Flag("env", ("-e", "--env"), "multi", metavar="NAME[=VALUE]", help="Set an environment variable."),
    Flag("env_file", ("--env-file",), "multi", metavar="FILE", help="Read environment variables from a file."),
    Flag("workdir", ("-w", "--workdir"), default="", help="Working directory inside the container."),
    Flag("user", ("-u", "--user"), default="", help="Username or UID[:GID] inside the container."),
    Flag("entrypoint", ("--entrypoint",), help="Overwrite the image's ENTRYPOINT ('' clears it)."),
    Flag("volume", ("-v", "--volume"), "multi", metavar="SRC:DST[:OPTS]", help="Bind mount or volume."),
    Flag("mount_", ("--mount",), "multi", metavar="type=bind|tmpfs|volume,...", help="Attach a filesystem mount."),
    Flag("tmpfs", ("--tmpfs",), "multi", metavar="PATH[:OPTS]", help="Mount a tmpfs."),
    Flag("read_only", ("--read-only",), "bool", help="Mount the container's root filesystem read-only."),
    Flag("hostname", ("-h", "--hostname"), default="", help="Container host name."),
    Flag("add_host", ("--add-host",), "multi", metavar="NAME:IP", help="Add a line to /etc/hosts."),
    Flag("userns", ("--userns",), default="", help="User namespace mode: keep-id keeps your UID inside."),
    Flag("network", ("--network", "--net"), default="",
         help="bridge (the default, one shared pasta), pasta or slirp4netns (a helper of its own), none, host,"
              " container:NAME or a network's name."),
    Flag("publish", ("-p", "--publish"), "multi", metavar="[IP:]HOST:CONTAINER[/PROTO]",
         help="Publish a container's port on the host."),
    Flag("publish_all", ("-P", "--publish-all"), "bool", help="Publish the image's exposed ports on random ports."),
    Flag("dns", ("--dns",), "multi", help="Set a DNS server."),
    Flag("dns_search", ("--dns-search",), "multi", help="Set a DNS search domain."),
    Flag("dns_option", ("--dns-option",), "multi", help="Set a DNS option."),
    Flag("storage_driver", ("--storage-driver",), default="", help="overlay, fuse-overlayfs or vfs."),
    Flag("log_driver", ("--log-driver",), default="", help="json-file (default), k8s-file or none."),
    Flag("log_opt", ("--log-opt",), "multi", metavar="KEY=VALUE", help="Log driver option: max-size=10m, max-file=3."),
    Flag("platform", ("--platform",), default="", help="Pull for this platform, e.g. linux/arm64."),
    Flag("pull", ("--pull",), default="missing", choices=("missing", "always", "never", "newer"), show_default=True,
         help="When to pull the image."),
    Flag("tls_verify", ("--tls-verify",), "switch", default=True, off=("--no-tls-verify",),
         help="Verify the registry's TLS certificate."),
    Flag("cap_add", ("--cap-add",), "multi", help="Add a Linux capability."),
    Flag("cap_drop", ("--cap-drop",), "multi", help="Drop a Linux capability."),
    Flag("security_opt", ("--security-opt",), "multi", help="seccomp=unconfined|PROFILE.json, no-new-privileges."),
    Flag("privileged", ("--privileged",), "bool", help="All capabilities, no seccomp, no masked paths."),
    Flag("init", ("--init",), "bool", help="Run a small init as PID 1 that reaps zombies."),
    Flag("label", ("-l", "--label"), "multi", metavar="KEY=VALUE", help="Set a label."),
    Flag("stop_signal", ("--stop-signal",), default="", help="Signal to stop the container."),
    Flag("restart", ("--restart",), default="no", help=NO_RESTART),
    Flag("quiet", ("-q", "--quiet"), "bool", help="Don't print the pull's progress."),
    *LIMIT_FLAGS,
)
DETACH = Flag("detach", ("-d", "--detach"), "bool", help="Run in the background and print the container ID.")
RUN_FLAGS: tuple[Flag, ...] = (*CREATE_FLAGS, DETACH)

GLOBAL_FLAGS: tuple[Flag, ...] = (
    Flag("root", ("--root",), metavar="DIR", help="Storage root for images and containers."),
    Flag("runroot", ("--runroot",), metavar="DIR", help="Directory for runtime state (pids, locks)."),
    Flag("storage_driver", ("--storage-driver",), metavar="NAME",
         help="Force a storage driver: overlay, fuse-overlayfs, vfs."),
    Flag("log_level", ("--log-level",), default="warn", choices=LOG_LEVELS, show_default=True,
         help="Messages to show on stderr."),
    Flag("debug", ("--debug",), "bool", help="Debug messages, and a traceback on errors."),
)


def click_options(flags: Sequence[Flag]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``flags`` as click options, in table order."""
    import click

    def option(flag: Flag) -> Callable[..., Any]:
        names = (f"{flag.names[0]}/{flag.off[0]}",) if flag.kind == "switch" else flag.names
        extra: dict[str, Any] = {}
        if flag.kind == "bool":
            extra["is_flag"] = True
        if flag.kind == "multi":
            extra["multiple"] = True
        if flag.kind == "int":
            extra["type"] = int
        if flag.choices:
            extra["type"] = click.Choice(list(flag.choices))
        if flag.metavar:
            extra["metavar"] = flag.metavar
        if flag.kind not in ("multi", "bool"):
            extra["default"] = flag.default
        return click.option(*names, flag.dest, help=flag.help, show_default=flag.show_default, **extra)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for flag in reversed(flags):
            f = option(flag)(f)
        return f

    return decorate


def parse(flags: Sequence[Flag], args: Sequence[str]) -> tuple[dict[str, Any], list[str]] | None:
    """Options up to the first argument that is not one, as click parses them for a command that
    does not take options after its arguments; None when click would have something to say."""
    table = {name: flag for flag in flags for name in (*flag.names, *flag.off)}
    values = {flag.dest: flag.initial() for flag in flags}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return values, list(args[i + 1:])
        if not arg.startswith("-") or arg == "-":
            return values, list(args[i:])
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            flag = table.get(name)
            if flag is None:
                return None
            if not flag.takes_value:
                if eq:
                    return None
                values[flag.dest] = name not in flag.off
            else:
                if not eq:
                    i += 1
                    if i == len(args):
                        return None
                    inline = args[i]
                if not _store(values, flag, inline):
                    return None
            i += 1
            continue
        for j in range(1, len(arg)):  # a cluster of short options: -it, -ePATH, -ite X
            flag = table.get("-" + arg[j])
            if flag is None:
                return None
            if not flag.takes_value:
                values[flag.dest] = True
                continue
            value = arg[j + 1:]
            if not value:
                i += 1
                if i == len(args):
                    return None
                value = args[i]
            if not _store(values, flag, value):
                return None
            break
        i += 1
    return values, []


def _store(values: dict[str, Any], flag: Flag, value: str) -> bool:
    if flag.kind == "multi":
        values[flag.dest] = (*values[flag.dest], value)
        return True
    if flag.choices and value not in flag.choices:
        return False
    if flag.kind == "int":
        try:
            values[flag.dest] = int(value)
        except ValueError:
            return False
        return True
    values[flag.dest] = value
    return True


def parse_run(args: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any], str, tuple[str, ...]] | None:
    """``[global flags] run [run flags] IMAGE [COMMAND...]``: (global values, run values, image,
    command), or None for any other command line."""
    found = parse(GLOBAL_FLAGS, args)
    if found is None or not found[1] or found[1][0] != "run":
        return None
    globals_, rest = found
    found = parse(RUN_FLAGS, rest[1:])
    if found is None or not found[1]:
        return None
    kw, positional = found
    return globals_, kw, positional[0], tuple(positional[1:])


def limit_values(kw: dict[str, Any]) -> dict[str, Any]:
    """The RunOptions fields of the limit flags."""
    return {k: kw.get(k) for k in LIMIT_KEYS}


def build_options(image: str, command: tuple[str, ...], kw: dict[str, Any], detach: bool = False) -> Any:
    from rootless.engine import runopts
    from rootless.errors import UsageError

    if kw["restart"] not in ("no", ""):
        raise UsageError(f"--restart {kw['restart']} is not supported: rl has no daemon to restart containers",
                         "use a systemd user unit with Restart=on-failure, or your batch system")
    if kw["workdir"] and not kw["workdir"].startswith("/"):
        raise UsageError(f"the working directory {kw['workdir']!r} is invalid: it needs to be an absolute path",
                         "use -w /path/in/the/container")
    env: list[str] = []
    for path in kw["env_file"]:
        env.extend(runopts.read_env_file(path))
    for entry in kw["env"]:
        value = runopts.parse_env_entry(entry)
        if value is not None:
            env.append(value)
    mounts = [runopts.parse_volume(v) for v in kw["volume"]]
    mounts += [runopts.parse_mount(m) for m in kw["mount_"]]
    mounts += [runopts.parse_tmpfs(t) for t in kw["tmpfs"]]
    log_driver, log_opts = runopts.parse_log_options(kw.get("log_driver") or "", kw.get("log_opt") or ())
    labels = {}
    for item in kw["label"]:
        key, _, value = item.partition("=")
        labels[key] = value
    return runopts.RunOptions(
        image=image,
        command=list(command),
        name=kw["name"],
        rm=kw["rm"],
        detach=detach,
        interactive=kw["interactive"],
        tty=kw["tty"],
        env=env,
        workdir=kw["workdir"],
        user=kw["user"],
        entrypoint=runopts.parse_command_line(kw["entrypoint"]) if kw["entrypoint"] is not None else None,
        mounts=mounts,
        read_only=kw["read_only"],
        hostname=kw["hostname"],
        add_hosts=[runopts.parse_add_host(h) for h in kw["add_host"]],
        userns=runopts.parse_userns(kw["userns"]),
        network=kw["network"],
        storage_driver=kw["storage_driver"],
        platform=kw["platform"],
        pull=runopts.parse_pull(kw["pull"]),
        cap_add=list(kw["cap_add"]),
        cap_drop=list(kw["cap_drop"]),
        security_opt=list(kw["security_opt"]),
        privileged=kw["privileged"],
        init=kw["init"],
        labels=labels,
        stop_signal=kw["stop_signal"],
        dns=list(kw["dns"]),
        dns_search=list(kw["dns_search"]),
        dns_option=list(kw["dns_option"]),
        tls_verify=kw["tls_verify"],
        publish=list(kw["publish"]),
        publish_all=kw["publish_all"],
        log_driver=log_driver,
        log_opts=log_opts,
        **limit_values(kw),
    )


def engine_env(app: Any) -> Any:
    from rootless.engine.env import EngineEnv

    return EngineEnv.from_settings(app.settings, app.dirs.storage, app.dirs.runroot)


def _progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def check_terminal(interactive: bool, tty: bool, stdin_fd: int = 0) -> None:
    """docker's rule for an attached -i -t: the input must be a terminal. From a pipe or a file the
    container's terminal would never see the end of the input, and rl would wait forever."""
    if interactive and tty and not os.isatty(stdin_fd):
        from rootless.errors import UsageError

        raise UsageError("the input device is not a TTY",
                         "leave out -t to pipe input into the container (-i alone), or run from a terminal")


def run_container(app: Any, image: str, command: tuple[str, ...], detach: bool, kw: dict[str, Any]) -> int:
    """`rl run`: create the container and run it attached, or hand it to a monitor with ``detach``."""
    from rootless.config.dirs import ensure_private_dir
    from rootless.engine import run as engine

    if not detach:
        check_terminal(kw["interactive"], kw["tty"])
    opts = build_options(image, command, kw, detach)
    env = engine_env(app)
    ensure_private_dir(env.runroot, os.getuid())
    if detach:
        from rootless.engine import containers as lifecycle

        prepared = engine.create(env, opts, progress=None if kw["quiet"] else _progress)
        lifecycle.save_run_options(lifecycle.store_of(env), prepared.record.id, opts)
        lifecycle.start_prepared(env, prepared, opts)
        sys.stdout.write(prepared.record.id + "\n")
        return 0
    prepared = engine.create(env, opts, progress=None if kw["quiet"] else _progress)
    sys.stdout.flush()
    return int(engine.run_foreground(env, prepared, opts))
