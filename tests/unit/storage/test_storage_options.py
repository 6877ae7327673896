"""Building overlay mount options: layer order, short names, escaping, limits; mountinfo parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.errors import StorageError
from rootless.storage import driver as drv
from rootless.storage.overlay import MAX_LAYERS, mount_data


def test_lowerdir_lists_the_top_layer_first() -> None:
    assert drv.lowerdir_value(["l/0", "l/1", "l/2"]) == "l/2:l/1:l/0"


def test_options_escape_separators() -> None:
    assert drv.escape_option("/a,b:c\\d") == "/a\\,b\\:c\\\\d"
    opts = drv.overlay_options(["/x:y"], "up,per", "work", ["userxattr"])
    assert opts == "lowerdir=/x\\:y,upperdir=up\\,per,workdir=work,userxattr"


def test_mount_data_is_short_for_many_layers() -> None:
    names = [f"l/{i}" for i in range(MAX_LAYERS)]
    data = mount_data(names)
    assert data.startswith(f"lowerdir=l/{MAX_LAYERS - 1}:l/{MAX_LAYERS - 2}:")
    assert data.endswith(":l/0,upperdir=upper,workdir=work,userxattr")
    assert len(data) < 4096


def test_too_many_layers_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match=f"501 layers; overlayfs stacks at most {MAX_LAYERS}") as info:
        mount_data([f"l/{i}" for i in range(MAX_LAYERS + 1)])
    assert info.value.hint and "vfs" in info.value.hint


def test_options_over_a_page_are_refused() -> None:
    with pytest.raises(StorageError, match="over one page"):
        mount_data(["/" + "x" * 200 + f"/{i}" for i in range(30)])


def test_no_layers_is_refused() -> None:
    with pytest.raises(StorageError, match="at least one"):
        mount_data([])


def test_unique_layers_keeps_the_topmost_place(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert drv.unique_layers([a, b, a, c, b]) == [a, c, b]
    assert drv.unique_layers([a, b]) == [a, b]


def test_sync_layer_links(tmp_path: Path) -> None:
    layers = [tmp_path / f"layer{i}" for i in range(3)]
    for layer in layers:
        layer.mkdir()
    c = tmp_path / "c"
    c.mkdir()
    assert drv.sync_layer_links(c, layers) == ["l/0", "l/1", "l/2"]
    assert os.readlink(c / "l" / "1") == str(layers[1])
    # fewer, different layers: stale links go, wrong links are fixed
    (c / "l" / "junk").mkdir()
    assert drv.sync_layer_links(c, [layers[2], layers[0]]) == ["l/0", "l/1"]
    assert sorted(os.listdir(c / "l")) == ["0", "1"]
    assert os.readlink(c / "l" / "0") == str(layers[2])
    assert os.readlink(c / "l" / "1") == str(layers[0])


def test_prepare_upper_copies_the_top_layer_root_mode(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir(mode=0o755)
    os.chmod(layer, 0o751)
    c = tmp_path / "c"
    drv.prepare_upper(c, [layer])
    assert os.stat(c / "upper").st_mode & 0o777 == 0o751
    assert (c / "work").is_dir()
    drv.prepare_upper(c, [layer])  # again: nothing changes, no error


def test_prepare_upper_reports_a_storage_error(tmp_path: Path) -> None:
    c = tmp_path / "c"
    c.mkdir()
    (c / "work").write_text("a file")
    with pytest.raises(StorageError, match="cannot prepare"):
        drv.prepare_upper(c, [])


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /home/u/with\\040space rw - tmpfs tmpfs rw
41 22 0:36 / /home/u/store/c/merged rw shared:5 master:2 - overlay /home/u/my\\040store/c rw,lowerdir=l/1:l/0
42 22 0:37 / /home/u/store/cx rw - tmpfs tmpfs rw
"""


def test_mount_points_unescape() -> None:
    points = drv.mount_points(MOUNTINFO)
    assert points == ["/", "/home/u/with space", "/home/u/store/c/merged", "/home/u/store/cx"]


def test_mount_table_sources() -> None:
    table = drv.mount_table(MOUNTINFO)
    assert [(m.fstype, m.source) for m in table] == [
        ("ext4", "/dev/sda1"), ("tmpfs", "tmpfs"), ("overlay", "/home/u/my store/c"), ("tmpfs", "tmpfs"),
    ]
    assert table[0].device == "8:1" and table[0].root == "/"


def test_mounts_under(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drv, "mount_points", lambda mountinfo=None: ["/", "/s/c/merged", "/s/cx", "/s/c"])
    assert drv.mounts_under(Path("/s/c")) == ["/s/c/merged", "/s/c"]


def test_get_driver() -> None:
    assert [drv.get_driver(n).name for n in drv.DRIVER_NAMES] == list(drv.DRIVER_NAMES)
    with pytest.raises(StorageError, match="unknown storage driver"):
        drv.get_driver("zfs")


def test_remove_tree_fixes_modes(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "work" / "work").mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    os.chmod(root / "a" / "b", 0o000)
    os.chmod(root / "a", 0o500)
    os.chmod(root / "work" / "work", 0o000)
    drv.remove_tree(root)
    assert not root.exists()
    drv.remove_tree(root)  # gone already: fine


def test_fuse_error_line() -> None:
    from rootless.storage.fuse_overlayfs import error_line

    stderr = "unknown argument ignored: lazytime\nfuse: device not found, try 'modprobe fuse' first\n"
    assert error_line(stderr) == "fuse: device not found, try 'modprobe fuse' first"
    assert error_line("unknown argument ignored: lazytime\n") == "no error message"
    assert error_line("cannot read upper dir: Permission denied\nbye\n") == "cannot read upper dir: Permission denied"
