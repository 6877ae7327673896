"""Subordinate ID ranges (/etc/subuid, /etc/subgid) and the host's newuidmap/newgidmap helpers."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from rootless.errors import HostError, RLError, RuntimeSetupError
from rootless.executables import which
from rootless.records import record

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


@record(frozen=True)
class IdRange:
    start: int
    count: int


def parse_subid(text: str, user: str, uid: int) -> list[IdRange]:
    """The ranges in a subuid/subgid file's text that belong to ``user`` (by name or by number)."""
    ranges = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        if owner not in (user, str(uid)):
            continue
        try:
            r = IdRange(int(start), int(count))
        except ValueError:
            continue
        if r.count > 0 and r.start >= 0:
            ranges.append(r)
    return ranges


def read_subids(path: Path, user: str, uid: int) -> list[IdRange]:
    try:
        return parse_subid(path.read_text(), user, uid)
    except (FileNotFoundError, PermissionError):
        return []


@record(frozen=True)
class HelperStatus:
    name: str
    path: str | None
    usable: bool
    problem: str | None  # None when usable


def check_setid_helper(name: str) -> HelperStatus:
    """newuidmap/newgidmap must exist and be setuid root or carry file capabilities."""
    path = which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}", f"/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        return HelperStatus(name, None, False, f"{name} is not installed")
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return HelperStatus(name, path, True, None)
    try:
        os.getxattr(path, "security.capability")
        return HelperStatus(name, path, True, None)
    except OSError:
        pass
    return HelperStatus(name, path, False, f"{path} is neither setuid root nor has file capabilities")


# ---------------------------------------------------------------- mapping plans
#
# A uid_map/gid_map line is "INNER OUTER COUNT": ids INNER..INNER+COUNT-1 inside the namespace are
# OUTER..OUTER+COUNT-1 in the parent namespace. rl's pause namespace maps container 0 to the user and
# container 1.. to the subordinate ranges, one after the other.

# The kernel takes at most this many lines per map (since Linux 4.15; 5 before).
MAX_MAP_LINES = 340


@record(frozen=True)
class MapLine:
    inner: int
    outer: int
    count: int

    def text(self) -> str:
        return f"{self.inner} {self.outer} {self.count}"


@record(frozen=True)
class IdMap:
    """One uid_map or gid_map: the lines in the order they are written."""

    lines: tuple[MapLine, ...]

    @property
    def size(self) -> int:
        """How many ids the namespace has (the highest mapped inner id + 1 when contiguous)."""
        return sum(line.count for line in self.lines)

    def to_outer(self, inner: int) -> int | None:
        """The parent-namespace id of ``inner``, or None when it is not mapped."""
        for line in self.lines:
            if line.inner <= inner < line.inner + line.count:
                return line.outer + inner - line.inner
        return None

    def to_inner(self, outer: int) -> int | None:
        """The id inside the namespace of parent-namespace id ``outer``, or None when it is not mapped."""
        for line in self.lines:
            if line.outer <= outer < line.outer + line.count:
                return line.inner + outer - line.outer
        return None

    def text(self) -> str:
        """What to write to /proc/PID/uid_map (in a single write, as the kernel requires)."""
        return "".join(line.text() + "\n" for line in self.lines)

    def helper_args(self) -> list[str]:
        """The triples newuidmap/newgidmap take after the pid."""
        return [str(n) for line in self.lines for n in (line.inner, line.outer, line.count)]

    def as_lists(self) -> list[list[int]]:
        return [[line.inner, line.outer, line.count] for line in self.lines]

    @classmethod
    def from_lists(cls, rows: list[list[int]]) -> IdMap:
        return cls(tuple(MapLine(int(i), int(o), int(c)) for i, o, c in rows))


@record(frozen=True)
class MappingPlan:
    """The uid and gid maps of one user namespace, and how they must be written."""

    uid_map: IdMap
    gid_map: IdMap
    # True: only the user's own ids are mapped. An unprivileged process may write such maps itself
    # (no newuidmap), but must first write "deny" to /proc/PID/setgroups.
    single: bool

    @property
    def setgroups(self) -> str:
        return "deny" if self.single else "allow"


def usable_ranges(ranges: list[IdRange], own_id: int) -> list[IdRange]:
    """Ranges sorted, duplicates and overlaps dropped, the user's own id cut out (the kernel refuses
    a map whose outer ranges overlap), and no more than fit in one map next to the "0 ID 1" line."""
    out: list[IdRange] = []
    next_free = -1
    for r in sorted(ranges, key=lambda r: (r.start, r.count)):
        start, end = max(r.start, next_free), r.start + r.count
        pieces = [(start, end)]
        if start <= own_id < end:
            pieces = [(start, own_id), (own_id + 1, end)]
        for s, e in pieces:
            if e > s:
                out.append(IdRange(s, e - s))
        next_free = max(next_free, end)
    return out[: MAX_MAP_LINES - 1]


