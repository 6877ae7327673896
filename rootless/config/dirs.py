"""Where rl keeps things: the store (images, containers) and the runtime state.

The runtime directory is ``$XDG_RUNTIME_DIR/rl`` when that variable names a directory the user owns.
Without a login session (su, sudo -u, ssh without pam_systemd, batch jobs) it is unset or wrong, and
every rl process of the user then picks the same private 0700 directory under the temp dir.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from rootless.errors import HostError
from rootless.records import record


@record(frozen=True)
class Dirs:
    storage: Path  # images, layers, containers, volumes
    runroot: Path  # pids, sockets, locks that die with a reboot
    runroot_reason: str  # why this runroot was chosen, for rl info


def xdg_home(environ: Mapping[str, str], variable: str, default: str) -> Path | None:
    """An XDG base directory by the spec's rules: ``$variable`` when absolute, else ``$HOME/default``
    (what platformdirs answers on Linux, without its 2-4 ms import on every command); None when
    neither is an absolute path and platformdirs must work it out."""
    base = environ.get(variable, "")
    if os.path.isabs(base):
        return Path(base)
    home = environ.get("HOME", "")
    return Path(home, default) if os.path.isabs(home) else None


def default_storage_root(environ: Mapping[str, str] = os.environ) -> Path:
    base = xdg_home(environ, "XDG_DATA_HOME", ".local/share")
    if base is not None:
        return base / "rl" / "storage"
    import platformdirs

    return Path(platformdirs.user_data_dir("rl", appauthor=False)) / "storage"


def xdg_runtime_problem(environ: Mapping[str, str], uid: int) -> str | None:
    """Why $XDG_RUNTIME_DIR cannot hold rl's runtime state, or None when it can."""
    value = environ.get("XDG_RUNTIME_DIR")
    if not value:
        return "XDG_RUNTIME_DIR is not set"
    try:
        st = os.stat(value)
    except OSError:
        return f"XDG_RUNTIME_DIR={value} does not exist"
    if not stat.S_ISDIR(st.st_mode):
        return f"XDG_RUNTIME_DIR={value} is not a directory"
    if st.st_uid != uid:
        return f"XDG_RUNTIME_DIR={value} is owned by uid {st.st_uid}, not {uid}"
    if not os.access(value, os.W_OK | os.X_OK):
        return f"XDG_RUNTIME_DIR={value} is not writable"
    return None


def private_tmp_runroot(uid: int, environ: Mapping[str, str] = os.environ) -> Path:
    """``rl-run-UID`` in $TMPDIR (when it is an absolute directory) or /tmp. Not tempfile.gettempdir():
    importing tempfile and its probing cost every command on a host without XDG_RUNTIME_DIR 2-3 ms."""
    tmp = environ.get("TMPDIR", "")
    base = tmp if os.path.isabs(tmp) and os.path.isdir(tmp) else "/tmp"
    return Path(base) / f"rl-run-{uid}"


def ensure_private_dir(path: Path, uid: int) -> None:
    """Create ``path`` mode 0700, or check that an existing one is ours and private."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise HostError(
            f"cannot create runtime directory {path}: {e.strerror}",
            "set XDG_RUNTIME_DIR to a directory you own, or pass --runroot",
        ) from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise HostError(
            f"runtime directory {path} belongs to uid {st.st_uid}, not to you (uid {uid})",
            "another user created it first; set XDG_RUNTIME_DIR to a directory you own or pass --runroot",
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def resolve(
    storage: str = "",
    runroot: str = "",
    environ: Mapping[str, str] = os.environ,
    uid: int | None = None,
) -> Dirs:
    """Work out the directories from settings (empty means the default); creates nothing."""
    uid = os.getuid() if uid is None else uid
    storage_path = Path(storage).expanduser() if storage else default_storage_root(environ)
    if runroot:
        return Dirs(storage_path, Path(runroot).expanduser(), "set by --runroot or storage.runroot")
    problem = xdg_runtime_problem(environ, uid)
    if problem is None:
        return Dirs(storage_path, Path(environ["XDG_RUNTIME_DIR"]) / "rl", "XDG_RUNTIME_DIR")
    return Dirs(storage_path, private_tmp_runroot(uid), f"{problem}: using a private dir under the temp dir")
