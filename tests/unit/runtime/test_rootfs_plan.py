"""Rootfs planning against expected data, and the executor against a recording syscall fake."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.errors import RuntimeSetupError
from rootless.runtime import rootfs
from rootless.runtime.rootfs import Op
from rootless.runtime.spec import HOST, ContainerSpec, Mount
from rootless.runtime.syscalls import (
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SLAVE,
    MS_STRICTATIME,
    Syscalls,
)

NSN = MS_NOSUID | MS_NOEXEC | MS_NODEV


def dev_ops() -> list[Op]:
    devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]
    ops = [Op("bind", d, d, flags=MS_BIND, create="file") for d in devices]
    links = [("/dev/ptmx", "pts/ptmx"), ("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
             ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"), ("/dev/core", "/proc/kcore")]
    return ops + [Op("symlink", p, t) for p, t in links]


def test_default_plan() -> None:
    spec = ContainerSpec(rootfs="/r", args=["sh"], masked_paths=["/proc/kcore"], readonly_paths=["/proc/sys"],
                         etc_files={"/etc/hosts": "/c/hosts", "/etc/hostname": "/c/hostname"})
    assert rootfs.plan(spec) == [
        Op("propagation", "/", flags=MS_SLAVE | MS_REC),
        Op("bind_root"),
        Op("mount", "/proc", "proc", "proc", NSN, None, "dir"),
        Op("mount", "/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k", "dir"),
        *dev_ops(),
        Op("mount", "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620,gid=5", "dir"),
        Op("mount", "/sys", "sysfs", "sysfs", MS_RDONLY | NSN, None, "dir"),
        Op("mount", "/dev/shm", "shm", "tmpfs", NSN, "mode=1777,size=65536k", "dir"),
        Op("mount", "/dev/mqueue", "mqueue", "mqueue", NSN, None, "dir"),
        Op("bind", "/etc/hostname", "/c/hostname", flags=MS_BIND, create="file"),
        Op("bind", "/etc/hosts", "/c/hosts", flags=MS_BIND, create="file"),
        Op("mask", "/proc/kcore"),
        Op("readonly", "/proc/sys"),
        Op("pivot_root"),
    ]


def test_host_namespaces_change_the_plan() -> None:
    spec = ContainerSpec(rootfs="/r", args=["sh"], masked_paths=[], readonly_paths=[], readonly_rootfs=True)
    spec.namespaces.pid = HOST
    spec.namespaces.net = HOST
    spec.namespaces.ipc = HOST
    ops = rootfs.plan(spec)
    assert Op("bind", "/proc", "/proc", flags=MS_BIND | MS_REC, create="dir") in ops
    sys_ops = [op for op in ops if op.target == "/sys"]
    assert sys_ops == [Op("bind", "/sys", "/sys", flags=MS_BIND | MS_REC, create="dir"),
                       Op("remount_rec", "/sys", flags=MS_RDONLY | NSN)]
    assert not [op for op in ops if op.target == "/dev/mqueue"]
    assert ops[-2:] == [Op("pivot_root"), Op("readonly_root")]


def test_user_mounts() -> None:
    spec = ContainerSpec(rootfs="/r", args=["sh"], mounts=[
        Mount("/data", "bind", "/src", ["ro", "nosuid", "rprivate"]),
        Mount("/one", "bind", "/src1", ["bind"]),
        Mount("/t", "tmpfs", None, ["size=1m", "mode=1777", "noexec"]),
    ], masked_paths=[], readonly_paths=[])
    assert rootfs.plan(spec)[2:-1] == [
        Op("bind", "/data", "/src", flags=MS_BIND | MS_REC, create="auto"),
        Op("remount", "/data", flags=MS_RDONLY | MS_NOSUID),
        Op("propagation", "/data", flags=MS_PRIVATE | MS_REC),
        Op("bind", "/one", "/src1", flags=MS_BIND, create="auto"),
        Op("mount", "/t", "tmpfs", "tmpfs", MS_NOEXEC, "size=1m,mode=1777", "dir"),
    ]


def test_bad_specs() -> None:
    with pytest.raises(RuntimeSetupError, match="has no source"):
        rootfs.plan(ContainerSpec(rootfs="/r", args=["sh"], mounts=[Mount("/x", "bind")]))
    with pytest.raises(RuntimeSetupError, match="unsupported type 'nfs'"):
        rootfs.plan(ContainerSpec(rootfs="/r", args=["sh"], mounts=[Mount("/x", "nfs", "s")]))
    spec = ContainerSpec(rootfs="/r", args=["sh"])
    spec.namespaces.mount = HOST
    with pytest.raises(RuntimeSetupError, match="own mount namespace"):
        rootfs.plan(spec)


def test_parse_options() -> None:
    assert rootfs.parse_options(["ro", "rw", "nodev", "rslave", "size=1m", "uid=3"]) == (
        MS_NODEV, MS_SLAVE | MS_REC, "size=1m,uid=3")


# ---- executor with a recording fake ------------------------------------------------------------------


class RecordingSyscalls(Syscalls):
    def __init__(self, errors: dict[tuple[str | None, int], int] | None = None) -> None:
        super().__init__()
        self.mounts: list[tuple[str | None, str, str | None, int, str | None]] = []
        self.errors = errors or {}  # (fstype, attempt) -> errno

    def mount(self, source: str | None, target: str, fstype: str | None = None, flags: int = 0,
              data: str | None = None) -> None:
        attempt = sum(1 for m in self.mounts if m[2] == fstype)
        self.mounts.append((source, target, fstype, flags, data))
        err = self.errors.get((fstype, attempt))
        if err:
            raise OSError(err, "mount")


def test_executor_creates_mount_points_and_resolves_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var").mkdir(parents=True)
    (root / "var/run").symlink_to("/run")  # absolute: must resolve inside root
    src = tmp_path / "file"
    src.write_text("x")
    sys = RecordingSyscalls()
    rootfs.apply([
        Op("mount", "/var/run/x", "tmpfs", "tmpfs", 0, None, "dir"),
        Op("bind", "/etc/hosts", str(src), flags=MS_BIND, create="auto"),
        Op("symlink", "/dev/fd", "/proc/self/fd"),
        Op("symlink", "/dev/fd", "/elsewhere"),  # exists: left alone
    ], str(root), sys)
    assert (root / "run/x").is_dir()
    assert (root / "etc/hosts").is_file()
    assert os.readlink(root / "dev/fd") == "/proc/self/fd"
    assert sys.mounts == [("tmpfs", f"{root}/run/x", "tmpfs", 0, None),
                          (str(src), f"{root}/etc/hosts", None, MS_BIND, None)]


def test_mask_file_dir_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc/acpi").mkdir(parents=True)
    (root / "proc/kcore").write_text("")
    sys = RecordingSyscalls()
    rootfs.apply([Op("mask", "/proc/kcore"), Op("mask", "/proc/acpi"), Op("mask", "/proc/nothing")],
                 str(root), sys)
    assert sys.mounts == [("/dev/null", f"{root}/proc/kcore", None, MS_BIND, None),
                          ("tmpfs", f"{root}/proc/acpi", "tmpfs", MS_RDONLY, None)]


def test_devpts_retries_without_gid(tmp_path: Path) -> None:
    sys = RecordingSyscalls({("devpts", 0): 22})
    rootfs.apply([Op("mount", "/dev/pts", "devpts", "devpts", 0, "newinstance,gid=5,mode=0620", "dir")],
                 str(tmp_path), sys)
    assert [m[4] for m in sys.mounts] == ["newinstance,gid=5,mode=0620", "newinstance,mode=0620"]


def test_sysfs_falls_back_to_rbind_on_eperm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "_mountinfo_points", lambda: ["/", f"{tmp_path}/sys"])
    monkeypatch.setattr(rootfs, "locked_flags", lambda path: MS_NOSUID)
    sys = RecordingSyscalls({("sysfs", 0): 1})
    rootfs.apply([Op("mount", "/sys", "sysfs", "sysfs", MS_RDONLY | NSN, None, "dir")], str(tmp_path), sys)
    assert sys.mounts[1:] == [
        ("/sys", f"{tmp_path}/sys", None, MS_BIND | MS_REC, None),
        (None, f"{tmp_path}/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | NSN, None),
    ]


def test_remount_keeps_locked_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "locked_flags", lambda path: MS_NODEV | MS_NOSUID)
    (tmp_path / "data").mkdir()
    sys = RecordingSyscalls()
    rootfs.apply([Op("remount", "/data", flags=MS_RDONLY)], str(tmp_path), sys)
    assert sys.mounts == [(None, f"{tmp_path}/data", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NODEV | MS_NOSUID,
                           None)]


def test_failures_name_operation_and_path(tmp_path: Path) -> None:
    with pytest.raises(RuntimeSetupError) as info:
        rootfs.apply([Op("mount", "/proc", "proc", "proc", NSN, None, "dir")], str(tmp_path),
                     RecordingSyscalls({("proc", 0): 1}))
    assert info.value.message == "mount proc on /proc failed: operation not permitted"
    with pytest.raises(RuntimeSetupError, match="bind /nonexistent on /x failed: no such file or directory"):
        rootfs.apply([Op("bind", "/x", "/nonexistent", flags=MS_BIND, create="auto")], str(tmp_path),
                     RecordingSyscalls())


def test_locked_flags_reads_statvfs() -> None:
    known = MS_RDONLY | NSN | MS_NOATIME | MS_NODIRATIME | MS_RELATIME
    for path in ("/", "/proc", "/dev"):
        flags = rootfs.locked_flags(path)
        assert flags & ~known == 0
        assert bool(flags & MS_RDONLY) == bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def test_write_etc_files(tmp_path: Path) -> None:
    files = rootfs.write_etc_files(str(tmp_path / "c"), "box", resolv_conf="nameserver 10.0.2.3\n")
    assert sorted(files) == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    assert Path(files["/etc/hostname"]).read_text() == "box\n"
    assert "127.0.1.1\tbox" in Path(files["/etc/hosts"]).read_text()


def test_readonly_paths_read_the_mount_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker's five read-only /proc paths cost one read of mountinfo, not five."""
    reads = []
    monkeypatch.setattr(rootfs, "_mountinfo_points", lambda: reads.append(1) or ["/", f"{tmp_path}/proc/sys/fs"])
    monkeypatch.setattr(rootfs, "locked_flags", lambda path: 0)
    for name in ("bus", "fs", "sys", "sys/fs"):
        (tmp_path / "proc" / name).mkdir(parents=True)
    sys = RecordingSyscalls()
    rootfs.apply([Op("readonly", f"/proc/{n}") for n in ("bus", "fs", "sys")], str(tmp_path), sys)
    assert len(reads) == 1
    remounted = [m[1] for m in sys.mounts if m[3] & MS_REMOUNT]
    assert remounted == [f"{tmp_path}/proc/bus", f"{tmp_path}/proc/fs", f"{tmp_path}/proc/sys/fs",
                         f"{tmp_path}/proc/sys"]