def _stacked(own: int, ranges: list[IdRange]) -> IdMap:
    lines = [MapLine(0, own, 1)]
    inner = 1
    for r in usable_ranges(ranges, own):
        lines.append(MapLine(inner, r.start, r.count))
        inner += r.count
    return IdMap(tuple(lines))


def full_mapping(uid: int, gid: int, subuid_ranges: list[IdRange], subgid_ranges: list[IdRange]) -> MappingPlan:
    """The pause namespace's maps: container 0 is the user, container 1.. the subordinate ranges
    one after the other ("0 UID 1", "1 START1 COUNT1", "1+COUNT1 START2 COUNT2", ...)."""
    return MappingPlan(_stacked(uid, subuid_ranges), _stacked(gid, subgid_ranges), single=False)


def single_mapping(uid: int, gid: int) -> MappingPlan:
    """The pause namespace's maps when the user has no subordinate ids: only "0 UID 1"."""
    return MappingPlan(IdMap((MapLine(0, uid, 1),)), IdMap((MapLine(0, gid, 1),)), single=True)


def _keep_id(inner_id: int, outer_size: int, size: int | None) -> IdMap:
    # Outer 0 (the host user) becomes inner_id; outer 1..n-1 fill inner 0.. around it.
    n = outer_size if size is None else min(outer_size, size)
    if inner_id < 0 or n < 1:
        raise ValueError(f"bad keep-id mapping: id {inner_id}, namespace size {n}")
    rest = n - 1
    below = min(inner_id, rest)
    lines = [MapLine(inner_id, 0, 1)]
    if below:
        lines.insert(0, MapLine(0, 1, below))
    if rest > below:
        lines.append(MapLine(inner_id + 1, below + 1, rest - below))
    return IdMap(tuple(lines))


def keep_id_mapping(
    container_uid: int,
    container_gid: int,
    outer_size: int,
    outer_gid_size: int | None = None,
    size: int | None = None,
) -> MappingPlan:
    """Maps of a user namespace nested in the pause namespace for ``--userns=keep-id``.

    Inside it the user keeps their id: container ``container_uid`` is pause-namespace 0 (the host
    user), container 0..U-1 are pause-namespace 1..U, container U+1.. are U+1.. up to the pause
    namespace's size ``outer_size`` (``outer_gid_size`` for gids, default the same); ``size`` caps
    how many pause-namespace ids the nested namespace uses (keep-id:size=N). rl is root in the pause
    namespace, so it writes these maps itself (``write_maps``); setgroups stays allowed.
    """
    gid_size = outer_size if outer_gid_size is None else outer_gid_size
    return MappingPlan(
        _keep_id(container_uid, outer_size, size), _keep_id(container_gid, gid_size, size), single=False
    )


def nomap_mapping(outer_size: int, outer_gid_size: int | None = None) -> MappingPlan:
    """Maps of a nested namespace for ``--userns=nomap``: the user's own ids are left out, container
    0..N-2 are pause-namespace 1..N-1."""
    gid_size = outer_size if outer_gid_size is None else outer_gid_size
    if outer_size < 2 or gid_size < 2:
        raise ValueError("--userns=nomap needs subordinate ids: the namespace has only the user's own id")
    return MappingPlan(
        IdMap((MapLine(0, 1, outer_size - 1),)), IdMap((MapLine(0, 1, gid_size - 1),)), single=False
    )


def parse_map(text: str) -> IdMap:
    """The lines of a /proc/PID/uid_map or gid_map as read (columns separated by blanks)."""
    lines = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ValueError(f"bad id map line {raw!r}")
        lines.append(MapLine(int(fields[0]), int(fields[1]), int(fields[2])))
    return IdMap(tuple(lines))


def read_map(pid: int | str, which: str = "uid_map") -> IdMap:
    """The uid_map or gid_map of a process, as seen from the caller's user namespace."""
    return parse_map(Path(f"/proc/{pid}/{which}").read_text())


