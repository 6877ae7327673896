"""Layer extraction: a rich tar comes out right, whiteouts take the overlay format, and hostile
tars never write outside the destination."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from rootless.errors import ImageError
from rootless.image import compression
from rootless.image.unpack import OPAQUE_XATTR, clean_name, remove_tree, unpack
from tests.unit.image.hostile import HOSTILE, E, gz, sha256, tar_of


def can_chown(tmp: Path, uid: int = 4321) -> bool:
    """Whether this process may give files away (root, or a user namespace mapping ``uid``)."""
    probe = tmp / ".chown-probe"
    probe.write_bytes(b"")
    try:
        os.chown(probe, uid, uid)
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def run(tar: bytes, dest: Path, **kw: object) -> object:
    dest.mkdir(exist_ok=True)
    return unpack(io.BytesIO(tar), dest, label="layer sha256:0123456789ab of test", **kw)  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every path below ``root`` with its mode and content (or link target)."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = (st.st_mode, os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = (st.st_mode, p.read_bytes())
            else:
                out[str(p)] = (st.st_mode, "")
    return out


def user_xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


# ---- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "clean"),
    [("a/b", "a/b"), ("/a//b/", "a/b"), ("./a/./b", "a/b"), ("a/../b", "b"), (".", ""), ("/", ""), ("a/..", "")],
)
def test_clean_name(name: str, clean: str) -> None:
    assert clean_name(name) == clean


# ---- a rich layer ----------------------------------------------------------------------------------


def rich_tar() -> bytes:
    long_dir = "d" * 120
    return tar_of(
        [
            E("./", kind="dir", mode=0o755, mtime=1_500_000_000),
            E("etc/", kind="dir"),
            E("etc/hostname", data=b"box\n", mode=0o644, mtime=1_234_567_890),
            E("bin/", kind="dir"),
            E("bin/busybox", data=b"\x7fELF" + b"\0" * 5000, mode=0o755),
            E("bin/sh", kind="hardlink", link="bin/busybox"),
            E("bin/ls", kind="symlink", link="busybox"),
            E("bin/abs", kind="symlink", link="/bin/busybox"),
            E("bin/dangling", kind="symlink", link="../../../../nowhere"),
            E("usr/bin/su", data=b"su", mode=0o4755),
            E("usr/bin/wall", data=b"wall", mode=0o2755),
            E("ro/", kind="dir", mode=0o555, mtime=1_400_000_000),
            E("ro/file", data=b"inside a read-only dir", mode=0o444),
            E("ro/sub/", kind="dir", mode=0o500),
            E("ro/sub/deep", data=b"deep", mode=0o400),
            E("run/fifo", kind="fifo", mode=0o620),
            E(f"{long_dir}/{long_dir}/{'f' * 200}", data=b"long"),
            E("unicode/caf\u00e9-\u65e5\u672c", data=b"utf8"),
            E("xattr", data=b"x", pax={"SCHILY.xattr.user.comment": "hello", "SCHILY.xattr.trusted.x": "no"}),
            E("empty", data=b""),
        ]
    )


def test_rich_layer(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    tar = rich_tar()
    stats = run(tar, dest)
    assert stats.diff_id == sha256(tar)  # type: ignore[attr-defined]
    assert stats.size == len(tar)  # type: ignore[attr-defined]
    assert (dest / "etc/hostname").read_bytes() == b"box\n"
    assert os.stat(dest / "etc/hostname").st_mtime == 1_234_567_890
    busybox = os.stat(dest / "bin/busybox")
    assert os.stat(dest / "bin/sh").st_ino == busybox.st_ino
    assert stat.S_IMODE(busybox.st_mode) == 0o755
    assert os.readlink(dest / "bin/ls") == "busybox"
    assert os.readlink(dest / "bin/abs") == "/bin/busybox"
    assert os.readlink(dest / "bin/dangling") == "../../../../nowhere"
    assert stat.S_IMODE(os.stat(dest / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "usr/bin/wall").st_mode) == 0o2755
    ro = os.stat(dest / "ro")
    assert stat.S_IMODE(ro.st_mode) == 0o555
    assert ro.st_mtime == 1_400_000_000  # applied after its contents
    assert stat.S_IMODE(os.stat(dest / "ro/sub").st_mode) == 0o500
    assert (dest / "ro/file").read_bytes() == b"inside a read-only dir"
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    assert stat.S_IMODE(os.lstat(dest / "run/fifo").st_mode) == 0o620
    long_dir = "d" * 120
    assert (dest / long_dir / long_dir / ("f" * 200)).read_bytes() == b"long"
    assert (dest / "unicode/caf\u00e9-\u65e5\u672c").read_bytes() == b"utf8"
    assert (dest / "empty").read_bytes() == b""
    assert os.stat(dest).st_mtime == 1_500_000_000
    if user_xattrs_supported(tmp_path):
        assert os.getxattr(dest / "xattr", "user.comment") == b"hello"
    assert any("trusted.x" in s for s in stats.skipped_xattrs)  # type: ignore[attr-defined]
    # The read-only tree can be removed again.
    remove_tree(dest)
    assert not dest.exists()


def test_ownership_kept_or_flattened(tmp_path: Path) -> None:
    tar = tar_of([E("mine", data=b"1", uid=os.geteuid(), gid=os.getegid()), E("theirs", data=b"2", uid=4321, gid=4321)])
    stats = run(tar, tmp_path / "dest")
    theirs = os.lstat(tmp_path / "dest/theirs")
    if can_chown(tmp_path):
        assert (theirs.st_uid, theirs.st_gid) == (4321, 4321)
        assert stats.flattened is False  # type: ignore[attr-defined]
    else:
        # An ordinary user (or a namespace mapping one id) cannot give files away: they stay ours
        # and the layer says so.
        assert theirs.st_uid == os.geteuid()
        assert stats.flattened is True  # type: ignore[attr-defined]


def test_setuid_survives_chown(tmp_path: Path) -> None:
    stats = run(tar_of([E("suid", data=b"s", mode=0o6755, uid=0, gid=0)]), tmp_path / "dest")
    assert stat.S_IMODE(os.stat(tmp_path / "dest/suid").st_mode) == 0o6755
    assert stats is not None


def test_replacements_follow_tar_semantics(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    tar = tar_of(
        [
            E("a/", kind="dir"),
            E("a/inner", data=b"old"),
            E("a", data=b"file replaces dir"),
            E("b", data=b"file"),
            E("b/", kind="dir"),
            E("b/x", data=b"dir replaces file"),
            E("c", kind="symlink", link="/etc"),
            E("c", data=b"file replaces symlink"),
            E("d", data=b"one"),
            E("d", data=b"two"),
            E("ro/", kind="dir", mode=0o555),
            E("ro/f", data=b"f"),
            E("ro", kind="symlink", link="target"),
        ]
    )
    run(tar, dest)
    assert (dest / "a").read_bytes() == b"file replaces dir"
    assert (dest / "b/x").read_bytes() == b"dir replaces file"
    assert not (dest / "c").is_symlink() and (dest / "c").read_bytes() == b"file replaces symlink"
    assert (dest / "d").read_bytes() == b"two"
    assert os.readlink(dest / "ro") == "target"


def test_hardlink_to_earlier_file_only(tmp_path: Path) -> None:
    tar = tar_of([E("later", kind="hardlink", link="first"), E("first", data=b"1")])
    with pytest.raises(ImageError, match="not in the layer"):
        run(tar, tmp_path / "dest")


# ---- whiteouts ---------------------------------------------------------------------------------------


def test_whiteouts_become_overlay_format(tmp_path: Path) -> None:
    if not user_xattrs_supported(tmp_path):
        pytest.skip("no user xattrs on this filesystem")
    dest = tmp_path / "dest"
    tar = tar_of(
        [
            E("etc/", kind="dir"),
            E("etc/.wh.motd"),
            E("var/", kind="dir", mode=0o555),
            E("var/.wh..wh..opq"),
            E("var/kept", data=b"this layer's own"),
            E(".wh.gone-dir"),
            E("same", data=b"mine"),
            E(".wh.same"),
            E("x/.wh..wh.plnk"),
        ]
    )
    stats = run(tar, dest)
    wh = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(dest / "gone-dir").st_mode)
    assert os.getxattr(dest / "var", OPAQUE_XATTR) == b"y"
    assert (dest / "var/kept").read_bytes() == b"this layer's own"
    assert (dest / "same").read_bytes() == b"mine"  # a whiteout hides only lower layers
    assert not any(p.name.startswith(".wh.") for p in dest.rglob("*"))
    assert stats.whiteouts == 3 and stats.opaque_dirs == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("marker_first", [True, False])
def test_no_whiteout_devices_in_a_directory_the_layer_makes_opaque(tmp_path: Path, marker_first: bool) -> None:
    """rl commit and other tools write both the opaque marker and whiteouts for a replaced directory;
    a whiteout device under an opaque directory of a lower layer would show as a broken entry."""
    if not user_xattrs_supported(tmp_path):
        pytest.skip("no user xattrs on this filesystem")
    dest = tmp_path / "dest"
    marker, whiteout = E("home/.wh..wh..opq"), E("home/.wh.alice")
    entries = [E("home/", kind="dir"), *([marker, whiteout] if marker_first else [whiteout, marker]),
               E("home/x", data=b"new"), E(".wh.elsewhere")]
    stats = run(tar_of(entries), dest)
    assert os.getxattr(dest / "home", OPAQUE_XATTR) == b"y"
    assert sorted(p.name for p in (dest / "home").iterdir()) == ["x"]
    assert stat.S_ISCHR(os.lstat(dest / "elsewhere").st_mode)  # whiteouts elsewhere stay
    assert stats.opaque_dirs == 1  # type: ignore[attr-defined]


def test_whiteouts_applied(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    run(tar_of([E("a/", kind="dir"), E("a/old", data=b"1"), E("gone", data=b"2"), E("keep", data=b"3")]), dest)
    run(tar_of([E(".wh.gone"), E("a/.wh..wh..opq"), E("a/new", data=b"4")]), dest, whiteouts="apply")
    assert sorted(p.name for p in dest.iterdir()) == ["a", "keep"]
    assert sorted(p.name for p in (dest / "a").iterdir()) == ["new"]


# ---- compression and verification ------------------------------------------------------------------


def test_gzip_and_zstd_layers(tmp_path: Path) -> None:
    tar = rich_tar()
    stats = run(gz(tar), tmp_path / "gz", compression_kind=None, expected_diff_id=sha256(tar))
    assert stats.diff_id == sha256(tar)  # type: ignore[attr-defined]
    if compression.zstd_available():
        data = compression.decompress_bytes(gz(tar))
        assert data == tar
        zstd = shutil.which("zstd")
        if zstd:
            z = subprocess.run([zstd, "-c", "-q"], input=tar, capture_output=True, check=True).stdout
            run(z, tmp_path / "zst", compression_kind=None, expected_diff_id=sha256(tar))
            assert (tmp_path / "zst/etc/hostname").read_bytes() == b"box\n"


def test_diff_id_mismatch_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as ei:
        run(rich_tar(), tmp_path / "dest", expected_diff_id="sha256:" + "0" * 64)
    assert "the image config says sha256:000" in ei.value.message
    assert "\n" not in ei.value.line()


def test_truncated_layer(tmp_path: Path) -> None:
    tar = tar_of([E("big", data=os.urandom(100_000))])
    with pytest.raises(ImageError, match="corrupt") as ei:
        run(tar[:50_000], tmp_path / "a")
    assert "\n" not in ei.value.line()
    with pytest.raises(ImageError, match="gzip data is truncated"):
        run(gz(tar)[:20_000], tmp_path / "b", compression_kind=None)


def test_empty_layers(tmp_path: Path) -> None:
    assert run(b"", tmp_path / "a").entries == 0  # type: ignore[attr-defined]
    assert run(b"\0" * 1024, tmp_path / "b").diff_id == "sha256:" + hashlib.sha256(b"\0" * 1024).hexdigest()  # type: ignore[attr-defined]


# ---- hostile layers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile(case: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"precious")
    (outside / "secret").write_bytes(b"secret")
    dest = tmp_path / "work" / "dest"
    dest.parent.mkdir()
    before_outside = snapshot(outside)
    before_top = sorted(os.listdir(tmp_path))
    tar, error = HOSTILE[case](str(outside))
    if error is None:
        stats = run(tar, dest)
    else:
        with pytest.raises(ImageError, match=error) as ei:
            run(tar, dest)
        line = ei.value.line()
        assert "\n" not in line
        assert line.startswith("layer sha256:0123456789ab of test: ")
    # Nothing appeared or changed outside dest.
    assert snapshot(outside) == before_outside
    assert sorted(os.listdir(tmp_path)) == before_top
    assert sorted(os.listdir(dest.parent)) == ["dest"]
    if case == "absolute":
        assert (dest / "abs/path").read_bytes() == b"inside"
    if case == "absolute-to-sentinel":
        assert (dest / str(outside).lstrip("/") / "pwn").read_bytes() == b"pwned"
    if case == "devices":
        assert sorted(stats.skipped_devices) == ["dev/null", "dev/sda"]  # type: ignore[attr-defined]
        assert os.listdir(dest / "dev") == []
    if case == "symlink-replaced-by-file":
        assert (dest / "evil").read_bytes() == b"replaced"
    if case == "overlay-xattr":
        with pytest.raises(OSError):
            os.getxattr(dest / "d", "user.overlay.redirect")


def test_hostile_errors_name_the_member(tmp_path: Path) -> None:
    tar, _ = HOSTILE["dotdot"]("/nowhere")
    with pytest.raises(ImageError) as ei:
        run(tar, tmp_path / "dest")
    assert ei.value.line().startswith("layer sha256:0123456789ab of test: member '../escape' escapes the layer")
    assert ei.value.hint
