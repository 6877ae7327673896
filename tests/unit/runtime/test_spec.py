"""ContainerSpec: Docker's defaults, and a JSON round trip."""

from __future__ import annotations

import json

from rootless.runtime import spec as specmod
from rootless.runtime.capabilities import mask
from rootless.runtime.spec import ContainerSpec, Mount, Rlimit, User, default_mounts


def test_defaults_match_docker() -> None:
    s = ContainerSpec(rootfs="/r", args=["sh"])
    assert s.env == [f"PATH={specmod.DEFAULT_PATH}"]
    assert s.cwd == "/" and s.user == User(0, 0, [])
    assert s.masked_paths == [
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
    ]
    assert s.readonly_paths == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert mask(s.capabilities.bounding) == mask(s.capabilities.effective) == 0xA80425FB
    assert s.capabilities.inheritable == []
    assert s.seccomp == "default" and s.no_new_privs is False
    assert (s.namespaces.pid, s.namespaces.net, s.namespaces.mount) == ("new", "new", "new")
    assert [m.destination for m in s.mounts] == ["/proc", "/dev", "/dev/pts", "/sys", "/dev/shm", "/dev/mqueue"]
    assert s.devices == ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"]


def test_default_mounts_options() -> None:
    mounts = {m.destination: m for m in default_mounts()}
    assert mounts["/dev/pts"].options == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert "gid=5" not in " ".join(m for m in {
        m.destination: m for m in default_mounts(pts_gid=None)}["/dev/pts"].options)
    assert mounts["/sys"] == Mount("/sys", "sysfs", "sysfs", ["ro", "nosuid", "noexec", "nodev"])
    assert mounts["/dev"].options == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert "/dev/mqueue" not in {m.destination for m in default_mounts(new_ipc=False)}


def test_json_round_trip() -> None:
    s = ContainerSpec(
        rootfs="/r", args=["echo", "hi"], user=User(1000, 1000, [10, 20]), hostname="h",
        mounts=[Mount("/data", "bind", "/src", ["ro"])], rlimits=[Rlimit("RLIMIT_NOFILE", 1024, 2048)],
        seccomp={"defaultAction": "SCMP_ACT_ALLOW"}, tty=True, init=True, etc_files={"/etc/hosts": "/x/hosts"},
    )
    s.namespaces.net = "/proc/123/ns/net"
    text = specmod.to_json(s)
    assert json.loads(text)["user"] == {"uid": 1000, "gid": 1000, "additional_gids": [10, 20]}
    assert specmod.from_json(text) == s
    assert specmod.from_json(specmod.to_json(ContainerSpec(rootfs="/r", args=["sh"]))) == ContainerSpec(
        rootfs="/r", args=["sh"])
