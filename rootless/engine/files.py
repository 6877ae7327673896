"""A container's files: rl diff, rl export, rl cp and rl commit.

Everything runs inside rl's user namespace, as its root, so the container's files show the IDs the
image uses (1234 is 1234) and what rl writes on the host belongs to the user. A stopped container's
root filesystem is mounted for the operation through its storage driver and unmounted afterwards.

Changes come from the driver's changes dir when it has one (overlay upper: whiteouts are 0/0
character devices, opaque dirs carry ``user.overlay.opaque=y``); vfs has none, so its flattened copy is
compared with the image's layers (type, mode, owner, size, mtime, link target).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from rootless.engine.env import EngineEnv
from rootless.errors import NotFoundError, RLError, UsageError
from rootless.records import record
from rootless.state.containers import ContainerRecord, ContainerStore

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
FUSE_OPAQUE_MARKER = ".wh..opq"  # fuse-overlayfs marks a directory it made opaque with a whiteout of this name
OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")
# mount points rl's runtime may create in a root filesystem that lacks them: not the container's changes
RUNTIME_PATHS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv",
                 "/dev/shm", "/dev/pts", "/dev/mqueue")


@record
class Change:
    kind: str  # "A", "C" or "D"
    path: str  # absolute, in the container


# ---------------------------------------------------------------- mounting


def _store(env: EngineEnv) -> ContainerStore:
    return ContainerStore(env.storage)


def _layers(env: EngineEnv, record: ContainerRecord) -> list[Path]:
    from rootless.engine.containers import _diff_ids_of
    from rootless.image.store import Store

    store = Store(env.storage)
    return [store.layer_dir(d) for d in _diff_ids_of(env, record)]


@contextlib.contextmanager
def container_root(env: EngineEnv, ref: str) -> Iterator[tuple[ContainerRecord, Path]]:
    """(record, mounted root filesystem): the running container's, or a stopped one's mounted for the block.

    A --userns=keep-id container's mount shows other owners than the container sees (owner_map)."""
    from rootless.engine.run import container_dirs
    from rootless.runtime import pause
    from rootless.storage.driver import get_driver

    pause.enter(env.runroot)
    store = _store(env)
    record = store.get(ref)
    storage_dir, rootfs, _ = container_dirs(store, record.id)
    driver = get_driver(record.driver or "vfs")
    mounted_here = False
    if not driver.is_mounted(rootfs):
        rootfs.mkdir(exist_ok=True)
        driver.mount(storage_dir, _layers(env, record), rootfs)
        mounted_here = True
    try:
        yield record, rootfs
    finally:
        if mounted_here:
            try:
                running = store.get(record.id).running
            except NotFoundError:
                running = False
            if not running:  # 'rl start' meanwhile keeps the mount
                with contextlib.suppress(RLError):
                    driver.unmount(storage_dir, rootfs)


def owner_map(env: EngineEnv, record: ContainerRecord) -> Any:
    """The storage.driver.OwnerMap the container's mount shows through (keep-id), or None."""
    from rootless.engine.run import container_dirs
    from rootless.storage.driver import get_driver

    storage_dir, _, _ = container_dirs(_store(env), record.id)
    return get_driver(record.driver or "vfs").owner_map(storage_dir)


def _mount_sources(env: EngineEnv, record: ContainerRecord) -> list[tuple[str, str]]:
    """(destination, host directory) of the container's volumes and bind mounts, longest destination first."""
    out = []
    for m in record.mounts:
        dest = os.path.normpath("/" + str(m.get("Destination") or "")).replace("//", "/")
        if m.get("Type") == "volume":
            name = m.get("Name") or m.get("Source")
            if name:
                out.append((dest, str(env.storage / "volumes" / str(name) / "_data")))
        elif m.get("Type") == "bind" and m.get("Source"):
            out.append((dest, str(m["Source"])))
    return sorted(out, key=lambda x: len(x[0]), reverse=True)


