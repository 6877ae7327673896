"""vfs layer flattening on plain directories, as an ordinary user (no namespace, owners not kept)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rootless.storage.driver import OPAQUE_XATTR
from rootless.storage.vfs import flatten, is_whiteout


def make(path: Path, text: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def whiteout(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))  # allowed unprivileged since Linux 5.8


def opaque(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, OPAQUE_XATTR, b"y")
    return path


def listing(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    result = [tmp_path / f"layer{i}" for i in range(3)]
    for layer in result:
        layer.mkdir()
    return result


def test_whiteouts_delete_files_and_dirs(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, _ = layers
    make(l0 / "a")
    make(l0 / "d" / "x")
    make(l0 / "d" / "y")
    make(l0 / "e" / "deep" / "z")
    whiteout(l1 / "a")
    whiteout(l1 / "d" / "x")
    whiteout(l1 / "e")
    whiteout(l1 / "never-existed")
    out = tmp_path / "rootfs"
    flatten([l0, l1], out, owners=False)
    assert listing(out) == ["d", "d/y"]


def test_opaque_dir_replaces_lower_content(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, l2 = layers
    make(l0 / "d" / "old")
    make(l0 / "d" / "sub" / "old2")
    make(opaque(l1 / "d") / "new")
    opaque(l2 / "d" / "sub")  # opaque dir where the lower no longer has one: just a new empty dir
    out = tmp_path / "rootfs"
    flatten(layers, out, owners=False)
    assert listing(out) == ["d", "d/new", "d/sub"]
    assert OPAQUE_XATTR not in os.listxattr(out / "d"), "overlay markers are not copied"


def test_opaque_root(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, _ = layers
    make(l0 / "a")
    make(l1 / "b")
    os.setxattr(l1, OPAQUE_XATTR, b"y")
    out = tmp_path / "rootfs"
    flatten([l0, l1], out, owners=False)
    assert listing(out) == ["b"]


def test_type_changes_between_layers(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, l2 = layers
    make(l0 / "f-then-dir")
    make(l0 / "dir-then-f" / "inner")
    os.symlink("target", l0 / "link-then-f")
    make(l1 / "f-then-dir" / "inside")
    make(l1 / "dir-then-f", "file now")
    make(l1 / "link-then-f", "plain")
    whiteout(l2 / "f-then-dir" / "inside")
    out = tmp_path / "rootfs"
    flatten(layers, out, owners=False)
    assert (out / "f-then-dir").is_dir() and os.listdir(out / "f-then-dir") == []
    assert (out / "dir-then-f").read_text() == "file now"
    assert not (out / "link-then-f").is_symlink()


def test_file_kinds_and_attributes(tmp_path: Path, layers: list[Path]) -> None:
    l0 = layers[0]
    make(l0 / "suid", "#!", 0o4755)
    make(l0 / "h1", "hard")
    os.link(l0 / "h1", l0 / "h2")
    os.symlink("suid", l0 / "sym")
    os.mkfifo(l0 / "fifo")
    os.chmod(l0 / "fifo", 0o620)
    os.setxattr(make(l0 / "x"), "user.keep", b"1")
    os.setxattr(l0 / "x", "user.overlay.redirect", b"/elsewhere")
    make(l0 / "ro" / "f")
    os.chmod(l0 / "ro", 0o555)
    os.utime(l0 / "suid", ns=(1_000_000_000, 2_000_000_123))
    os.utime(l0 / "sym", ns=(1_000_000_000, 3_000_000_000), follow_symlinks=False)
    os.utime(l0 / "ro", ns=(1_000_000_000, 4_000_000_000))
    out = tmp_path / "rootfs"
    copier = flatten([l0], out, owners=False)
    assert stat.S_IMODE(os.stat(out / "suid").st_mode) == 0o4755
    assert os.stat(out / "suid").st_mtime_ns == 2_000_000_123
    assert os.lstat(out / "sym").st_mtime_ns == 3_000_000_000
    assert os.readlink(out / "sym") == "suid"
    assert os.stat(out / "h1").st_ino == os.stat(out / "h2").st_ino
    assert os.stat(out / "h1").st_ino != os.stat(l0 / "h1").st_ino, "a copy, never a link into the layer"
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(out / "fifo").st_mode) == 0o620
    assert os.getxattr(out / "x", "user.keep") == b"1"
    assert "user.overlay.redirect" not in os.listxattr(out / "x")
    assert stat.S_IMODE(os.stat(out / "ro").st_mode) == 0o555
    assert os.stat(out / "ro").st_mtime_ns == 4_000_000_000
    assert copier.files == 4 and copier.bytes == len("#!") + len("hard") + 0 + 0


def test_read_only_dir_from_a_lower_layer_takes_new_entries(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, _ = layers
    make(l0 / "ro" / "a")
    os.chmod(l0 / "ro", 0o555)
    make(l1 / "ro" / "b")
    os.chmod(l1 / "ro", 0o555)
    out = tmp_path / "rootfs"
    flatten([l0, l1], out, owners=False)
    assert sorted(os.listdir(out / "ro")) == ["a", "b"]
    assert stat.S_IMODE(os.stat(out / "ro").st_mode) == 0o555


def test_upper_layer_file_data_wins(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, _ = layers
    make(l0 / "f", "x" * 100_000)
    make(l1 / "f", "short", 0o600)
    out = tmp_path / "rootfs"
    flatten([l0, l1], out, owners=False)
    assert (out / "f").read_text() == "short"
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o600


def test_layers_are_not_modified(tmp_path: Path, layers: list[Path]) -> None:
    l0, l1, _ = layers
    make(l0 / "a", "a")
    whiteout(l1 / "a")
    before = [(p, os.lstat(p)) for layer in (l0, l1) for p in layer.rglob("*")]
    flatten([l0, l1], tmp_path / "rootfs", owners=False)
    after = [(p, os.lstat(p)) for layer in (l0, l1) for p in layer.rglob("*")]
    assert [(p, s.st_ctime_ns, s.st_mtime_ns) for p, s in before] == [
        (p, s.st_ctime_ns, s.st_mtime_ns) for p, s in after
    ]
    assert is_whiteout(os.lstat(l1 / "a"))
