"""fuse-overlayfs, run by root in rl's user namespace: overlay semantics without kernel support.

Run inside the namespace, fuse-overlayfs needs no uidmapping/gidmapping options to show the image's
owners to the namespace (it maps ids already) and no squash_to_root (that is for users without
subordinate ids). A container in a user namespace nested in rl's (``--userns=keep-id``) would see
those owners shifted: ``set_owner_map`` keeps an ``OwnerMap`` in the container dir, and every mount
of it passes the map as uidmapping/gidmapping options.

It is started with the container dir as working directory and short relative layer names
(``l/<n>``), like containers/storage runs its mount_program from the driver home; it opens the
layers before it daemonizes. The daemon serves the mount until it is unmounted, then exits:
``unmount`` waits for it and kills it if it lingers, so no process is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from rootless.errors import HostError, StorageError
from rootless.executables import which
from rootless.runtime.syscalls import MNT_DETACH
from rootless.storage.driver import (
    UPPER_DIR,
    WORK_DIR,
    OwnerMap,
    StorageDriver,
    check_layers,
    escape_option,
    mount_points,
    overlay_options,
    prepare_upper,
    sync_layer_links,
    unique_layers,
)

PROGRAM = "fuse-overlayfs"
OWNERS_FILE = "owners.json"
MOUNT_TIMEOUT = 60.0
EXIT_TIMEOUT = 5.0

# Lines fuse-overlayfs prints that are not errors.
_NOISE = ("unknown argument ignored",)


def find_program() -> str:
    path = which(PROGRAM)
    if path is None:
        raise HostError(
            "fuse-overlayfs is not installed",
            hint="ask the admin to install it (Debian/Ubuntu: apt install fuse-overlayfs), or use --storage-driver vfs",
        )
    return path


def mapping_value(lines: Sequence[tuple[int, int, int]]) -> str:
    """One uidmapping/gidmapping value: ``DISK:SHOWN:COUNT``, triples joined by ``:``."""
    return ":".join(f"{disk}:{shown}:{count}" for disk, shown, count in lines)


def owner_options(owners: OwnerMap | None) -> list[str]:
    """The uidmapping/gidmapping options that show ``owners``; none without a map.

    fuse-overlayfs reads each triple as (id on disk, id it shows, count): stat shows a file owned
    by disk id D as SHOWN + (D - DISK), and a file created by (or chowned to) SHOWN + k is stored
    as DISK + k (main.c ``find_mapping``; the man page's example maps its own namespace's lines).
    """
    if owners is None:
        return []
    return [f"uidmapping={mapping_value(owners.uids)}", f"gidmapping={mapping_value(owners.gids)}"]


def read_owner_map(c: Path) -> OwnerMap | None:
    """The owner map kept in ``c``, or None when there is none."""
    try:
        with open(c / OWNERS_FILE, encoding="utf-8") as f:
            data = json.load(f)
        return OwnerMap(tuple(tuple(line) for line in data["uids"]), tuple(tuple(line) for line in data["gids"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"cannot read the owner map {c / OWNERS_FILE}: {exc}",
                           hint="remove the container and create it again") from exc


def write_owner_map(c: Path, owners: OwnerMap) -> None:
    path = c / OWNERS_FILE
    tmp = c / f".{OWNERS_FILE}.tmp"
    try:
        c.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"uids": owners.uids, "gids": owners.gids}, f)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write the owner map {path}: {exc.strerror}") from exc


def error_line(stderr: str) -> str:
    """The most telling line of fuse-overlayfs's stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(_NOISE)]
    if not lines:
        return "no error message"
    for line in reversed(lines):
        if "error" in line.lower() or "fuse:" in line or "cannot" in line.lower():
            return line
    return lines[-1]


def _hint(message: str) -> str:
    lowered = message.lower()
    if "/dev/fuse" in lowered:
        return "ask the admin to make /dev/fuse usable (mode 0666; see helpers/enable-devices.sh)"
    if "permission denied" in lowered or "operation not permitted" in lowered:
        return "run it inside rl's user namespace, or use --storage-driver vfs"
    return "use --storage-driver vfs if fuse-overlayfs cannot work here"