def write_maps(pid: int | str, plan: MappingPlan, proc: Path = Path("/proc")) -> None:
    """Write a namespace's maps directly (setgroups first, then uid_map, then gid_map).

    Works when the writer may map every outer id itself: the namespace's creator for a single
    mapping of its own ids, or root of the parent namespace (rl inside the pause namespace writing
    a nested keep-id map). Raises OSError naming the file.
    """
    base = proc / str(pid)
    steps = [("uid_map", plan.uid_map.text()), ("gid_map", plan.gid_map.text())]
    if plan.single:
        steps.insert(0, ("setgroups", "deny"))
    for name, data in steps:
        try:
            with open(base / name, "w") as f:
                f.write(data)
        except OSError as e:
            raise OSError(e.errno, f"write to {base / name} refused: {e.strerror}") from None


# ---------------------------------------------------------------- newuidmap / newgidmap

GRANT_HINT = (
    "ask the admin to run 'helpers/grant-subids.sh {user}' (it adds ranges to /etc/subuid and /etc/subgid),"
    " then run 'rl system migrate'"
)


def setuid_hint(path: str) -> str:
    return (
        f"{path} must be setuid root: ask the admin to run 'chmod u+s {path}' or reinstall the uidmap package"
    )


def helper_command(tool: str, path: str, pid: int, idmap: IdMap) -> list[str]:
    return [path, str(pid), *idmap.helper_args()]


def translate_helper_failure(
    tool: str, pid: int, user: str, returncode: int, stderr: str, status: HelperStatus
) -> RLError:
    """Turn a failed newuidmap/newgidmap run into one typed error with the admin's fix."""
    kind = "uid" if tool == "newuidmap" else "gid"
    subfile = "/etc/subuid" if kind == "uid" else "/etc/subgid"
    text = " ".join(stderr.split())
    # the tool prefixes its messages with its own name
    detail = text.split(": ", 1)[1] if text.startswith(f"{tool}: ") else text
    what = f"{tool} failed for pid {pid}"
    low = detail.lower()
    if "not allowed" in low and "range" in low:
        return HostError(f"{what}: {detail} by {subfile}", GRANT_HINT.format(user=user))
    if "could not open proc directory" in low or "could not stat directory" in low:
        return RuntimeSetupError(
            f"{what}: the process exited before its {kind}s were mapped ({detail})",
            "run the command again; if it keeps failing, run 'rl system migrate'",
        )
    if "owned by a different user" in low:
        return HostError(
            f"{what}: {detail}", f"{tool} must run as the user who owns the process; check {subfile}"
        )
    if "write to" in low or "operation not permitted" in low or "permission denied" in low:
        file = f"{kind}_map"
        hint = (
            setuid_hint(status.path or f"/usr/bin/{tool}")
            if not status.usable
            else f"check that {user}'s ranges in {subfile} do not include {user}'s own {kind} and that "
            f"{tool} is setuid root; {GRANT_HINT.format(user=user)}"
        )
        return HostError(f"{what}: write to {file} refused", hint)
    if "cannot determine" in low:
        return HostError(f"{what}: {detail}", f"{user} needs an entry in /etc/passwd (or NSS) for {tool}")
    message = f"{what}: exit status {returncode}" + (f": {detail}" if detail else "")
    return HostError(message, GRANT_HINT.format(user=user))


def run_map_helper(
    tool: str,
    pid: int,
    idmap: IdMap,
    user: str,
    *,
    status: HelperStatus | None = None,
    runner: Callable[[list[str]], tuple[int, str]] | None = None,
) -> None:
    """Write ``idmap`` to /proc/PID/{uid,gid}_map through newuidmap/newgidmap.

    ``runner`` (tests) takes the argv and returns (exit status, stderr). Raises HostError with the
    admin's fix, or RuntimeSetupError when the target process is gone.
    """
    status = status or check_setid_helper(tool)
    if status.path is None:
        raise HostError(
            f"cannot map the subordinate {'uids' if tool == 'newuidmap' else 'gids'} of pid {pid}: "
            f"{tool} is not installed",
            "ask the admin to install the uidmap package (apt-get install uidmap)",
        )
    if not status.usable:
        raise HostError(f"{tool} cannot map ids for pid {pid}: {status.problem}", setuid_hint(status.path))
    argv = helper_command(tool, status.path, pid, idmap)
    try:
        returncode, stderr = (runner or _run)(argv)
    except OSError as e:
        raise HostError(
            f"cannot run {status.path} for pid {pid}: {e.strerror}",
            "ask the admin to reinstall the uidmap package",
        ) from None
    if returncode != 0:
        raise translate_helper_failure(tool, pid, user, returncode, stderr, status)


def _run(argv: list[str]) -> tuple[int, str]:
    import subprocess  # only when the namespace starts: ~1 ms for every other command

    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr + proc.stdout
