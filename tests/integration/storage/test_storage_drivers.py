"""One suite every storage driver must pass, run in real user namespaces as the unprivileged user.

Layers are built inside the namespace in the on-disk layer format (0/0 character device whiteouts,
``user.overlay.opaque=y`` opaque dirs), then mounted by the driver under test.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import StorageError
from rootless.runtime.syscalls import MS_BIND, SYSCALLS
from rootless.storage.driver import OPAQUE_XATTR, StorageDriver, get_driver, mount_points, mounts_under
from rootless.storage.fuse_overlayfs import PROGRAM, daemon_pids

from .conftest import UserNamespace

OWNER_UID, OWNER_GID = 1234, 2345

# layer builders (run inside the namespace)


def layer_dir(root: Path, index: int) -> Path:
    """S/layers/<64 hex>/diff, as the image store lays them out."""
    path = root / "layers" / hashlib.sha256(str(index).encode()).hexdigest() / "diff"
    path.mkdir(parents=True)
    os.chmod(path, 0o755)
    return path


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def opaque(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, OPAQUE_XATTR, b"y")
    return path


def build_image(root: Path, owners: bool) -> list[Path]:
    """Three layers exercising whiteouts, opaque dirs and every file type; bottom first."""
    l0, l1, l2 = (layer_dir(root, i) for i in range(3))
    write(l0 / "a.txt", "base")
    write(l0 / "gone.txt", "gone")
    write(l0 / "dir" / "old1", "old1")
    write(l0 / "dir" / "sub" / "deep", "deep")
    write(l0 / "keep" / "k.txt", "k")
    write(l0 / "h1", "hard")
    os.link(l0 / "h1", l0 / "h2")
    write(l0 / "suid", "#!/bin/sh\n", 0o4755)
    os.symlink("a.txt", l0 / "link")
    os.mkfifo(l0 / "fifo", 0o640)
    os.setxattr(write(l0 / "xattr.txt", "x"), "user.test", b"value")
    write(l0 / "ro" / "inside", "ro")
    os.chmod(l0 / "ro", 0o555)
    if owners:
        os.lchown(write(l0 / "owned", "owned", 0o640), OWNER_UID, OWNER_GID)
        os.mkdir(l0 / "owned-dir", 0o2750)
        os.chown(l0 / "owned-dir", OWNER_UID, OWNER_GID)
        os.chmod(l0 / "owned-dir", 0o2750)

    write(l1 / "a.txt", "layer1")
    whiteout(l1 / "gone.txt")
    write(opaque(l1 / "dir") / "new1", "new1")
    whiteout(l1 / "keep")
    write(l1 / "newdir" / "x", "x")

    write(l2 / "keep", "now a file")
    opaque(l2 / "newdir")
    return [l0, l1, l2]


def tree_sum(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything about a tree a driver could change: names, types, modes, owners, times, data, xattrs."""
    result: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data: Any = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    data = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(path)
            try:
                xattrs = sorted(
                    (n, os.getxattr(path, n, follow_symlinks=False))
                    for n in os.listxattr(path, follow_symlinks=False)
                )
            except OSError:
                xattrs = []
            result[os.path.relpath(path, root)] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_rdev,
                st.st_ino, st.st_nlink, data, tuple(xattrs),
            )
    return result


def layers_sum(layers: list[Path]) -> list[dict[str, tuple[Any, ...]]]:
    return [tree_sum(layer) for layer in layers]


def fuse_processes_under(path: Path) -> list[str]:
    """Live fuse-overlayfs processes whose arguments mention ``path``."""
    found = []
    want = os.fsencode(str(path))
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if PROGRAM.encode() in args.split(b"\0")[0] and want in args and state not in (b"Z", b"X"):
            found.append(args.replace(b"\0", b" ").decode(errors="replace"))
    return found


class Env:
    """A store-like layout in the scratch dir: S/layers/..., S/containers/<id>/storage, a target."""

    def __init__(self, ws: Path, driver_name: str) -> None:
        self.ws = ws
        self.driver: StorageDriver = get_driver(driver_name)
        self.c = ws / "containers" / ("c" * 64) / "storage"
        self.target = ws / "containers" / ("c" * 64) / "merged"


def in_ns(userns: UserNamespace, ws: Path, driver_name: str, body: Callable[[Env], Any]) -> Any:
    return userns.run(lambda: body(Env(ws, driver_name)))


# the suite


