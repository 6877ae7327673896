"""What the user asked of `rl run` / `rl create`, parsed into plain data before anything runs.

Each parser takes the flag's text as docker accepts it and returns a value or raises UsageError
naming the flag. Nothing here touches the host.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rootless.errors import UsageError
from rootless.network.dns import parse_add_host as _parse_hosts_entry
from rootless.records import field, record


@record(frozen=True)
class Mount:
    type: str  # bind, tmpfs, volume
    destination: str
    source: str = ""
    readonly: bool = False
    options: tuple[str, ...] = ()  # for tmpfs: size=, mode=; for binds: propagation etc.


@record
class RunOptions:
    image: str
    command: list[str] = field(default_factory=list)
    name: str = ""
    rm: bool = False
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""
    entrypoint: list[str] | None = None
    mounts: list[Mount] = field(default_factory=list)
    read_only: bool = False
    hostname: str = ""
    add_hosts: list[tuple[str, str]] = field(default_factory=list)
    userns: str = ""
    network: str = ""
    storage_driver: str = ""
    platform: str = ""
    pull: str = "missing"
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    privileged: bool = False
    init: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_option: list[str] = field(default_factory=list)
    tls_verify: bool = True
    publish: list[str] = field(default_factory=list)
    publish_all: bool = False
    log_driver: str = ""  # json-file (default), k8s-file or none
    log_opts: dict[str, str] = field(default_factory=dict)  # max-size, max-file
    # resource limits as typed (checked by rootless.engine.limits); None: not given
    memory: str | None = None
    memory_swap: str | None = None
    memory_reservation: str | None = None
    cpus: str | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_shares: int | None = None
    cpu_weight: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None


def parse_env_entry(entry: str, environ: dict[str, str] | None = None) -> str | None:
    """``-e NAME=value`` as is; ``-e NAME`` takes NAME from rl's environment (skipped when unset)."""
    environ = dict(os.environ) if environ is None else environ
    if not entry or entry.startswith("="):
        raise UsageError(f"invalid environment variable {entry!r}", "use -e NAME=value or -e NAME")
    if "=" in entry:
        return entry
    value = environ.get(entry)
    return None if value is None else f"{entry}={value}"


def read_env_file(path: str, environ: dict[str, str] | None = None) -> list[str]:
    """docker's --env-file: NAME=value lines, NAME alone takes rl's environment, # comments."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}", "check the --env-file path") from None
    result = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("=", 1)[0]
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"invalid line {number} in env file {path}: {raw!r}", "use NAME=value lines")
        value = parse_env_entry(line.lstrip(), environ)
        if value is not None:
            result.append(value)
    return result


def merge_env(image_env: list[str], user_env: list[str]) -> list[str]:
    """Image Env first, each NAME overridden by the user's value; order kept."""
    merged: dict[str, str] = {}
    for entry in [*image_env, *user_env]:
        name, _, value = entry.partition("=")
        merged[name] = value
    return [f"{k}={v}" for k, v in merged.items()]


_VOLUME_OPTS = {"ro", "rw", "z", "Z", "rbind", "bind", "private", "rprivate", "shared", "rshared", "slave",
                "rslave", "nocopy", "U", "O", "delegated", "cached", "consistent", "noexec", "exec", "nosuid",
                "suid", "nodev", "dev"}


def parse_volume(spec: str, cwd: str | None = None) -> Mount:
    """``-v SRC:DST[:OPTS]`` (bind when SRC is a path, a named volume otherwise) or ``-v DST`` (anonymous)."""
    parts = spec.split(":")
    if not spec or len(parts) > 3:
        raise UsageError(f"invalid volume specification {spec!r}", "use -v HOST_DIR:CONTAINER_DIR[:ro]")
    if len(parts) == 1:
        return Mount("volume", _container_path(parts[0], spec))
    source, dest = parts[0], parts[1]
    options = tuple(o for o in (parts[2].split(",") if len(parts) == 3 else []) if o)
    for opt in options:
        if opt not in _VOLUME_OPTS:
            raise UsageError(f"invalid option {opt!r} in volume {spec!r}", "use ro, rw, z or Z")
    readonly = "ro" in options
    kept = tuple(o for o in options if o not in ("ro", "rw", "z", "Z"))
    if not source:
        raise UsageError(f"invalid volume specification {spec!r}: empty source", "use -v HOST_DIR:CONTAINER_DIR")
    if source.startswith(("/", ".", "~")):
        host = os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(source)))
        return Mount("bind", _container_path(dest, spec), host, readonly, kept)
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", source):
        raise UsageError(f"invalid volume name {source!r} in {spec!r}", "names use [a-zA-Z0-9][a-zA-Z0-9_.-]")
    return Mount("volume", _container_path(dest, spec), source, readonly, kept)


