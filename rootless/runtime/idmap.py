"""Subordinate ID ranges (/etc/subuid, /etc/subgid) and the host's newuidmap/newgidmap helpers."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class HelperStatus:
    name: str
    path: str | None
    usable: bool
    problem: str | None  # None when usable


def check_setid_helper(name: str) -> HelperStatus:
    """newuidmap/newgidmap must exist and be setuid root or carry file capabilities."""
    path = shutil.which(name) or next(
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