def _host_path(env: EngineEnv, record: ContainerRecord, rootfs: Path, path: str, *, follow_last: bool) -> str:
    """Where container path ``path`` is for rl: in the root filesystem or in a volume or bind mount."""
    from rootless.runtime.securejoin import secure_join

    clean = os.path.normpath("/" + path)
    if clean.startswith("//"):
        clean = clean[1:]
    parent, base = os.path.split(clean)
    if follow_last or not base:
        parent, base = clean, ""
    root, rel = str(rootfs), parent
    for dest, source in _mount_sources(env, record):
        if parent == dest or parent.startswith(dest.rstrip("/") + "/"):
            root, rel = source, parent[len(dest):] or "/"
            break
    resolved = secure_join(root, rel)
    return os.path.join(resolved, base) if base else resolved


# ---------------------------------------------------------------- changes


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _in_layers(layers: list[Path], rel: str) -> bool:
    """Whether the image (its layers, top first) has ``rel``."""
    parts = rel.split("/")
    for layer in reversed(layers):
        path = os.path.join(layer, rel)
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None:
            return not _is_whiteout(st) and not os.path.basename(rel).startswith(WHITEOUT_PREFIX)
        # a whiteout or opaque dir on the way hides the lower layers
        for i in range(1, len(parts)):
            d = os.path.join(layer, *parts[:i])
            try:
                dst = os.lstat(d)
            except OSError:
                break
            if _is_whiteout(dst) or (stat.S_ISDIR(dst.st_mode) and _is_opaque(d)):
                return False
            if os.path.lexists(os.path.join(layer, *parts[: i - 1], WHITEOUT_PREFIX + parts[i - 1])):
                return False
    return False


def _walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under ``root``, depth first in name order, parents first."""
    return _walk_sub(root, "")


def _walk_sub(root: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    try:
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        child = f"{rel}/{entry.name}" if rel else entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        yield child, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_sub(root, child)


def _upper_changes(upper: str, layers: list[Path]) -> list[tuple[Change, str | None]]:
    """Changes from an overlay upper dir: (change, source path in upper or None for a deletion)."""
    out: list[tuple[Change, str | None]] = []
    for rel, st in _walk(upper):
        path = os.path.join(upper, rel)
        base = os.path.basename(rel)
        if base in (OPAQUE_MARKER, FUSE_OPAQUE_MARKER):
            continue
        if _is_whiteout(st):
            out.append((Change("D", "/" + rel), None))
            continue
        if base.startswith(WHITEOUT_PREFIX):  # fuse-overlayfs without mknod
            target = os.path.join(os.path.dirname(rel), base[len(WHITEOUT_PREFIX):]).lstrip("/")
            out.append((Change("D", "/" + target), None))
            continue
        existed = _in_layers(layers, rel)
        out.append((Change("C" if existed else "A", "/" + rel), path))
        if stat.S_ISDIR(st.st_mode) and existed and (
                _is_opaque(path) or any(os.path.lexists(os.path.join(path, m))
                                        for m in (OPAQUE_MARKER, FUSE_OPAQUE_MARKER))):
            present = set(os.listdir(path))
            for name in sorted(_merged_names(layers, rel)):
                if name not in present:
                    out.append((Change("D", f"/{rel}/{name}"), None))
    return out


def _merged_names(layers: list[Path], rel: str) -> set[str]:
    """The names the image has in directory ``rel``."""
    names: set[str] = set()
    hidden: set[str] = set()
    for layer in reversed(layers):
        d = os.path.join(layer, rel)
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if e.name.startswith(WHITEOUT_PREFIX):
                hidden.add(e.name[len(WHITEOUT_PREFIX):])
            elif _is_whiteout(st):
                hidden.add(e.name)
            elif e.name not in hidden:
                names.add(e.name)
        if _is_opaque(d):
            break
    return names


def _image_tree(layers: list[Path]) -> dict[str, tuple[os.stat_result, str]]:
    """The image's merged view: relative path -> (lstat, path in its layer)."""
    tree: dict[str, tuple[os.stat_result, str]] = {}
    for layer in layers:
        root = str(layer)
        for rel, st in _walk(root):
            base = os.path.basename(rel)
            path = os.path.join(root, rel)
            if _is_whiteout(st) or base.startswith(WHITEOUT_PREFIX):
                name = rel if _is_whiteout(st) else os.path.join(os.path.dirname(rel), base[len(WHITEOUT_PREFIX):])
                if base == OPAQUE_MARKER:
                    name = os.path.dirname(rel)
                    for k in [k for k in tree if k.startswith(name + "/")]:
                        del tree[k]
                    continue
                for k in [k for k in tree if k == name or k.startswith(name + "/")]:
                    del tree[k]
                continue
            replaced = rel in tree and stat.S_ISDIR(tree[rel][0].st_mode) != stat.S_ISDIR(st.st_mode)
            if (stat.S_ISDIR(st.st_mode) and _is_opaque(path)) or replaced:
                for k in [k for k in tree if k.startswith(rel + "/")]:
                    del tree[k]
            tree[rel] = (st, path)
    return tree


