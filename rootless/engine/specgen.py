"""From what the user asked and what the image says, the plain-data spec of one container process.

Pure functions: no file is read here except through the arguments, so the merge rules (docker's
Entrypoint/Cmd, Env, WorkingDir, User, capabilities, security options) are unit-tested on data.
"""

from __future__ import annotations

import signal as signals
from typing import Any

from rootless.engine.runopts import Mount as UserMount
from rootless.engine.runopts import RunOptions, merge_env
from rootless.engine.users import User as ResolvedUser
from rootless.errors import UsageError
from rootless.records import field, record
from rootless.runtime import capabilities
from rootless.runtime.spec import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    HOST,
    NEW,
    ContainerSpec,
    Mount,
    Namespaces,
    User,
    default_mounts,
)


@record(frozen=True)
class ImageDefaults:
    """The parts of an image config that shape a container."""

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()


def command_line(image: ImageDefaults, opts: RunOptions) -> list[str]:
    """docker's rule: --entrypoint replaces the image's Entrypoint and drops its Cmd."""
    if opts.entrypoint is not None:
        entrypoint = list(opts.entrypoint)
        cmd = list(opts.command)
    else:
        entrypoint = list(image.entrypoint or ())
        cmd = list(opts.command) if opts.command else list(image.cmd or ())
    args = entrypoint + cmd
    if not args:
        raise UsageError(
            f"no command specified for {opts.image}: the image has neither Entrypoint nor Cmd",
            "give a command after the image name, e.g. 'rl run IMAGE sh'",
        )
    return args


def stop_signal_name(value: str) -> str:
    """'SIGTERM', 'TERM' or '15' -> 'SIGTERM'; UsageError for anything else."""
    text = value.strip().upper() or "SIGTERM"
    if text.isdigit():
        try:
            return signals.Signals(int(text)).name
        except ValueError:
            pass
    else:
        name = text if text.startswith("SIG") else "SIG" + text
        if name in signals.Signals.__members__:
            return name
    raise UsageError(f"invalid signal {value!r}", "use a name like SIGTERM or a number")


def security(opts: RunOptions) -> tuple[str | dict[str, Any] | None, bool, bool]:
    """--security-opt -> (seccomp profile, no_new_privs, label/apparmor ignored)."""
    seccomp: str | dict[str, Any] | None = None if opts.privileged else "default"
    no_new_privs = not opts.privileged
    for raw in opts.security_opt:
        key, sep, value = raw.partition("=") if "=" in raw else raw.partition(":")
        if key == "seccomp":
            if value == "unconfined":
                seccomp = None
            elif value:
                from rootless.runtime.seccomp import load_profile

                seccomp = load_profile(value)
            else:
                raise UsageError(f"invalid --security-opt {raw!r}", "use seccomp=unconfined or seccomp=PROFILE.json")
        elif key in ("no-new-privileges", "no_new_privs"):
            no_new_privs = value.lower() not in ("false", "0") if sep else True
        elif key in ("label", "apparmor", "mask", "unmask", "systempaths"):
            continue  # accepted as podman does; rl has no LSM labels to set
        else:
            raise UsageError(f"invalid --security-opt {raw!r}", "use seccomp=..., no-new-privileges or label=...")
    return seccomp, no_new_privs, True


def user_mounts(mounts: list[UserMount], volume_dirs: dict[str, str]) -> list[Mount]:
    """-v/--mount/--tmpfs -> spec mounts. Named and anonymous volumes come resolved in ``volume_dirs``."""
    result = []
    for m in mounts:
        if m.type == "tmpfs":
            opts = ["nosuid", "nodev", *m.options]
            if m.readonly:
                opts.append("ro")
            result.append(Mount(m.destination, "tmpfs", "tmpfs", opts))
            continue
        source = m.source if m.type == "bind" else volume_dirs[m.destination]
        opts = ["rbind", *m.options]
        if m.readonly:
            opts.append("ro")
        result.append(Mount(m.destination, "bind", source, opts))
    return result


def build(
    *,
    image: ImageDefaults,
    opts: RunOptions,
    rootfs: str,
    user: ResolvedUser,
    hostname: str,
    etc_files: dict[str, str],
    volume_dirs: dict[str, str] | None = None,
    pts_gid: int | None = 5,
    host_network: bool = False,
) -> ContainerSpec:
    env = merge_env(list(image.env), opts.env)
    names = {e.partition("=")[0] for e in env}
    if "PATH" not in names:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOSTNAME" not in names:
        env.append(f"HOSTNAME={hostname}")
    if "HOME" not in names:
        env.append(f"HOME={user.home or '/'}")
    if opts.tty and "TERM" not in names:
        env.append("TERM=xterm")

    namespaces = Namespaces(net=HOST if host_network else NEW)

    caps = capabilities.tweak(capabilities.DEFAULT_CAPABILITIES, opts.cap_add, opts.cap_drop)
    if opts.privileged:
        caps = capabilities.tweak([], ["ALL"], opts.cap_drop)
    seccomp, no_new_privs, _ = security(opts)

    mounts = default_mounts(new_ipc=True, pts_gid=pts_gid)
    mounts.extend(user_mounts(opts.mounts, volume_dirs or {}))

    return ContainerSpec(
        rootfs=rootfs,
        args=command_line(image, opts),
        env=env,
        cwd=opts.workdir or image.working_dir or "/",
        user=User(user.uid, user.gid, list(user.additional_gids)),
        hostname=hostname,
        namespaces=namespaces,
        mounts=mounts,
        masked_paths=[] if opts.privileged else list(DEFAULT_MASKED_PATHS),
        readonly_rootfs=opts.read_only,
        capabilities=capabilities.for_user(caps, user.uid),
        no_new_privs=no_new_privs,
        seccomp=seccomp,
        tty=opts.tty,
        init=opts.init,
        etc_files=etc_files,
        stop_signal=stop_signal_name(opts.stop_signal or image.stop_signal or "SIGTERM"),
    )


def hosts_file(hostname: str, add_hosts: list[tuple[str, str]], own_ip: str | None = None) -> str:
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    lines.extend(f"{ip}\t{name}" for name, ip in add_hosts)
    lines.append(f"{own_ip or '127.0.0.1'}\t{hostname}")
    return "\n".join(lines) + "\n"


def resolv_conf(host_text: str, dns: list[str], search: list[str], options: list[str]) -> str:
    """The host's resolv.conf without loopback servers (unreachable from a container), or --dns."""
    servers: list[str] = []
    searches: list[str] = []
    opts: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            searches = words[1:]
        elif words[0] == "options":
            opts.extend(words[1:])
    servers = dns or [s for s in servers if not s.startswith("127.") and s != "::1"]
    lines = [f"nameserver {s}" for s in servers]
    if search or searches:
        lines.append("search " + " ".join(search or searches))
    if options or opts:
        lines.append("options " + " ".join(options or opts))
    return "\n".join(lines) + "\n" if lines else ""
