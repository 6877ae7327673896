"""Resolve docker's --user (name, uid, uid:gid, name:group) against the container's /etc/passwd and /etc/group."""

from __future__ import annotations

from rootless.errors import UsageError
from rootless.records import field, record

MAX_ID = 4294967294  # (uid_t)-1 means "no change" to the kernel


@record(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = field(default=())
    home: str = "/"
    name: str = ""


def _entries(text: str, min_fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= min_fields:
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str, group: str) -> User:
    """``spec`` as docker takes it; ``passwd`` and ``group`` are the container's files ("" when absent)."""
    spec = spec or "0"
    user_part, _, group_part = spec.partition(":")
    users = _entries(passwd, 7)
    groups = _entries(group, 4)

    name = ""
    home = "/"
    gid: int | None = None
    if user_part.isdigit():
        uid = int(user_part)
        row = next((u for u in users if u[2] == user_part), None)
        if row:
            name, gid, home = row[0], int(row[3]), row[5] or "/"
    else:
        row = next((u for u in users if u[0] == user_part), None)
        if row is None:
            raise UsageError(
                f"unable to find user {user_part}: no matching entries in passwd file",
                "use a numeric uid[:gid] or a user that exists in the image",
            )
        name, uid, gid, home = row[0], int(row[2]), int(row[3]), row[5] or "/"

    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            grow = next((g for g in groups if g[0] == group_part), None)
            if grow is None:
                raise UsageError(
                    f"unable to find group {group_part}: no matching entries in group file",
                    "use a numeric gid or a group that exists in the image",
                )
            gid = int(grow[2])
    if gid is None:
        gid = 0  # docker: a uid without a passwd entry runs with gid 0
    for what, value in (("uid", uid), ("gid", gid)):
        if value > MAX_ID:
            raise UsageError(f"invalid --user {spec!r}: {what} {value} is out of range",
                             f"{what}s go from 0 to {MAX_ID}")
    extra: list[int] = []
    if name and not group_part:
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid:
                extra.append(int(g[2]))
    return User(uid, gid, tuple(sorted(set(extra))), home, name)