def _differs(a: os.stat_result, a_path: str, b: os.stat_result, b_path: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or a.st_mode != b.st_mode:
        return True
    if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
        return True
    if stat.S_ISDIR(a.st_mode):
        return a.st_mtime_ns != b.st_mtime_ns
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) != os.readlink(b_path)
    return a.st_size != b.st_size or a.st_mtime_ns != b.st_mtime_ns


def _flat_changes(rootfs: str, layers: list[Path]) -> list[tuple[Change, str | None]]:
    """vfs: compare the flattened copy with the image's layers."""
    image = _image_tree(layers)
    out: list[tuple[Change, str | None]] = []
    seen: set[str] = set()
    for rel, st in _walk(rootfs):
        seen.add(rel)
        path = os.path.join(rootfs, rel)
        old = image.get(rel)
        if old is None:
            out.append((Change("A", "/" + rel), path))
        elif _differs(st, path, old[0], old[1]):
            out.append((Change("C", "/" + rel), path))
    gone = sorted(k for k in image if k not in seen)
    deleted: list[str] = []
    for rel in gone:
        if deleted and rel.startswith(deleted[-1] + "/"):
            continue  # docker lists only the top of a deleted tree
        deleted.append(rel)
        out.append((Change("D", "/" + rel), None))
    return out


def _filter_runtime(changes: list[tuple[Change, str | None]]) -> list[tuple[Change, str | None]]:
    """Drop the empty mount points the runtime created (docker keeps them in an init layer)."""
    dropped = set()
    for change, path in changes:
        if change.kind == "A" and change.path in RUNTIME_PATHS and path is not None:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (stat.S_ISDIR(st.st_mode) and not os.listdir(path)) or (stat.S_ISREG(st.st_mode) and st.st_size == 0):
                dropped.add(change.path)
    if not dropped:
        return changes
    kept = [(c, p) for c, p in changes if c.path not in dropped]
    # a directory changed only by the runtime's mount points (its mtime, its copy-up) goes too
    parents = {os.path.dirname(d) for d in dropped}
    for parent in sorted(parents, key=lambda d: d.count("/"), reverse=True):
        while parent not in ("/", ""):
            others = [c for c, _ in kept if c.path.startswith(parent + "/")]
            entry = next(((c, p) for c, p in kept if c.path == parent), None)
            if others or entry is None or entry[0].kind != "C" or entry[1] is None or not os.path.isdir(entry[1]):
                break
            kept.remove(entry)
            parent = os.path.dirname(parent)
    return kept


def _changes(env: EngineEnv, record: ContainerRecord, rootfs: Path) -> list[tuple[Change, str | None]]:
    from rootless.engine.run import container_dirs
    from rootless.storage.driver import get_driver

    storage_dir, _, _ = container_dirs(_store(env), record.id)
    layers = _layers(env, record)
    upper = get_driver(record.driver or "vfs").changes_dir(storage_dir)
    if upper is not None and upper.is_dir():
        found = _upper_changes(str(upper), layers)
    else:
        found = _flat_changes(str(rootfs), layers)
    found = _filter_runtime(found)
    found.sort(key=lambda cp: cp[0].path)
    return found


def diff(env: EngineEnv, ref: str) -> list[Change]:
    """docker diff: A (added), C (changed), D (deleted), sorted by path."""
    with container_root(env, ref) as (record, rootfs):
        return [c for c, _ in _changes(env, record, rootfs)]


# ---------------------------------------------------------------- tar writing


