"""Named volumes: created on first use, the image's content copied up once, persisting across containers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.system.conftest import RunRl

pytestmark = pytest.mark.system


def ref(fixture_images: dict[str, Any], name: str = "busybox") -> str:
    return str(fixture_images[name].reference)


def test_named_volume_copy_up_and_persistence(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    # /etc of the image is copied into the new volume
    out = rl("run", "--rm", "-q", "-v", "data:/etc", image, "sh", "-c", "cat /etc/passwd | head -1; echo x > /etc/new")
    assert out.out.startswith("root:")
    assert rl("volume", "ls", "--format", "{{.Name}}").out == "data\n"
    rl("volume", "exists", "data")
    rl("volume", "exists", "nope", rc=1)
    # persists; the copy-up does not happen again (the deleted file stays deleted)
    rl("run", "--rm", "-q", "-v", "data:/etc", image, "sh", "-c", "cat /etc/new; rm /etc/group")
    out = rl("run", "--rm", "-q", "-v", "data:/etc", image, "sh", "-c", "test -e /etc/group && echo back || echo gone")
    assert out.out == "gone\n"
    doc = json.loads(rl("volume", "inspect", "data").out)[0]
    assert set(doc) == {"CreatedAt", "Driver", "Labels", "Mountpoint", "Name", "Options", "Scope"}
    assert doc["Name"] == "data" and doc["Driver"] == "local"
    assert rl("inspect", "-f", "{{.Mountpoint}}", "data").out.strip() == doc["Mountpoint"]


def test_volume_in_use_rm_and_prune(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    assert rl("volume", "create", "--label", "a=b", "v1").out == "v1\n"
    cid = rl("create", "-q", "-v", "v1:/data", image, "true").out.strip()
    assert "volume is in use" in rl("volume", "rm", "v1", rc=125).err
    assert rl("inspect", "-f", "{{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}", cid).out == "v1:/data\n"
    rl("rm", cid)
    # an anonymous volume goes with rm -v
    cid = rl("create", "-q", "-v", "/anon", image, "true").out.strip()
    names = rl("volume", "ls", "-q").out.split()
    assert len(names) == 2
    rl("rm", "-v", cid)
    assert rl("volume", "ls", "-q").out.split() == ["v1"]
    assert "v1" in rl("volume", "prune", "-f").out
    assert rl("volume", "ls", "-q").out == ""


def test_image_volumes_become_anonymous_volumes(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    image = ref(fixture_images)
    # an image with VOLUME /vol and content there, made with rl commit
    rl("run", "-q", "--name", "base", image, "sh", "-c", "mkdir /vol; echo seeded > /vol/f")
    rl("commit", "--change", "VOLUME /vol", "base", "localhost/withvol:1")
    rl("rm", "base")
    assert rl("volume", "ls", "-q").out == ""
    cid = rl("create", "-q", "localhost/withvol:1", "sh", "-c", "cat /vol/f; echo more > /vol/g").out.strip()
    names = rl("volume", "ls", "-q").out.split()
    assert len(names) == 1 and len(names[0]) == 64
    doc = json.loads(rl("inspect", cid).out)[0]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in doc["Mounts"]] == [("volume", names[0], "/vol")]
    rl("start", cid)
    assert rl("wait", cid).out == "0\n"
    assert rl("logs", cid).out == "seeded\n"  # the image's content was copied up
    rl("rm", "-v", cid)
    assert rl("volume", "ls", "-q").out == ""
    # a -v for the same path replaces it; --rm takes the anonymous volume with the container
    rl("run", "--rm", "-q", "-v", "named:/vol", "localhost/withvol:1", "true")
    assert rl("volume", "ls", "-q").out == "named\n"
    rl("run", "--rm", "-q", "localhost/withvol:1", "true")
    cid = rl("run", "-d", "-q", "--rm", "localhost/withvol:1", "true").out.strip()
    rl("wait", cid, rc=None)
    for _ in range(100):
        if rl("volume", "ls", "-q").out == "named\n":
            break
        time.sleep(0.1)
    assert rl("volume", "ls", "-q").out == "named\n"
