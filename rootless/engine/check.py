"""``rl system check``: every host condition rl depends on, as data.

Each check is a ``Check``: an id, a title, a status (pass, warn, fail, or skip when a check it
depends on failed), what was found, and the fix: the admin's exact command or file, the
``helpers/`` script, or the rl setting. "warn" means rl works through a named fallback (single-ID
mapping, a private runtime dir, local storage, vfs, host networking, no resource limits); "fail"
means a command that needs it stops with the same one-line error the check shows.

The checks probe for real where a probe is cheap and tells more than a file can: a forked child
tries ``unshare(CLONE_NEWUSER)`` (which catches seccomp filters and LSMs as well as the sysctls),
a new /proc and sysfs in a fresh user namespace (masked /proc and read-only /sys of an outer
container), the storage probes of ``rootless.storage.probe``, and the pause process itself
(``pause.ensure``: started if none runs, as the next command would).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rootless.errors import RLError
from rootless.executables import which
from rootless.records import field, record

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)

MIN_FREE = 64 * 1024 * 1024  # below this the store counts as full
LOW_FREE = 1024 * 1024 * 1024  # below this: a warning

HELPER_SUBIDS = "helpers/grant-subids.sh"
HELPER_DEVICES = "helpers/enable-devices.sh"
HELPER_PACKAGES = "helpers/install-packages.sh"

_RUNTIME_FIX = (
    "log in through a PAM session with pam_systemd (ssh, 'machinectl shell {user}@'), or ask the admin to run"
    " 'loginctl enable-linger {user}', or export XDG_RUNTIME_DIR to a 0700 directory you own"
    " (Slurm: export XDG_RUNTIME_DIR=$TMPDIR in the job script)"
)


@record(frozen=True)
class Check:
    id: str
    title: str
    status: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "status": self.status, "detail": self.detail, "fix": self.fix}


@record
class Context:
    """What the checks read: settings (key -> value), directories, who runs rl, the environment."""

    settings: Mapping[str, Any]
    storage: Path
    runroot: Path
    runroot_reason: str
    runroot_explicit: bool = False
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    user: str = ""
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    start_namespace: bool = True  # let the userns.start check start the pause process
    results: dict[str, Check] = field(default_factory=dict)
    probe_results: Any = None  # rootless.storage.probe.ProbeResults of the storage root
    placement: Any = None  # rootless.storage.placement.Placement

    def failed(self, *ids: str) -> bool:
        return any(self.results.get(i) is not None and self.results[i].status in (FAIL, SKIP) for i in ids)


# ---------------------------------------------------------------- probes in a forked child


def _in_child(body: Callable[[], None], timeout: float = 10.0) -> OSError | None:
    """Run ``body`` in a forked child; the OSError it raised (errno and text), or None."""
    import select
    import signal

    from rootless.runtime.syscalls import SYSCALLS

    _ = SYSCALLS.lib  # load libc before forking
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_fd)
            body()
        except BaseException as e:
            code = 1
            with contextlib.suppress(BaseException):
                err = getattr(e, "errno", None) or 0
                text = getattr(e, "strerror", None) or str(e) or type(e).__name__
                os.write(write_fd, f"{err} {text}".encode(errors="replace")[:2000])
        finally:
            os._exit(code)
    os.close(write_fd)
    data = b""
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if ready:
            data = os.read(read_fd, 4096)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            data = f"{errno.ETIMEDOUT} the probe did not finish in time".encode()
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0 and not data:
        return None
    text = data.decode(errors="replace")
    number, _, message = text.partition(" ")
    return OSError(int(number) if number.isdigit() else 0, message or "the probe failed")


def _unshare_user() -> None:
    from rootless.runtime.syscalls import CLONE_NEWUSER, SYSCALLS

    SYSCALLS.unshare(CLONE_NEWUSER)


def _fresh_mounts_child(proc_dir: str, sys_dir: str, uid: int, gid: int) -> None:  # pragma: no cover
    """In a new user, mount, pid and network namespace: mount a new proc, then a new sysfs."""
    from rootless.runtime.syscalls import (
        CLONE_NEWNET,
        CLONE_NEWNS,
        CLONE_NEWPID,
        CLONE_NEWUSER,
        MS_PRIVATE,
        MS_REC,
        SYSCALLS,
    )

    SYSCALLS.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    SYSCALLS.mount(None, "/", None, MS_REC | MS_PRIVATE)
    pid = os.fork()  # the first child is pid 1 of the new pid namespace
    if pid == 0:
        code = 0
        try:
            SYSCALLS.mount("proc", proc_dir, "proc", 0x2 | 0x4 | 0x8)  # nosuid, nodev, noexec
        except OSError as e:
            code = 10 + (e.errno or 0) if e.errno in (errno.EPERM, errno.EACCES, errno.EINVAL) else 9
        if code == 0:
            try:
                SYSCALLS.mount("sysfs", sys_dir, "sysfs", 0x1 | 0x2 | 0x4 | 0x8)  # ro
            except OSError as e:
                code = 100 + (e.errno or 0)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code >= 100:
        raise OSError(code - 100, "sysfs")
    if code >= 10:
        raise OSError(code - 10, "proc")
    if code:
        raise OSError(0, f"the probe's pid 1 exited with {code}")


# ---------------------------------------------------------------- helpers


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def proc_status(field_name: str, text: str | None = None) -> str | None:
    if text is None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == field_name:
            return value.strip()
    return None


def container_evidence(root: Path = Path("/")) -> list[str]:
    """Signs that rl runs inside a container or an outer user namespace (empty: none)."""
    found = []
    for marker, what in ((".dockerenv", "Docker"), ("run/.containerenv", "Podman")):
        if (root / marker).exists():
            found.append(f"/{marker} exists ({what})")
    value = os.environ.get("container")  # noqa: SIM112 - systemd's and podman's name for it
    if value:
        found.append(f"container={value} in the environment")
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        cgroup = ""
    for word in ("kubepods", "docker", "containerd", "libpod", "lxc"):
        if word in cgroup:
            found.append(f"pid 1's cgroup mentions {word}")
            break
    try:
        uid_map = (root / "proc/self/uid_map").read_text().split()
    except OSError:
        uid_map = []
    if uid_map and uid_map != ["0", "0", "4294967295"]:
        found.append(
            f"rl runs in a user namespace (uid_map: {' '.join(uid_map[:6])}{' ...' if len(uid_map) > 6 else ''})"
        )
    return found


# ---------------------------------------------------------------- the checks


def check_userns_sysctl(ctx: Context) -> Check:
    from rootless.runtime.userns import read_proc_sys, userns_problems

    problems = userns_problems()
    if problems:
        p = problems[0]
        more = f" (and {', '.join(q.sysctl for q in problems[1:])})" if len(problems) > 1 else ""
        return Check("userns.sysctl", "user namespace settings", FAIL, p.message + more, p.hint)
    limit = read_proc_sys("user.max_user_namespaces")
    return Check("userns.sysctl", "user namespace settings", PASS, f"user.max_user_namespaces={limit or '?'}")


def check_userns_create(ctx: Context) -> Check:
    from rootless.runtime.userns import diagnose_unshare_failure

    err = _in_child(_unshare_user)
    if err is None:
        return Check("userns.create", "creating a user namespace", PASS, "unshare(CLONE_NEWUSER) works")
    problem = diagnose_unshare_failure(err.errno or 0)
    detail = problem.message
    seccomp = proc_status("Seccomp")
    if err.errno in (errno.EPERM, errno.EACCES) and seccomp == "2" and "sysctl" not in (problem.hint or ""):
        detail += " (a seccomp filter is active on rl's process: 'Seccomp: 2' in /proc/self/status)"
        hint = (
            "rl runs under a seccomp profile that blocks unshare, as Docker's default does: run the outer"
            " container with --security-opt seccomp=unconfined (or a profile that allows unshare and"
            " clone with CLONE_NEWUSER); Kubernetes: securityContext.seccompProfile.type: Unconfined"
        )
        return Check("userns.create", "creating a user namespace", FAIL, detail, hint)
    return Check("userns.create", "creating a user namespace", FAIL, detail, problem.hint or "")


def check_subids(ctx: Context) -> Check:
    from rootless.runtime import idmap

    missing = []
    found = []
    for path in (idmap.SUBUID, idmap.SUBGID):
        ranges = idmap.read_subids(path, ctx.user, ctx.uid)
        if ranges:
            found.append(f"{path}: " + ", ".join(f"{r.start}-{r.start + r.count - 1}" for r in ranges))
        else:
            missing.append(str(path))
    if ctx.environ.get("RL_USERNS_SINGLE_ID", "").strip().lower() in ("1", "true", "yes"):
        return Check(
            "subids",
            "subordinate IDs",
            WARN,
            "single-ID mapping forced by RL_USERNS_SINGLE_ID=1: image files of other users become root's",
            "unset RL_USERNS_SINGLE_ID and run 'rl system migrate'",
        )
    if missing:
        return Check(
            "subids",
            "subordinate IDs",
            WARN,
            f"no entry for {ctx.user} in {' and '.join(missing)} (LDAP/SSSD users often have none): rl uses a"
            " single-ID mapping; images still unpack, files of other users become root's",
            idmap.GRANT_HINT.format(user=ctx.user).replace("helpers/grant-subids.sh", HELPER_SUBIDS),
        )
    return Check("subids", "subordinate IDs", PASS, "; ".join(found))


def check_helper(tool: str) -> Callable[[Context], Check]:
    def run(ctx: Context) -> Check:
        from rootless.runtime import idmap

        status = idmap.check_setid_helper(tool)
        title = f"{tool} helper"
        has_ranges = bool(idmap.read_subids(idmap.SUBUID if tool == "newuidmap" else idmap.SUBGID, ctx.user, ctx.uid))
        if status.usable:
            return Check(tool, title, PASS, f"{status.path} (setuid root or file capabilities)")
        if status.path is None:
            fix = f"ask the admin to install the uidmap package (apt-get install uidmap, or sudo {HELPER_PACKAGES})"
        else:
            fix = idmap.setuid_hint(status.path)
        if not has_ranges:
            return Check(tool, title, WARN, f"{status.problem}; not needed for the single-ID mapping rl uses now", fix)
        return Check(
            tool,
            title,
            FAIL,
            f"{status.problem}: rl cannot map {ctx.user}'s subordinate IDs",
            fix + "; or set RL_USERNS_SINGLE_ID=1 to run with a single-ID mapping meanwhile",
        )

    return run


def check_runtime_dir(ctx: Context) -> Check:
    from rootless.config.dirs import xdg_runtime_problem

    title = "runtime directory"
    fix = _RUNTIME_FIX.format(user=ctx.user)
    problem = None if ctx.runroot_explicit else xdg_runtime_problem(ctx.environ, ctx.uid)
    probe = _existing_ancestor(ctx.runroot)
    try:
        st = os.stat(ctx.runroot)
        if st.st_uid != ctx.uid:
            return Check(
                "runtime.dir",
                title,
                FAIL,
                f"runtime directory {ctx.runroot} belongs to uid {st.st_uid}, not to you (uid {ctx.uid})",
                "another user created it first; " + fix.replace("export XDG", "set XDG") + ", or pass --runroot",
            )
    except OSError:
        if not os.access(probe, os.W_OK | os.X_OK):
            return Check(
                "runtime.dir",
                title,
                FAIL,
                f"cannot create runtime directory {ctx.runroot}: {probe} is not writable",
                "set XDG_RUNTIME_DIR to a directory you own, or pass --runroot",
            )
    if problem:
        return Check("runtime.dir", title, WARN, f"{problem}: rl uses {ctx.runroot}", fix)
    return Check("runtime.dir", title, PASS, f"{ctx.runroot} ({ctx.runroot_reason})")


def check_userns_start(ctx: Context) -> Check:
    from rootless.runtime import pause

    title = "rl's user namespace"
    if ctx.failed("userns.sysctl", "userns.create", "runtime.dir"):
        return Check("userns.start", title, SKIP, "not tried: see the checks above")
    try:
        handle = pause.ensure(ctx.runroot) if ctx.start_namespace else pause.status(ctx.runroot)
    except RLError as e:
        return Check("userns.start", title, FAIL, e.message, e.hint or "")
    if handle is None:
        return Check("userns.start", title, PASS, "not running (the first command that needs it starts it)")
    how = "started" if handle.created else "running"
    if handle.single_id:
        return Check(
            "userns.start",
            title,
            WARN,
            f"pause process {handle.pid} {how} with a single-ID mapping ({handle.single_reason})",
            "see 'subordinate IDs' above; then run 'rl system migrate'",
        )
    return Check(
        "userns.start",
        title,
        PASS,
        f"pause process {handle.pid} {how}; {handle.plan.uid_map.size} uids and {handle.plan.gid_map.size} gids mapped",
    )


def _statvfs(path: Path) -> os.statvfs_result | None:
    try:
        return os.statvfs(_existing_ancestor(path))
    except OSError:
        return None


def check_storage_root(ctx: Context) -> Check:
    title = "storage root"
    root = ctx.storage
    base = _existing_ancestor(root)
    fix_root = "set storage.root to a writable local directory ('rl config set storage.root DIR' or --root)"
    st = _statvfs(root)
    if st is not None and st.f_flag & os.ST_RDONLY:
        return Check(
            "storage.root", title, FAIL, f"storage root {root} is on a read-only filesystem ({base})", fix_root
        )
    if not os.access(base, os.W_OK | os.X_OK):
        return Check(
            "storage.root", title, FAIL, f"storage root {root} is not writable ({base}: permission denied)", fix_root
        )
    if st is not None:
        free = st.f_bavail * st.f_frsize
        if free < MIN_FREE:
            return Check(
                "storage.root",
                title,
                FAIL,
                f"the filesystem holding storage root {root} is full ({_human(free)} free)",
                f"free space there ('rl system prune', 'rl rmi'), or {fix_root}",
            )
        if free < LOW_FREE:
            return Check(
                "storage.root",
                title,
                WARN,
                f"{root}: only {_human(free)} free",
                f"free space there, or {fix_root}",
            )
        return Check("storage.root", title, PASS, f"{root} ({_human(free)} free)")
    return Check("storage.root", title, PASS, str(root))


def check_storage_fs(ctx: Context) -> Check:
    from rootless.storage import placement, probe

    title = "storage filesystem"
    if ctx.failed("storage.root"):
        return Check("storage.fs", title, SKIP, "not tried: the storage root is unusable")
    results = probe.probe(ctx.storage)
    ctx.probe_results = results
    try:
        placed = placement.plan(ctx.storage, results, str(ctx.settings.get("storage.local_root", "") or ""))
    except RLError as e:
        return Check("storage.fs", title, FAIL, e.message, e.hint or "")
    ctx.placement = placed
    if placed.moved:
        return Check(
            "storage.fs",
            title,
            WARN,
            placed.notice() or "",
            "nothing to fix; set storage.local_root to node-local scratch to choose the directory,"
            " or storage.root to a local filesystem with user xattrs to keep everything together",
        )
    return Check("storage.fs", title, PASS, f"{ctx.storage}: can hold overlay upper dirs and user xattrs")


def check_storage_driver(ctx: Context) -> Check:
    from rootless.storage import probe, select

    title = "storage driver"
    placed = ctx.placement
    if placed is None:
        return Check("storage.driver", title, SKIP, "not tried: see 'storage filesystem'")
    store = placed.local or ctx.storage
    results = probe.probe(store) if placed.local else ctx.probe_results or probe.probe(store)
    configured = str(ctx.settings.get("storage.driver", "") or "")
    why = {name: results.problem(name) for name in select.DRIVERS}
    try:
        driver = select.choose(configured, results=results)
    except RLError as e:
        return Check("storage.driver", title, FAIL, e.message, e.hint or "")
    if driver == "overlay":
        return Check("storage.driver", title, PASS, "overlay (the kernel's, in the user namespace)")
    if driver == "fuse-overlayfs":
        return Check("storage.driver", title, PASS, f"fuse-overlayfs (native overlay: {why['overlay']})")
    if configured == "vfs":
        return Check("storage.driver", title, PASS, "vfs (configured)")
    return Check(
        "storage.driver",
        title,
        WARN,
        f"vfs: each container gets a full copy of its image (slow, uses disk); overlay: {why['overlay']};"
        f" fuse-overlayfs: {why['fuse-overlayfs']}",
        f"ask the admin to install fuse-overlayfs (apt-get install fuse-overlayfs fuse3) and make /dev/fuse"
        f" usable (sudo {HELPER_DEVICES}), or use Linux >= 5.11 for native overlay",
    )


def tun_problem(path: str = "/dev/net/tun") -> str | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{path} cannot be opened: {e.strerror}"
    os.close(fd)
    return None


def check_network(ctx: Context) -> Check:
    from rootless.network.bridge import nft_binary

    title = "user-mode network"
    tools = {name: which(name) for name in ("pasta", "slirp4netns")}
    tun = tun_problem()
    default = str(ctx.settings.get("network.default", "") or "")
    fallback = bool(ctx.settings.get("network.fallback_to_host", True))
    installed = [name for name, path in tools.items() if path]
    fix_tools = (
        f"ask the admin to install passt and slirp4netns (apt-get install passt slirp4netns, or sudo {HELPER_PACKAGES})"
    )
    fix_tun = f"ask the admin to make /dev/net/tun usable (sudo {HELPER_DEVICES})"
    if default in ("host", "none"):
        return Check("network", title, PASS, f"network.default = {default}: no helper needed")
    if installed and tun is None:
        if default in tools and default not in installed:
            return Check(
                "network",
                title,
                FAIL,
                f"network.default = {default}, but {default} is not installed",
                fix_tools + f", or set network.default to {installed[0]}",
            )
        if default in ("", "bridge") and nft_binary() is None:
            fix_nft = f"ask the admin to install nftables (apt-get install nftables, or sudo {HELPER_PACKAGES})"
            if default:
                return Check("network", title, FAIL, "network.default = bridge, but nft is not installed "
                             "(it does the bridge network's NAT)", fix_nft)
            return Check("network", title, WARN, f"{', '.join(installed)}; /dev/net/tun usable; nft is not "
                         f"installed: each container gets a {installed[0]} of its own instead of sharing one on "
                         "the default network (more memory per container)", fix_nft)
        return Check("network", title, PASS, f"{', '.join(installed)}; /dev/net/tun usable")
    why = tun if installed else "neither pasta nor slirp4netns is installed"
    fix = fix_tun if installed else fix_tools
    if default:
        return Check(
            "network", title, FAIL, f"network.default = {default} cannot work: {why}", fix + "; or --network host"
        )
    if fallback:
        return Check(
            "network",
            title,
            WARN,
            f"{why}: containers without --network use the host's network (warned once);"
            " --network pasta or slirp4netns fails",
            fix + "; or set network.fallback_to_host = false to make this an error",
        )
    return Check(
        "network",
        title,
        FAIL,
        f"{why}, and network.fallback_to_host is false",
        fix + "; or run with --network host",
    )


def check_cgroups(ctx: Context) -> Check:
    import importlib

    cg = importlib.import_module("rootless.cgroups.detect")

    title = "cgroups (resource limits)"
    try:
        info = cg.detect()
    except (OSError, RLError) as e:
        return Check("cgroups", title, WARN, f"cannot read the cgroup layout: {e}", "")
    problem = cg.problem(info, ["memory", "pids", "cpu"], ["--memory", "--pids-limit", "--cpus"])
    mode = str(ctx.settings.get("limits.without_cgroup", "error"))
    if problem is None:
        ours = cg.RL_CONTROLLERS
        return Check(
            "cgroups",
            title,
            PASS,
            f"cgroup v2, {info.delegated} delegated ({' '.join(c for c in info.controllers if c in ours)})",
        )
    then = (
        "containers run; limit flags stop with this error (limits.without_cgroup = error)"
        if mode == "error"
        else "containers run without limits (limits.without_cgroup = warn)"
    )
    message = problem.message.replace("cannot apply --memory, --pids-limit, --cpus: ", "")
    return Check("cgroups", title, WARN, f"{message}: {then}", problem.hint or "")


def check_nested(ctx: Context) -> Check:
    title = "outer container"
    evidence = container_evidence()
    seccomp = proc_status("Seccomp")
    if seccomp == "2":
        evidence.append("a seccomp filter is active (Seccomp: 2)")
    if not evidence:
        return Check("nested", title, PASS, "rl runs on the host (no outer container found)")
    return Check(
        "nested",
        title,
        PASS,
        "rl runs inside a container or user namespace: "
        + "; ".join(evidence)
        + " (see the namespace and /proc checks)",
    )


def check_fresh_mounts(ctx: Context) -> Check:
    title = "new /proc and /sys"
    if ctx.failed("userns.create"):
        return Check("mounts", title, SKIP, "not tried: user namespaces cannot be created")
    base = tempfile.mkdtemp(prefix="rl-check-")
    try:
        proc_dir, sys_dir = os.path.join(base, "proc"), os.path.join(base, "sys")
        os.mkdir(proc_dir)
        os.mkdir(sys_dir)
        err = _in_child(lambda: _fresh_mounts_child(proc_dir, sys_dir, ctx.uid, ctx.gid))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    outer = (
        "run the outer container with an unmasked /proc and /sys: docker/podman run --security-opt"
        " systempaths=unconfined (or --privileged); Kubernetes: securityContext.procMount: Unmasked"
    )
    if err is None:
        return Check("mounts", title, PASS, "a new proc and sysfs can be mounted in a user namespace")
    if err.strerror == "proc":
        return Check(
            "mounts",
            title,
            FAIL,
            f"the kernel refuses a new /proc in a user namespace ({os.strerror(err.errno or 0)}): parts of /proc"
            " are masked or read-only, as in a Docker or Kubernetes container",
            outer,
        )
    if err.strerror == "sysfs":
        return Check(
            "mounts",
            title,
            WARN,
            f"the kernel refuses a new sysfs in a user namespace ({os.strerror(err.errno or 0)}): /sys is"
            " read-only or masked; containers get the host's /sys bind-mounted read-only",
            outer,
        )
    return Check("mounts", title, WARN, f"the probe failed: {err.strerror}", "")


CHECKS: tuple[Callable[[Context], Check], ...] = (
    check_userns_sysctl,
    check_userns_create,
    check_subids,
    check_helper("newuidmap"),
    check_helper("newgidmap"),
    check_runtime_dir,
    check_userns_start,
    check_fresh_mounts,
    check_nested,
    check_storage_root,
    check_storage_fs,
    check_storage_driver,
    check_network,
    check_cgroups,
)


def run_all(ctx: Context, checks: tuple[Callable[[Context], Check], ...] = CHECKS) -> list[Check]:
    """Every check in order; a check that crashes is reported as a failed check, not a traceback."""
    out = []
    for fn in checks:
        try:
            result = fn(ctx)
        except RLError as e:
            result = Check(fn.__name__.removeprefix("check_"), fn.__name__, FAIL, e.message, e.hint or "")
        except Exception as e:  # a bug in a check must not hide the others
            result = Check(
                fn.__name__.removeprefix("check_"),
                fn.__name__,
                FAIL,
                f"internal error in the check: {type(e).__name__}: {e}",
                "this is a bug in rl: please report it",
            )
        ctx.results[result.id] = result
        out.append(result)
    return out


def summary(checks: list[Check]) -> dict[str, int]:
    return {s: sum(1 for c in checks if c.status == s) for s in STATUSES}