def test_merged_view(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=False)
        root = env.driver.mount(env.c, layers, env.target)
        assert root == env.target
        assert env.driver.is_mounted(root)
        assert (root / "a.txt").read_text() == "layer1"
        assert not os.path.lexists(root / "gone.txt"), "whiteout in layer 1 must hide gone.txt"
        assert sorted(os.listdir(root / "dir")) == ["new1"], "opaque dir must hide the lower content"
        assert (root / "keep").is_file() and (root / "keep").read_text() == "now a file"
        assert os.listdir(root / "newdir") == [], "opaque empty dir in layer 2 hides layer 1's x"
        assert os.readlink(root / "link") == "a.txt"
        assert (root / "link").read_text() == "layer1"
        assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
        assert stat.S_IMODE(os.lstat(root / "fifo").st_mode) == 0o640
        assert os.getxattr(root / "xattr.txt", "user.test") == b"value"
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(root / "ro").st_mode) == 0o555
        assert (root / "ro" / "inside").read_text() == "ro"
        assert (root / "dir" / "sub").exists() is False
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)

    in_ns(userns, workdir, driver_name, body)


def test_setuid_bit_survives(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=False)
        root = env.driver.mount(env.c, layers, env.target)
        assert stat.S_IMODE(os.stat(root / "suid").st_mode) == 0o4755
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)

    in_ns(userns, workdir, driver_name, body)


def test_owners_from_subordinate_ids(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    userns.require_subids()

    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=True)
        root = env.driver.mount(env.c, layers, env.target)
        st = os.lstat(root / "owned")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OWNER_UID, OWNER_GID, 0o640)
        st = os.lstat(root / "owned-dir")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OWNER_UID, OWNER_GID, 0o2750)
        # writing as root into another id's dir keeps the dir's owner
        (root / "owned-dir" / "new").write_text("n")
        assert os.lstat(root / "owned-dir").st_uid == OWNER_UID
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)
        assert not env.c.exists()

    in_ns(userns, workdir, driver_name, body)


def test_hardlinks_stay_linked(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=False)
        root = env.driver.mount(env.c, layers, env.target)
        a, b = os.lstat(root / "h1"), os.lstat(root / "h2")
        assert a.st_ino == b.st_ino, "hardlinked files must be one inode in the merged view"
        assert a.st_nlink == 2
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)

    in_ns(userns, workdir, driver_name, body)


def test_writes_never_touch_layers(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=userns.full_mapping)
        before = layers_sum(layers)
        root = env.driver.mount(env.c, layers, env.target)
        (root / "created").write_text("new")
        with open(root / "a.txt", "a") as f:
            f.write("+more")
        with open(root / "h1", "a") as f:
            f.write("+more")
        os.unlink(root / "link")
        os.unlink(root / "xattr.txt")
        os.rename(root / "suid", root / "suid2")
        os.chmod(root / "suid2", 0o755)
        shutil.move(root / "dir", root / "dir-renamed")  # EXDEV on overlay without redirect_dir: copies
        shutil.rmtree(root / "ro")
        (root / "keep").write_text("changed")
        os.mkdir(root / "newdir" / "made")
        if userns.full_mapping:
            os.chown(root / "owned", 0, 0)
        assert (root / "a.txt").read_text() == "layer1+more"
        assert sorted(os.listdir(root / "dir-renamed")) == ["new1"]
        assert not (root / "dir").exists()
        changes = env.driver.changes_dir(env.c)
        if changes is not None:
            assert (changes / "created").read_text() == "new"
            assert stat.S_ISCHR(os.lstat(changes / "link").st_mode), "deleting a lower file leaves a whiteout"
        env.driver.unmount(env.c, env.target)
        assert layers_sum(layers) == before, "the driver modified a layer"
        # the changes survive a remount
        root = env.driver.mount(env.c, layers, env.target)
        assert (root / "created").read_text() == "new"
        assert not os.path.lexists(root / "link")
        assert (root / "keep").read_text() == "changed"
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)
        assert layers_sum(layers) == before, "removing the container modified a layer"

    in_ns(userns, workdir, driver_name, body)


def test_unmount_and_remove_leave_nothing(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=userns.full_mapping)
        root = env.driver.mount(env.c, layers, env.target)
        (root / "some-dir").mkdir()
        (root / "some-dir" / "f").write_text("f")
        os.chmod(root / "some-dir", 0o000)
        with pytest.raises(StorageError, match="still mounted"):
            env.driver.remove(env.c)  # the target is outside c: the driver still sees the mount
        assert (root / "a.txt").read_text() == "layer1"
        env.driver.unmount(env.c, env.target)
        assert not env.driver.is_mounted(env.target)
        assert str(env.target) not in mount_points()
        env.driver.unmount(env.c, env.target)  # twice: no-op
        env.driver.remove(env.c)
        assert not env.c.exists()
        assert mounts_under(env.ws) == []
        deadline = time.monotonic() + 2
        while fuse_processes_under(env.ws) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fuse_processes_under(env.ws) == []
        assert not os.path.ismount(env.target)
        assert os.listdir(env.target) == []

    in_ns(userns, workdir, driver_name, body)