def _container_path(path: str, spec: str, flag: str = "volume specification") -> str:
    if not path.startswith("/"):
        raise UsageError(f"invalid {flag} {spec!r}: {path!r} is not an absolute path in the container",
                         "container paths start with /")
    return os.path.normpath(path)


def parse_mount(spec: str, cwd: str | None = None) -> Mount:
    """``--mount type=bind,source=/a,target=/b,readonly`` and ``type=tmpfs,target=/t,tmpfs-size=64m``."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for item in spec.split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key not in (_MOUNT_KEYS if sep else _MOUNT_FLAGS):
            raise UsageError(f"invalid --mount {spec!r}: unknown field {item!r}",
                             "use type=bind|volume|tmpfs,source=...,target=/path[,readonly]")
        if sep:
            fields[key] = value.strip()
        else:
            flags.add(key)
    kind = fields.get("type", "volume")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not target:
        raise UsageError(f"invalid --mount {spec!r}: no target", "add target=/path/in/container")
    readonly = bool(flags & {"readonly", "ro"}) or fields.get("readonly", fields.get("ro", "")) in ("1", "true")
    if kind == "bind":
        source = fields.get("source") or fields.get("src")
        if not source:
            raise UsageError(f"invalid --mount {spec!r}: a bind needs source=", "add source=/host/path")
        host = os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(source)))
        return Mount("bind", _container_path(target, spec, "--mount"), host, readonly)
    if kind == "tmpfs":
        opts = []
        if "tmpfs-size" in fields:
            opts.append(f"size={fields['tmpfs-size']}")
        if "tmpfs-mode" in fields:
            opts.append(f"mode={fields['tmpfs-mode']}")
        _check_tmpfs_options(opts, spec, "--mount")
        return Mount("tmpfs", _container_path(target, spec, "--mount"), "tmpfs", readonly, tuple(opts))
    if kind == "volume":
        source = fields.get("source") or fields.get("src") or ""
        return Mount("volume", _container_path(target, spec, "--mount"), source, readonly)
    raise UsageError(f"invalid --mount {spec!r}: unknown type {kind!r}", "use type=bind, type=tmpfs or type=volume")


def parse_tmpfs(spec: str) -> Mount:
    """``--tmpfs /path[:opts]``."""
    dest, _, opts = spec.partition(":")
    options = tuple(o for o in opts.split(",") if o)
    readonly = "ro" in options
    _check_tmpfs_options(options, spec, "--tmpfs")
    return Mount("tmpfs", _container_path(dest, spec, "--tmpfs"), "tmpfs", readonly,
                 tuple(o for o in options if o != "ro"))


# --mount's fields as docker and podman take them (the ones rl does not act on are accepted and ignored)
_MOUNT_KEYS = {"type", "source", "src", "target", "destination", "dst", "readonly", "ro", "consistency",
               "bind-propagation", "bind-nonrecursive", "bind-recursive", "volume-driver", "volume-label",
               "volume-nocopy", "volume-opt", "volume-subpath", "tmpfs-size", "tmpfs-mode", "relabel", "chown",
               "idmap"}
_MOUNT_FLAGS = {"readonly", "ro", "rw", "volume-nocopy", "bind-nonrecursive", "z", "u", "nosuid", "suid",
                "nodev", "dev", "noexec", "exec", "tmpcopyup", "notmpcopyup", "idmap"}
# tmpfs options the kernel takes: flags, and NAME=VALUE with the pattern of the value
_TMPFS_FLAGS = {"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync",
                "noatime", "atime", "nodiratime", "diratime", "relatime", "norelatime", "strictatime",
                "nostrictatime", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                "runbindable"}
_TMPFS_VALUES = {
    "size": (r"\d+[kKmMgGtTpPeE]?|\d+%", "a size such as 64m, 1g or 50%"),
    "nr_blocks": (r"\d+[kKmMgGtTpPeE]?|\d+%", "a number of blocks"),
    "nr_inodes": (r"\d+[kKmMgGtTpPeE]?|\d+%", "a number of inodes"),
    "mode": (r"[0-7]{1,4}", "an octal mode such as 1777"),
    "uid": (r"\d+", "a numeric uid"),
    "gid": (r"\d+", "a numeric gid"),
}


def _check_tmpfs_options(options: tuple[str, ...] | list[str], spec: str, flag: str) -> None:
    """Refuse what the kernel would refuse with a bare EINVAL when the container starts."""
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            if option not in _TMPFS_FLAGS:
                raise UsageError(f"invalid tmpfs option {option!r} in {flag} {spec!r}",
                                 "use size=, mode=, uid=, gid=, nr_inodes=, ro, noexec, nosuid or nodev")
            continue
        if name not in _TMPFS_VALUES:
            raise UsageError(f"invalid tmpfs option {option!r} in {flag} {spec!r}",
                             "use size=, mode=, uid=, gid=, nr_inodes=, ro, noexec, nosuid or nodev")
        pattern, expected = _TMPFS_VALUES[name]
        if not re.fullmatch(pattern, value):
            raise UsageError(f"invalid tmpfs option {option!r} in {flag} {spec!r}: {value!r} is not {expected}",
                             f"e.g. {flag} /tmp:size=64m,mode=1777" if flag == "--tmpfs"
                             else "e.g. --mount type=tmpfs,target=/tmp,tmpfs-size=64m,tmpfs-mode=1777")


def parse_add_host(spec: str) -> tuple[str, str]:
    """``--add-host name:ip`` (docker) or ``name=ip``; the IP must be an address or ``host-gateway``."""
    return _parse_hosts_entry(spec)


def parse_userns(value: str) -> str:
    if value in ("", "host", "keep-id", "auto", "nomap") or value.startswith("keep-id:"):
        return value
    raise UsageError(f"invalid --userns {value!r}", "use --userns=keep-id, or leave it out for the default mapping")


def parse_pull(value: str) -> str:
    if value in ("missing", "always", "never", "newer"):
        return value
    raise UsageError(f"invalid --pull {value!r}", "use --pull=missing, always or never")


def parse_command_line(text: str) -> list[str]:
    """--entrypoint takes one string; docker treats it as the whole program, not split on spaces."""
    return [text] if text else []


LOG_DRIVERS = ("json-file", "k8s-file", "none")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}


def parse_log_size(text: str) -> int:
    """docker's max-size: 10m, 512k, 1g, bytes; -1 for no limit (0 here)."""
    if text.strip() == "-1":
        return 0
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"invalid --log-opt max-size={text}", "use a size like 10m, 512k or 1g")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_log_options(driver: str, options: list[str] | tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``--log-driver`` and ``--log-opt KEY=VALUE`` (max-size, max-file) as (driver, options); checked."""
    driver = driver or "json-file"
    if driver not in LOG_DRIVERS:
        raise UsageError(f"unknown log driver {driver!r}", f"use --log-driver {', '.join(LOG_DRIVERS)}")
    opts: dict[str, str] = {}
    for item in options:
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise UsageError(f"invalid --log-opt {item!r}", "use --log-opt max-size=10m or --log-opt max-file=3")
        if key == "max-size":
            parse_log_size(value)
        elif key == "max-file":
            if not value.isdigit() or int(value) < 1:
                raise UsageError(f"invalid --log-opt max-file={value}", "max-file is a number of files, at least 1")
        else:
            raise UsageError(f"unknown log opt {key!r} for log driver {driver}", "use max-size or max-file")
        opts[key] = value
    if opts and driver == "none":
        raise UsageError("--log-opt does not apply to --log-driver none", "leave out --log-opt")
    if "max-file" in opts and int(opts["max-file"]) > 1 and "max-size" not in opts:
        raise UsageError("--log-opt max-file needs max-size", "add --log-opt max-size=10m")
    return driver, opts
