"""Named volumes: directories under S/volumes/<name>/_data with docker's metadata beside them.

    S/volumes/<name>/volume.json   {"Name", "Driver", "CreatedAt", "Labels", "Options", "Scope",
                                    "Anonymous", "CopiedUp"}
    S/volumes/<name>/_data         what the container sees

``-v NAME:/path`` creates the volume on first use and, as docker does, copies what the image has at
/path into it while the volume is new and empty (once: ``CopiedUp`` records it). Anonymous volumes
(``-v /path``) get a 64-hex name and are removed by ``rm -v``. The files belong to the container's
IDs, so removal happens inside rl's user namespace.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from rootless.errors import ConflictError, NotFoundError, RLError, UsageError
from rootless.state import atomic, locks
from rootless.state.containers import ContainerStore, new_id, now_rfc3339

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
META = "volume.json"


class VolumeStore:
    def __init__(self, storage: Path) -> None:
        self.storage = Path(storage)
        self.dir = self.storage / "volumes"

    def path(self, name: str) -> Path:
        return self.dir / name

    def data(self, name: str) -> Path:
        return self.dir / name / "_data"

    def _lock(self) -> locks.FileLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return locks.exclusive(self.dir / ".lock", what="the volume list")

    def _meta(self, name: str) -> dict[str, Any] | None:
        if not self.data(name).is_dir():
            return None
        meta = atomic.read_json(self.path(name) / META, default=None, what="volume metadata") or {}
        return {
            "CreatedAt": meta.get("CreatedAt") or now_rfc3339(),
            "Driver": "local",
            "Labels": meta.get("Labels") or {},
            "Mountpoint": str(self.data(name)),
            "Name": name,
            "Options": meta.get("Options") or {},
            "Scope": "local",
            "Anonymous": bool(meta.get("Anonymous")),
            "CopiedUp": bool(meta.get("CopiedUp")),
        }

    def _save(self, meta: dict[str, Any]) -> None:
        keep = {k: v for k, v in meta.items() if k != "Mountpoint"}
        atomic.atomic_write_json(self.path(meta["Name"]) / META, keep, durable=False)

    def create(self, name: str = "", labels: dict[str, str] | None = None, driver: str = "local",
               options: dict[str, str] | None = None, anonymous: bool = False) -> tuple[dict[str, Any], bool]:
        """(the volume, whether it was created now). An existing name is returned as is (docker)."""
        if driver not in ("", "local"):
            raise UsageError(f"volume driver {driver!r} is not supported", "use the local driver")
        name = name or new_id()
        if not NAME_RE.match(name):
            raise UsageError(f"invalid volume name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                             "choose another name")
        with self._lock():
            existing = self._meta(name)
            if existing is not None:
                return existing, False
            self.data(name).mkdir(parents=True, exist_ok=True)
            meta = {"Name": name, "Driver": "local", "CreatedAt": now_rfc3339(), "Labels": dict(labels or {}),
                    "Options": dict(options or {}), "Scope": "local", "Anonymous": anonymous, "CopiedUp": False}
            self._save(meta)
        return self._meta(name) or meta, True

    def get(self, name: str) -> dict[str, Any]:
        meta = self._meta(name) if NAME_RE.match(name) else None
        if meta is None:
            raise NotFoundError(f"no such volume: {name}", "list volumes with 'rl volume ls'")
        return meta

    def exists(self, name: str) -> bool:
        return NAME_RE.match(name) is not None and self._meta(name) is not None

    def all(self) -> list[dict[str, Any]]:
        try:
            names = sorted(e.name for e in os.scandir(self.dir) if e.is_dir())
        except FileNotFoundError:
            return []
        return [m for m in (self._meta(n) for n in names) if m is not None]

    def users(self, name: str, store: ContainerStore, exclude: str = "") -> list[str]:
        """IDs of the containers that mount the volume."""
        ids = []
        for record in store.list():
            if record.id == exclude:
                continue
            for m in record.mounts:
                if m.get("Type") == "volume" and (m.get("Name") or m.get("Source")) == name:
                    ids.append(record.id)
                    break
        return ids

    def remove(self, name: str, force: bool = False, store: ContainerStore | None = None, exclude: str = "",
               env: Any = None) -> None:
        self.get(name)
        store = store or ContainerStore(self.storage)
        users = self.users(name, store, exclude)
        if users:
            if not force or env is None:
                raise ConflictError(f"remove {name}: volume is in use - [{', '.join(u[:12] for u in users)}]",
                                    "remove those containers first (rl rm), or use --force")
            from rootless.engine import containers as lifecycle

            for cid in users:
                with contextlib.suppress(RLError):
                    lifecycle.remove(env, cid, force=True)
        _remove_tree(self.path(name))

    def prune(self, store: ContainerStore | None = None) -> list[str]:
        store = store or ContainerStore(self.storage)
        used = set()
        for record in store.list():
            for m in record.mounts:
                if m.get("Type") == "volume":
                    used.add(m.get("Name") or m.get("Source"))
        removed = []
        for meta in self.all():
            if meta["Name"] not in used:
                _remove_tree(self.path(meta["Name"]))
                removed.append(meta["Name"])
        return removed

    def copy_up(self, name: str, source: Path) -> bool:
        """Copy ``source`` (the image's content at the mount point) into a new, empty volume; once."""
        with self._lock():
            meta = self.get(name)
            if meta["CopiedUp"]:
                return False
            data = self.data(name)
            meta["CopiedUp"] = True
            if source.is_dir() and not any(data.iterdir()):
                import subprocess

                proc = subprocess.run(["cp", "-a", "--", f"{source}/.", f"{data}/"], capture_output=True, text=True,
                                      check=False)
                if proc.returncode != 0:
                    raise RLError(f"copying the image's {source.name or '/'} into volume {name} failed: "
                                  f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
                st = source.stat()
                with contextlib.suppress(OSError):
                    os.chown(data, st.st_uid, st.st_gid)
                    os.chmod(data, st.st_mode & 0o7777)
            self._save(meta)
            return True


def _remove_tree(path: Path) -> None:
    from rootless.storage.driver import remove_tree

    try:
        remove_tree(path)
    except OSError as e:
        raise RLError(f"removing {path} failed: {e.strerror or e}",
                      "its files may belong to container IDs: rl removes them inside its user namespace") from None


def image_volume_mounts(image_volumes: Any, mounts: list[Any]) -> list[Any]:
    """Anonymous volumes for the image's VOLUME entries that no -v/--mount/--tmpfs covers (docker)."""
    import posixpath

    from rootless.engine.runopts import Mount

    taken = {posixpath.normpath(m.destination) for m in mounts}
    out = []
    for dest in image_volumes or ():
        clean = posixpath.normpath("/" + str(dest))
        if clean.startswith("//"):
            clean = clean[1:]
        if clean == "/" or clean in taken:
            continue
        taken.add(clean)
        out.append(Mount("volume", clean))
    return out


def volume_dirs(env: Any, opts: Any, rootfs: Path, store: ContainerStore, cid: str) -> dict[str, str]:
    """For rl run/create (inside the user namespace, rootfs mounted): destination -> volume directory.
    Creates named volumes on first use and anonymous ones, copies the image's content up, and notes the
    volume names in the record."""
    from rootless.runtime.securejoin import secure_join

    volumes = VolumeStore(env.storage)
    result: dict[str, str] = {}
    names: dict[str, str] = {}
    anonymous: list[str] = []
    for m in opts.mounts:
        if m.type != "volume":
            continue
        meta, created = volumes.create(m.source, anonymous=not m.source)
        name = meta["Name"]
        if not m.source:
            anonymous.append(name)
        names[m.destination] = name
        if (created or not meta["CopiedUp"]) and "nocopy" not in m.options:
            volumes.copy_up(name, Path(secure_join(str(rootfs), m.destination)))
        result[m.destination] = str(volumes.data(name))
    if names:
        with store.update(cid) as rec:
            for mount in rec.mounts:
                if mount.get("Type") == "volume" and mount.get("Destination") in names:
                    mount["Name"] = names[mount["Destination"]]
                    mount["Source"] = names[mount["Destination"]]
            if anonymous:
                rec.extra["anonymous_volumes"] = anonymous
    return result