def test_remove_refuses_while_mounted_inside(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=False)
        target = env.c / "merged"
        env.driver.mount(env.c, layers, target)
        with pytest.raises(StorageError, match="still mounted"):
            env.driver.remove(env.c)
        env.driver.unmount(env.c, target)
        env.driver.remove(env.c)
        assert not env.c.exists()

    in_ns(userns, workdir, driver_name, body)


def test_mount_is_idempotent(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        layers = build_image(env.ws, owners=False)
        first = env.driver.mount(env.c, layers, env.target)
        (first / "marker").write_text("m")
        second = env.driver.mount(env.c, layers, env.target)
        assert first == second
        assert mount_points().count(str(env.target)) == 1
        assert (second / "marker").read_text() == "m"
        if driver_name == "fuse-overlayfs":
            assert len(daemon_pids(env.target)) == 1
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)

    in_ns(userns, workdir, driver_name, body)


def test_120_layers(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    count = 120

    def body(env: Env) -> float:
        # deep store path: absolute lowerdirs would need 15+ KiB of mount options
        env.ws = env.ws / ("d" * 100)
        layers = []
        for i in range(count):
            layer = layer_dir(env.ws, i)
            write(layer / f"f{i}", str(i))
            write(layer / "common", str(i))
            if i and i % 10 == 0:
                whiteout(layer / f"f{i - 1}")
            layers.append(layer)
        assert sum(len(str(p)) + 1 for p in layers) > 4096
        start = time.monotonic()
        root = env.driver.mount(env.c, layers, env.target)
        took = time.monotonic() - start
        names = set(os.listdir(root))
        assert (root / "common").read_text() == str(count - 1)
        deleted = {f"f{i - 1}" for i in range(10, count, 10)}
        expected = {f"f{i}" for i in range(count)} - deleted
        assert names - {"common"} == expected
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)
        return took

    took = in_ns(userns, workdir, driver_name, body)
    assert took < 60


def test_repeated_layer(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        l0, l1 = layer_dir(env.ws, 0), layer_dir(env.ws, 1)
        write(l0 / "x", "0")
        write(l1 / "x", "1")
        write(l1 / "y", "1")
        root = env.driver.mount(env.c, [l0, l1, l0], env.target)  # same empty layer twice is common
        assert (root / "x").read_text() == "0"
        assert (root / "y").read_text() == "1"
        env.driver.unmount(env.c, env.target)
        env.driver.remove(env.c)

    in_ns(userns, workdir, driver_name, body)


def test_missing_layer_is_a_storage_error(userns: UserNamespace, workdir: Path, driver_name: str) -> None:
    def body(env: Env) -> None:
        with pytest.raises(StorageError, match="missing"):
            env.driver.mount(env.c, [env.ws / "nope"], env.target)
        assert mounts_under(env.ws) == []

    in_ns(userns, workdir, driver_name, body)


def test_overlay_too_many_layers(userns: UserNamespace, workdir: Path) -> None:
    def body(ws: Path) -> None:
        layers = []
        for i in range(501):
            path = ws / "layers" / str(i)
            path.mkdir(parents=True)
            layers.append(path)
        driver = get_driver("overlay")
        with pytest.raises(StorageError, match="at most 500"):
            driver.mount(ws / "c", layers, ws / "t")
        assert not (ws / "c").exists()

    userns.run(body, workdir)


def test_fuse_failure_is_one_line(userns: UserNamespace, workdir: Path) -> None:
    if shutil.which(PROGRAM) is None:
        pytest.skip("fuse-overlayfs is not installed")

    def body(ws: Path) -> str:
        layer = ws / "l"
        layer.mkdir()
        target = ws / "t"
        target.mkdir()
        c = ws / "c"
        driver = get_driver("fuse-overlayfs")
        # In this mount namespace only: /dev/fuse becomes an ordinary file, so the FUSE mount fails.
        fake = ws / "fake-fuse"
        fake.write_text("")
        SYSCALLS.mount(str(fake), "/dev/fuse", None, MS_BIND)
        with pytest.raises(StorageError) as info:
            driver.mount(c, [layer], target)
        assert "\n" not in info.value.line()
        assert not driver.is_mounted(target)
        assert daemon_pids(target) == []
        return info.value.line()

    line = userns.run(body, workdir)
    assert "fuse-overlayfs could not mount" in line


def test_ns_root_maps_back(userns: UserNamespace, tmp_path: Path) -> None:
    """The harness itself: root in the namespace, files land as the test user outside."""

    def body(path: Path) -> tuple[int, int]:
        path.write_text("x")
        try:
            os.mknod(path.with_suffix(".wh"), stat.S_IFCHR, os.makedev(0, 0))
        except OSError as exc:
            assert exc.errno != errno.EPERM, "whiteouts must be creatable in the namespace"
            raise
        return os.getuid(), os.getgid()

    assert userns.run(body, tmp_path / "f") == (0, 0)
    assert os.stat(tmp_path / "f").st_uid == os.getuid()
