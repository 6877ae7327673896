"""Where the store's parts go when ``storage.root`` is on a filesystem that cannot hold them.

Network and cluster filesystems (NFS, Lustre, GPFS, SMB) and FUSE filesystems cannot hold overlay
upper dirs for a rootless user, and many of them take no ``user.*`` xattrs. On such a host (an HPC
home directory, a CI runner's shared workspace) rl still keeps images there, and puts what must be
written per container on a local directory instead:

- ``root``: image metadata and blobs always stay in ``storage.root``;
- ``layers``: unpacked layers (read-only lower dirs). They stay in ``storage.root`` when its
  filesystem takes user xattrs (a layer's opaque-directory markers are ``user.overlay.opaque``),
  and move to the local directory when it does not;
- ``containers``: each container's upper and work dirs (written while it runs). They move to the
  local directory whenever ``storage.root``'s filesystem cannot hold overlay upper dirs.

The local directory is ``storage.local_root``, or ``$TMPDIR/rl-local-<uid>`` (0700) when that is
empty: node-local scratch on a compute node. ``announce`` says once (per runtime directory) what
moved, as a warning; ``rl system check`` shows it every time.

The engine asks ``plan(root, probe_results, local_root_setting)`` for the directories and uses
``placement.layers`` and ``placement.containers`` where it used ``root / "layers"`` and
``root / "containers"``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from rootless.errors import StorageError
from rootless.log import log
from rootless.records import record
from rootless.storage.probe import ProbeResults, xattr_problem

LAYERS = "layers"
CONTAINERS = "containers"
WARNED_FILE = "placement.warned"
LOCAL_ROOT_SETTING = "storage.local_root"

_LOCAL_FIX = (
    f"set {LOCAL_ROOT_SETTING} to a directory on a local disk (rl config set {LOCAL_ROOT_SETTING} DIR, e.g."
    " node-local scratch) or storage.root to a local filesystem"
)


@record(frozen=True)
class Placement:
    root: Path  # storage.root: image metadata and blobs
    layers: Path  # unpacked layers (read-only lower dirs)
    containers: Path  # per-container upper and work dirs (writable)
    local: Path | None  # the local directory used, or None when everything is in root
    reason: str | None  # why root cannot hold upper dirs (None: it can)
    layers_moved: bool = False

    @property
    def moved(self) -> bool:
        return self.local is not None

    def notice(self) -> str | None:
        """The one-line message for the user, or None when nothing moved."""
        if self.local is None:
            return None
        what = "unpacked layers and container storage" if self.layers_moved else "container storage"
        kept = "image blobs" if self.layers_moved else "images"
        verb = "go" if self.layers_moved else "goes"
        return (
            f"{self.reason}: {what} {verb} to the local directory {self.local} ({kept} stay in {self.root});"
            f" set {LOCAL_ROOT_SETTING} to choose another"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "layers": str(self.layers),
            "containers": str(self.containers),
            "local": str(self.local) if self.local else None,
            "reason": self.reason,
        }


def default_local_root(uid: int | None = None) -> Path:
    uid = os.getuid() if uid is None else uid
    return Path(tempfile.gettempdir()) / f"rl-local-{uid}"


def _prepare_local(path: Path, uid: int) -> None:
    """Create ``path`` 0700, or check an existing one is the user's; StorageError otherwise."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StorageError(f"cannot create the local storage directory {path}: {e.strerror}", _LOCAL_FIX) from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise StorageError(
            f"the local storage directory {path} belongs to uid {st.st_uid}, not to you (uid {uid})", _LOCAL_FIX
        )
    if st.st_mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)


def plan(
    root: Path,
    results: ProbeResults,
    local_root: str = "",
    *,
    uid: int | None = None,
    create: bool = True,
    root_takes_xattrs: bool | None = None,
) -> Placement:
    """Where layers and container dirs go for a store at ``root`` given its probe ``results``.

    ``local_root`` is the storage.local_root setting (empty: ``default_local_root``). With
    ``create`` the local directory is made (0700) and checked; a local directory that is itself
    unsuitable raises StorageError naming the setting. ``root_takes_xattrs`` (tests) skips the
    xattr probe of ``root``.
    """
    uid = os.getuid() if uid is None else uid
    root = Path(os.path.abspath(root))
    if results.upper_fs is None:
        return Placement(root, root / LAYERS, root / CONTAINERS, None, None)
    local = Path(os.path.abspath(Path(local_root).expanduser())) if local_root else default_local_root(uid)
    if local == root or root in local.parents:
        raise StorageError(
            f"{results.upper_fs}, and {LOCAL_ROOT_SETTING}={local} is on the same filesystem", _LOCAL_FIX
        )
    if create:
        _prepare_local(local, uid)
        from rootless.runtime.syscalls import SYSCALLS
        from rootless.storage.probe import UNSUITABLE_FS

        try:
            name = UNSUITABLE_FS.get(SYSCALLS.statfs_type(str(local)))
        except OSError:
            name = None
        problem = f"{local} is on {name}, which cannot hold overlay upper dirs" if name else xattr_problem(local)
        if problem:
            raise StorageError(
                f"{results.upper_fs}, and the local storage directory is no better: {problem}", _LOCAL_FIX
            )
    if root_takes_xattrs is None:
        root_takes_xattrs = root.is_dir() and xattr_problem(root) is None
    layers_moved = not root_takes_xattrs
    return Placement(
        root=root,
        layers=(local if layers_moved else root) / LAYERS,
        containers=local / CONTAINERS,
        local=local,
        reason=results.upper_fs,
        layers_moved=layers_moved,
    )


def announce(placement: Placement, runroot: Path) -> bool:
    """Warn once per runtime directory (so once per boot) about what moved; True when it warned."""
    message = placement.notice()
    if message is None:
        return False
    marker = runroot / WARNED_FILE
    stamp = f"{placement.root} {placement.local}\n"
    try:
        if marker.read_text() == stamp:
            return False
    except OSError:
        pass
    log.warning("%s", message)
    tmp = marker.with_name(f".{WARNED_FILE}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(stamp)
        os.replace(tmp, marker)
    with contextlib.suppress(OSError):
        tmp.unlink()
    return True