def _daemons() -> Iterator[tuple[int, list[bytes]]]:
    """Live fuse-overlayfs processes and their arguments."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if len(args) >= 2 and os.path.basename(args[0]) == PROGRAM.encode() and not _is_zombie(int(name)):
            yield int(name), args


def all_daemons() -> list[int]:
    return [pid for pid, _ in _daemons()]


def daemon_pids(target: Path) -> list[int]:
    """fuse-overlayfs processes serving ``target`` (the mount point is their last argument)."""
    want = os.fsencode(os.path.abspath(target))
    return [pid for pid, args in _daemons() if args[-1] == want]


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    # pid (comm) state ...: comm may hold spaces and parentheses
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] in (b"Z", b"X")


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
        if done:
            return True
    return not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)


def wait_gone(pids: Sequence[int], timeout: float = EXIT_TIMEOUT) -> list[int]:
    """Wait until the processes exit; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    delay = 0.001
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return alive


class FuseOverlayfsDriver(StorageDriver):
    name = "fuse-overlayfs"
    maps_owners = True

    def prepare(self, c: Path, layers: Sequence[Path]) -> None:
        layers = unique_layers(layers)
        check_layers(layers)
        prepare_upper(c, layers)
        sync_layer_links(c, layers)

    def mount(self, c: Path, layers: Sequence[Path], target: Path) -> Path:
        target = Path(os.path.abspath(target))
        if self.is_mounted(target):
            return target
        program = find_program()
        layers = unique_layers(layers)
        check_layers(layers)
        if not layers:
            raise StorageError("fuse-overlayfs needs at least one lower layer")
        prepare_upper(c, layers)
        options = self.options(c, layers)
        target.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(
                [program, "-o", options, str(target)],
                cwd=c,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=MOUNT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            self._cleanup(target)
            raise StorageError(f"fuse-overlayfs did not mount {target} within {MOUNT_TIMEOUT:.0f}s") from exc
        except OSError as exc:
            raise StorageError(f"cannot run {program}: {exc.strerror}") from exc
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode != 0 or not self.is_mounted(target):
            self._cleanup(target)
            line = error_line(stderr)
            raise StorageError(
                f"fuse-overlayfs could not mount {target} (exit {proc.returncode}): {line}", hint=_hint(line)
            )
        return target

    def options(self, c: Path, layers: Sequence[Path]) -> str:
        """The -o value that mounts ``c`` over ``layers`` (unique, bottom first), with ``c``'s owner map if any."""
        # Absolute upper and work dirs (no page limit here) let remove() find a daemon still using c.
        return overlay_options(sync_layer_links(c, layers), *self._upper_work(c), owner_options(read_owner_map(c)))

    def set_owner_map(self, c: Path, owners: OwnerMap) -> None:
        write_owner_map(c, owners)

    def owner_map(self, c: Path) -> OwnerMap | None:
        return read_owner_map(c)

    def unmount(self, c: Path, target: Path) -> None:
        target = Path(os.path.abspath(target))
        pids = daemon_pids(target)
        path = os.path.realpath(target)
        while path in mount_points():
            try:
                self.sys.umount(path, 0)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    self.sys.umount(path, MNT_DETACH)
                elif exc.errno == errno.EPERM:
                    self._fusermount(path)
                elif exc.errno == errno.EINVAL and path not in mount_points():
                    break
                else:
                    raise StorageError(f"cannot unmount {path}: {exc.strerror}") from exc
        self._reap(pids)

    def changes_dir(self, c: Path) -> Path | None:
        return c / UPPER_DIR

    def mounted_from(self, c: Path) -> list[str]:
        busy = super().mounted_from(c)
        upper, _ = self._upper_work(c)
        want = f"upperdir={escape_option(upper)},".encode()
        for pid in all_daemons():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
                if any(want in arg for arg in args):
                    busy.append(f"fuse-overlayfs (pid {pid})")
        return busy

    @staticmethod
    def _upper_work(c: Path) -> tuple[str, str]:
        real = os.path.realpath(c)
        return os.path.join(real, UPPER_DIR), os.path.join(real, WORK_DIR)

    def _fusermount(self, path: str) -> None:
        tool = which("fusermount3") or which("fusermount")
        if tool is None:
            raise StorageError(f"cannot unmount {path}: not permitted and fusermount3 is not installed")
        proc = subprocess.run([tool, "-u", path], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StorageError(f"cannot unmount {path}: {error_line(proc.stderr)}")

    def _reap(self, pids: Sequence[int]) -> None:
        alive = wait_gone(pids)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not alive:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            alive = wait_gone(alive, 1.0)
        if alive:
            raise StorageError(f"fuse-overlayfs (pid {alive[0]}) did not exit after unmount")

    def _cleanup(self, target: Path) -> None:
        """After a failed mount: no half mount, no daemon."""
        pids = daemon_pids(target)
        with contextlib.suppress(OSError):
            if self.is_mounted(target):
                self.sys.umount(str(target), MNT_DETACH)
        self._reap(pids)
