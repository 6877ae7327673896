"""A container's files: rl diff, rl export, rl cp (both ways, running and stopped), rl commit."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import RunRl, rl_command

pytestmark = pytest.mark.system


def ref(fixture_images: dict[str, Any], name: str = "busybox") -> str:
    return str(fixture_images[name].reference)


def rl_bytes(rl_env: dict[str, str], *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run([*rl_command(), *args], env=rl_env, input=input, capture_output=True, timeout=120,
                          stdin=None if input is not None else subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


DRIVERS = pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "vfs"])


def driver_flags(driver: str) -> list[str]:
    if driver == "fuse-overlayfs" and not shutil.which("fuse-overlayfs"):
        pytest.skip("fuse-overlayfs is not installed")
    return ["--storage-driver", driver]


@DRIVERS
def test_diff_after_add_change_delete(rl: RunRl, fixture_images: dict[str, Any], driver: str) -> None:
    image = ref(fixture_images)
    rl("run", "-q", "--name", "d1", *driver_flags(driver), image, "sh", "-c",
       "echo new > /newfile; echo x >> /etc/passwd; rm /etc/group; mkdir /newdir")
    lines = rl("diff", "d1").lines
    assert "A /newfile" in lines and "A /newdir" in lines
    assert not any("/.wh." in x for x in lines), lines  # fuse-overlayfs's own markers are not changes
    assert "C /etc" in lines and "C /etc/passwd" in lines
    assert "D /etc/group" in lines
    assert lines == sorted(lines, key=lambda x: x[2:])
    assert not any(" /proc" in x or " /dev" in x or " /sys" in x for x in lines), lines
    assert "no such container: nope" in rl("diff", "nope", rc=125).err


def test_export_has_files_and_numeric_owners(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any],
                                             tmp_path: Path) -> None:
    image = ref(fixture_images, "multilayer")
    rl("run", "-q", "--name", "e1", "--user", "0", image, "echo hi > /data/mine; rm /data/hardlink-b")
    out = tmp_path / "e1.tar"
    rl("export", "-o", str(out), "e1")
    with tarfile.open(out) as tf:
        names = {m.name: m for m in tf.getmembers()}
        assert "data/mine" in names
        assert "data/hardlink-b" not in names
        assert "etc/deleteme" not in names
        alice = names["data/alice-file"]
        assert (alice.uid, alice.gid) == (1234, 1234)
        f = tf.extractfile(alice)
        assert f is not None and f.read() == b"alice's too\n"
        assert (names["data/mine"].uid, names["data/mine"].gid) == (0, 0)
    # to stdout, same content
    data = rl_bytes(rl_env, "export", "e1")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert "data/alice-dir/owned.txt" in tf.getnames()


@pytest.mark.parametrize("running", [True, False], ids=["running", "stopped"])
@pytest.mark.parametrize("driver", ["overlay", "vfs"])
def test_cp_in_and_out(rl: RunRl, rl_env: dict[str, str], fixture_images: dict[str, Any], tmp_path: Path,
                       running: bool, driver: str) -> None:
    image = ref(fixture_images, "multilayer")
    if running:
        rl("run", "-d", "-q", "--name", "c1", *driver_flags(driver), "--user", "0", image, "sleep 300")
    else:
        rl("create", "-q", "--name", "c1", *driver_flags(driver), "--user", "0", image, "sleep 300")
    # out: a file owned by 1234 in the container belongs to the user on the host
    rl("cp", "c1:/data/alice-file", str(tmp_path / "got"))
    st = os.lstat(tmp_path / "got")
    assert (tmp_path / "got").read_text() == "alice's too\n"
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    # a directory into an existing directory
    (tmp_path / "outdir").mkdir()
    rl("cp", "c1:/data/alice-dir", str(tmp_path / "outdir"))
    assert (tmp_path / "outdir" / "alice-dir" / "owned.txt").read_text() == "alice's\n"
    assert os.lstat(tmp_path / "outdir" / "alice-dir" / "owned.txt").st_uid == os.getuid()
    # in: files belong to the container's root
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello").write_text("hello\n")
    rl("cp", str(tmp_path / "src" / "hello"), "c1:/data/alice-dir/")
    rl("cp", str(tmp_path / "src"), "c1:/srcdir")
    # a tar on stdin keeps its ids
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("fromtar")
        info.size, info.uid, info.gid, info.mode = 3, 1234, 1234, 0o600
        tf.addfile(info, io.BytesIO(b"t!\n"))
    rl_bytes(rl_env, "cp", "-", "c1:/data", input=buf.getvalue())
    # a tar on stdout
    data = rl_bytes(rl_env, "cp", "c1:/data/alice-dir", "-")
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmember("alice-dir/owned.txt")
        assert (m.uid, m.gid) == (1234, 1234)
        assert tf.getmember("alice-dir/hello").uid == 0
    if not running:
        rl("start", "c1")  # starts with the copied files
    out = rl("exec", "c1", "sh", "-c", "stat -c '%u:%g %n' /data/alice-dir/hello /srcdir/hello /data/fromtar; "
             "cat /data/fromtar /srcdir/hello").out
    assert "0:0 /data/alice-dir/hello" in out
    assert "0:0 /srcdir/hello" in out
    assert "1234:1234 /data/fromtar" in out
    assert "t!\nhello\n" in out
    rl("rm", "-f", "-t", "0", "c1")
    assert "at least one container" in rl("cp", str(tmp_path), str(tmp_path / "x"), rc=125).err


def test_cp_missing_source(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    rl("create", "-q", "--name", "c2", ref(fixture_images), "true")
    err = rl("cp", "c2:/no/such", str(tmp_path / "x"), rc=125).err
    assert "could not find the file /no/such" in err
    err = rl("cp", "c2:/etc/passwd", str(tmp_path / "missing" / "x"), rc=125).err
    assert "no such directory" in err


@DRIVERS
def test_commit_then_run(rl: RunRl, fixture_images: dict[str, Any], driver: str) -> None:
    image = ref(fixture_images)
    rl("run", "-q", "--name", "k1", *driver_flags(driver), image, "sh", "-c",
       "echo committed > /x; rm /etc/group; mkdir -p /d; echo 1 > /d/f; rm -r /home; mkdir /home; touch /home/x")
    out = rl("commit", "-m", "msg", "-a", "me", "--change", 'CMD ["cat","/x"]', "k1", "localhost/committed:v1").out
    assert out.startswith("sha256:")
    assert rl("run", "--rm", "-q", "localhost/committed:v1").out == "committed\n"
    out = rl("run", "--rm", "-q", "localhost/committed:v1", "sh", "-c",
             "test -e /etc/group && echo back || echo gone; cat /d/f; ls -A /home").out
    assert out == "gone\n1\nx\n"  # the replaced /home shows only its new entry, no whiteout of alice
    # a second commit on top: a deleted directory stays deleted
    rl("run", "-q", "--name", "k2", *driver_flags(driver), "localhost/committed:v1", "rm", "-r", "/d")
    rl("commit", "k2", "localhost/committed:v2")
    out = rl("run", "--rm", "-q", "localhost/committed:v2", "sh", "-c", "test -e /d && echo back || echo gone").out
    assert out == "gone\n"
    hist = rl("image", "inspect", "-f", "{{.Author}} {{.Comment}}", "localhost/committed:v1").out
    assert hist.strip() == "me msg"


@DRIVERS
def test_commit_running_multilayer(rl: RunRl, fixture_images: dict[str, Any], driver: str) -> None:
    image = ref(fixture_images, "multilayer")
    script = ("rm /data/alice-file; rm -r /opt/replaced; mkdir /opt/replaced; echo y > /opt/replaced/d; "
              "chown 1234:1234 /opt/replaced/d; touch /run-ready; sleep 300")
    rl("run", "-d", "-q", "--name", "k3", *driver_flags(driver), "--user", "0", image, script)
    rl("exec", "k3", "sh", "-c", "while [ ! -e /run-ready ]; do sleep 0.1; done; rm /run-ready")
    lines = rl("diff", "k3").lines
    assert "D /data/alice-file" in lines and "A /opt/replaced/d" in lines
    assert "D /opt/replaced/c" in lines
    rl("commit", "-p", "k3", "localhost/ml:c")
    rl("rm", "-f", "-t", "0", "k3")
    out = rl("run", "--rm", "-q", "--user", "0", "localhost/ml:c",
             "ls /opt/replaced; stat -c '%u:%g' /opt/replaced/d; test -e /data/alice-file || echo gone; "
             "test -e /etc/deleteme || echo still-gone").out
    assert out == "d\n1234:1234\ngone\nstill-gone\n"


def test_cp_rules_and_symlinks(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    image = ref(fixture_images, "multilayer")
    # a symlink in the container that points at a host path is resolved inside the container
    rl("run", "-q", "--name", "s1", "--user", "0", image, f"mkdir -p {outside}; ln -s {outside} /escape; "
       "ln -s /etc/passwd /data/plink")
    (tmp_path / "f").write_text("f\n")
    rl("cp", str(tmp_path / "f"), "s1:/escape/")
    assert not (outside / "f").exists()
    # a symlink source is copied as a link; -L follows it
    rl("cp", "s1:/data/plink", str(tmp_path / "link"))
    assert os.readlink(tmp_path / "link") == "/etc/passwd"
    rl("cp", "-L", "s1:/data/plink", str(tmp_path / "followed"))
    assert (tmp_path / "followed").read_text().startswith("root:")
    # DIR/. copies the contents; a new destination name renames
    rl("cp", "s1:/opt/replaced/.", str(tmp_path / "contents"))
    assert sorted(os.listdir(tmp_path / "contents")) == ["c"]
    (tmp_path / "existing").mkdir()
    rl("cp", "s1:/opt/replaced/.", str(tmp_path / "existing"))
    assert os.listdir(tmp_path / "existing") == ["c"]
    rl("cp", "s1:/opt/replaced", str(tmp_path / "renamed"))
    assert os.listdir(tmp_path / "renamed") == ["c"]
    err = rl("cp", str(tmp_path / "contents"), "s1:/data/alice-file", rc=125).err
    assert "cannot copy a directory to a file" in err
    err = rl("cp", str(tmp_path / "f"), "s1:/nodir/x", rc=125).err
    assert "no such directory" in err


def test_cp_into_a_volume_of_a_running_container(rl: RunRl, fixture_images: dict[str, Any], tmp_path: Path) -> None:
    rl("run", "-d", "-q", "--name", "v1", "-v", "vol:/v", ref(fixture_images), "sleep", "300")
    (tmp_path / "f").write_text("in the volume\n")
    rl("cp", str(tmp_path / "f"), "v1:/v/f")
    assert rl("exec", "v1", "cat", "/v/f").out == "in the volume\n"
    rl("exec", "v1", "sh", "-c", "echo back > /v/g")
    rl("cp", "v1:/v/g", str(tmp_path / "g"))
    assert (tmp_path / "g").read_text() == "back\n"
    rl("rm", "-f", "-t", "0", "v1")