def _clear_names(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


Owner = Callable[[int, int], tuple[int, int]]  # the owner to record for a file's uid, gid


def _add(tf: tarfile.TarFile, path: str, arcname: str, owner: Owner | None = None) -> None:
    """One entry (not recursive); sockets and other unsupported kinds are skipped."""
    info = tf.gettarinfo(path, arcname)
    if info is None:
        return
    _clear_names(info)
    if owner is not None:
        info.uid, info.gid = owner(info.uid, info.gid)
    if info.isreg():
        with open(path, "rb") as f:
            tf.addfile(info, f)
    else:
        tf.addfile(info)


def _add_tree(tf: tarfile.TarFile, path: str, arcname: str, owner: Owner | None = None) -> None:
    """``path`` (not following it when a symlink) as ``arcname``, and what is below it."""
    _add(tf, path, arcname, owner)
    if os.path.isdir(path) and not os.path.islink(path):
        for rel, _st in _walk_sub(path, ""):
            _add(tf, os.path.join(path, rel), f"{arcname}/{rel}" if arcname not in ("", ".") else rel, owner)


def export(env: EngineEnv, ref: str, out: BinaryIO) -> None:
    """The container's merged root filesystem as a tar, numeric owners as the container sees them."""
    with container_root(env, ref) as (record, rootfs), \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        shown = owner_map(env, record)
        owner = shown.to_disk if shown is not None else None
        for rel, _st in _walk(str(rootfs)):
            _add(tf, os.path.join(rootfs, rel), rel, owner)


# ---------------------------------------------------------------- cp


def split_container_path(arg: str) -> tuple[str, str] | None:
    """docker's CONTAINER:PATH; None for a local path (absolute, ./relative, or without a colon)."""
    if arg.startswith("/") or arg.startswith(".") or ":" not in arg:
        return None
    name, _, path = arg.partition(":")
    if not name:
        return None
    return name, path


def _pipe_tar(write: Any) -> Any:
    """Run ``write(tarfile)`` in a thread writing into a pipe; returns (reader file, thread, errors)."""
    r, w = os.pipe()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with os.fdopen(w, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                write(tf)
        except BaseException as e:  # reported by the reader
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return os.fdopen(r, "rb"), thread, errors


def _extract(stream: BinaryIO, dest: str, label: str) -> None:
    from rootless.image.unpack import unpack

    unpack(stream, dest, label=label, compression_kind=None, whiteouts="apply")


def _copy_tar(write: Any, dest: str, label: str) -> None:
    reader, thread, errors = _pipe_tar(write)
    try:
        with reader:
            _extract(reader, dest, label)
    finally:
        thread.join()
    if errors:
        e = errors[0]
        if isinstance(e, RLError):
            raise e
        if isinstance(e, OSError):
            raise RLError(f"{label}: {e.strerror or e} ({e.filename})") from None
        raise e


def _target(dest: str, src_is_dir: bool, src_base: str, contents: bool, what: str) -> tuple[str, str]:
    """docker cp's rules: (directory to extract into, name of the copy there; "." for the contents)."""
    ends_slash = dest.endswith("/")
    if os.path.isdir(dest):
        if contents and src_is_dir:
            return dest, "."
        return dest, src_base
    if os.path.lexists(dest) and not os.path.isdir(dest):
        if src_is_dir:
            raise UsageError(f"cannot copy a directory to a file: {what}", "give a directory as the destination")
        if ends_slash:
            raise NotFoundError(f"{what} is not a directory", "remove the trailing /")
        return os.path.dirname(dest.rstrip("/")) or "/", os.path.basename(dest)
    if ends_slash and not src_is_dir:
        raise NotFoundError(f"no such directory: {what}", "create the directory first")
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        raise NotFoundError(f"no such directory: {what.rstrip('/').rsplit('/', 1)[0] or '/'}",
                            "create the parent directory first")
    return parent, os.path.basename(dest.rstrip("/"))


def _source_base(path: str) -> tuple[str, bool]:
    """(base name, whether the contents are meant: a path ending in /.)."""
    contents = path.endswith("/.") or path == "."
    norm = os.path.normpath(path)
    return os.path.basename(norm) or "/", contents


def copy_from(env: EngineEnv, ref: str, src: str, dest: str, out: BinaryIO | None = None,
              follow: bool = False, archive: bool = False) -> None:
    """rl cp CONTAINER:SRC DEST (or a tar on ``out`` for '-'); files on the host belong to the user (with
    ``archive`` they keep the container's IDs, which are subordinate IDs on the host)."""
    with container_root(env, ref) as (record, rootfs):
        host_src = _host_path(env, record, rootfs, src, follow_last=follow or src.endswith("/") or src.endswith("/."))
        try:
            st = os.lstat(host_src)
        except OSError:
            raise NotFoundError(f"could not find the file {src} in container {record.name}",
                                "check the path with 'rl exec CONTAINER ls'") from None
        base, contents = _source_base(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        shown = owner_map(env, record)
        as_seen = shown.to_disk if shown is not None else None  # the owners the container sees
        if out is not None:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                _add_tree(tf, host_src, base if base != "/" else ".", as_seen)
            return
        target_dir, name = _target(dest, is_dir, base, contents, dest)
        owner = as_seen if archive else _root
        _copy_tar(lambda tf: _add_tree(tf, host_src, name, owner=owner), target_dir,
                  f"copying {record.name}:{src} to {dest}")


def copy_to(env: EngineEnv, ref: str, src: str, dest: str, stream: BinaryIO | None = None,
            archive: bool = False) -> None:
    """rl cp SRC CONTAINER:DEST (or a tar from ``stream`` for '-'); files belong to the container's root,
    or to the IDs in the tar (with ``archive``: the IDs the files have for rl, yours being 0)."""
    with container_root(env, ref) as (record, rootfs):
        label = f"copying to {record.name}:{dest}"
        shown = owner_map(env, record)
        if stream is not None:
            target = _host_path(env, record, rootfs, dest, follow_last=True)
            if not os.path.isdir(target):
                raise NotFoundError(f"destination {record.name}:{dest} must be a directory",
                                    "a tar on stdin is extracted into a directory")
            if shown is None:
                _extract(stream, target, label)
            else:  # the tar's owners are the container's: give them through the mount's map
                _copy_tar(lambda tf: _retag(stream, tf, shown.to_shown), target, label)
            return
        try:
            st = os.lstat(src)
        except OSError:
            raise NotFoundError(f"could not find the file {src} on the host", "check the path") from None
        base, contents = _source_base(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        follow = os.path.isdir(_host_path(env, record, rootfs, dest, follow_last=True))
        host_dest = _host_path(env, record, rootfs, dest, follow_last=follow)
        if dest.endswith("/") and not host_dest.endswith("/"):
            host_dest += "/"
        target_dir, name = _target(host_dest, is_dir, base, contents, f"{record.name}:{dest}")
        owner: Owner | None = None if archive else _root
        if shown is not None:  # owners the container sees, given through the mount's map
            inner = owner
            owner = (lambda u, g: shown.to_shown(*inner(u, g))) if inner is not None else shown.to_shown
        _copy_tar(lambda tf: _add_tree(tf, src, name, owner=owner), target_dir, label)


def _root(uid: int, gid: int) -> tuple[int, int]:
    """Root on the side the files land on: the container's (copied in), or rl's, which is you (copied out)."""
    return 0, 0


def _retag(stream: BinaryIO, tf: tarfile.TarFile, owner: Owner) -> None:
    """Copy the tar on ``stream`` into ``tf`` with every member's owner passed through ``owner``."""
    with tarfile.open(fileobj=stream, mode="r|*") as src:
        for member in src:
            member.uid, member.gid = owner(member.uid, member.gid)
            tf.addfile(member, src.extractfile(member) if member.isreg() else None)


# ---------------------------------------------------------------- commit


def _layer_tar(tf: tarfile.TarFile, changes: list[tuple[Change, str | None]]) -> None:
    """The changes as an OCI layer: files as they are, deletions as .wh.NAME, opaque dirs with .wh..wh..opq
    (and no whiteouts in them: the marker hides the lower layers' entries already)."""
    opaque: set[str] = set()
    for change, path in changes:
        rel = change.path.lstrip("/")
        if change.kind == "D":
            parent, base = os.path.split(rel)
            if parent in opaque:
                continue
            info = tarfile.TarInfo(os.path.join(parent, WHITEOUT_PREFIX + base))
            info.mode = 0o644
            tf.addfile(info)
            continue
        assert path is not None
        if os.path.basename(rel).startswith(WHITEOUT_PREFIX):
            continue
        _add(tf, path, rel)
        if os.path.isdir(path) and not os.path.islink(path) and (
                _is_opaque(path) or os.path.lexists(os.path.join(path, FUSE_OPAQUE_MARKER))):
            opaque.add(rel)
            info = tarfile.TarInfo(f"{rel}/{OPAQUE_MARKER}")
            info.mode = 0o644
            tf.addfile(info)


class _Hashing:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def commit(env: EngineEnv, ref: str, name: str = "", *, changes: tuple[str, ...] = (), message: str = "",
           author: str = "", pause: bool = True) -> Any:
    """The container's changes as a new layer over its image's; returns the new ImageRecord."""
    from rootless.engine import images
    from rootless.engine import limits as limits_glue
    from rootless.image import archive, compression
    from rootless.image import reference as refs
    from rootless.image.store import Store, now_iso

    config_changes = images.parse_changes(changes)
    names = []
    if name:
        try:
            parsed = refs.parse(name)
        except RLError as e:
            raise UsageError(f"invalid reference format: {name}", e.hint or "use REPOSITORY[:TAG]") from None
        if parsed.digest:
            raise UsageError(f"cannot commit as {name}: give a name with a tag, not a digest", "use REPOSITORY[:TAG]")
        names.append(str(parsed))
    with container_root(env, ref) as (record, rootfs):
        store = Store(env.storage)
        engine = images.ImageEngine(env.storage, env.runroot)
        base = engine.find(record.image_id)
        base_config = json.loads(store.read_blob(base.config_digest))
        tmp_dir = env.storage / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        paused = False
        if pause and record.running and not record.state.get("Paused"):
            with contextlib.suppress(RLError, OSError):
                limits_glue.pause(env, record.id)
                paused = True
        try:
            found = _changes(env, record, rootfs)
            with tempfile.TemporaryFile(dir=tmp_dir) as plain, tempfile.TemporaryFile(dir=tmp_dir) as packed:
                hashing = _Hashing(plain)
                with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
                    _layer_tar(tf, found)
                diff_id = "sha256:" + hashing.sha.hexdigest()
                plain.seek(0)
                with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
                    shutil.copyfileobj(plain, gz, 1 << 20)
                packed.seek(0)
                digest = store.put_blob_stream(packed)
                plain.seek(0)
                store.add_layer(diff_id, plain, compression.NONE, label=f"commit of {record.name}")
        finally:
            if paused:
                with contextlib.suppress(RLError, OSError):
                    limits_glue.unpause(env, record.id)

    created = now_iso()
    section = dict(base_config.get("config") or {})
    rc = record.config
    image_env = list(section.get("Env") or [])
    for item in rc.get("Env") or []:
        key = item.split("=", 1)[0]
        image_env = [e for e in image_env if e.split("=", 1)[0] != key] + [item]
    section["Env"] = image_env
    for key in ("Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal"):
        if rc.get(key) not in (None, ""):
            section[key] = rc[key]
    if rc.get("Labels"):
        section["Labels"] = {**(section.get("Labels") or {}), **rc["Labels"]}
    for key, value in config_changes.items():
        if key == "Env":
            merged = list(section.get("Env") or [])
            for item in value:
                k = item.split("=", 1)[0]
                merged = [e for e in merged if e.split("=", 1)[0] != k] + [item]
            section["Env"] = merged
        elif key in ("Labels", "ExposedPorts", "Volumes"):
            section[key] = {**(section.get(key) or {}), **value}
        else:
            section[key] = value
    cmd_text = " ".join((rc.get("Entrypoint") or []) + (rc.get("Cmd") or []))
    history: dict[str, Any] = {"created": created, "created_by": cmd_text or "rl commit"}
    if message:
        history["comment"] = message
    if author:
        history["author"] = author
    image_config = dict(base_config)
    image_config.update(created=created, config=section)
    image_config["rootfs"] = {"type": "layers", "diff_ids": [*base.diff_ids, diff_id]}
    image_config["history"] = [*(base_config.get("history") or []), history]
    if author:
        image_config["author"] = author
    else:
        image_config.pop("author", None)
    if message:
        image_config["comment"] = message
    desc = {"mediaType": compression.media_type_for(compression.GZIP), "digest": digest,
            "size": store.blob_size(digest)}
    return archive.store_image(store, image_config, [*(dict(layer) for layer in base.layers), desc], names)


__all__ = ["Change", "commit", "container_root", "copy_from", "copy_to", "diff", "export", "split_container_path"]
