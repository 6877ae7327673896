"""Image commands as a user types them: pull, images, inspect, tag, rmi, and their errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import RunRl

pytestmark = pytest.mark.system

REGISTRY = os.environ.get("RL_TEST_REGISTRY", "").strip()
needs_registry = pytest.mark.skipif(not REGISTRY, reason="RL_TEST_REGISTRY is not set")


@pytest.fixture(autouse=True)
def _stop_namespace(rl_env: dict[str, str]) -> Iterator[None]:
    """Each test has its own runroot, so its own pause process: delete the store inside the user
    namespace (layers hold subordinate-owned files), then stop the pause process."""
    yield
    runroot = Path(rl_env["XDG_RUNTIME_DIR"]) / "rl"
    storage = Path(rl_env["XDG_DATA_HOME"]) / "rl" / "storage"
    if not (runroot / "pause.json").exists():
        return
    code = (
        "import shutil, sys\nfrom pathlib import Path\nfrom rootless.runtime import pause\n"
        f"pause.enter(Path({str(runroot)!r}))\nshutil.rmtree({str(storage)!r}, ignore_errors=True)\n"
        f"pause.migrate(Path({str(runroot)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=rl_env, capture_output=True, timeout=60)
    from rootless.runtime import pause

    pause.migrate(runroot)


@pytest.fixture
def busybox(rl: RunRl, fixture_images: dict) -> str:  # type: ignore[type-arg]
    ref: str = fixture_images["busybox"].reference
    rl("pull", "-q", ref)
    return ref


def test_pull_prints_docker_lines(rl: RunRl, fixture_images: dict) -> None:  # type: ignore[type-arg]
    image = fixture_images["busybox"]
    lines = rl("pull", image.reference).lines
    assert lines[0] == f"latest: Pulling from {image.repository}"
    assert f"Digest: {image.digest}" in lines
    assert f"Status: Downloaded newer image for {image.reference}" in lines
    assert lines[-1] == image.reference
    assert rl("pull", "-q", image.reference).lines == [image.reference]
    assert f"Status: Image is up to date for {image.reference}" in rl("pull", image.reference).lines


def test_images_columns(rl: RunRl, busybox: str, fixture_images: dict) -> None:  # type: ignore[type-arg]
    image = fixture_images["busybox"]
    lines = rl("images").lines
    assert re.split(r"\s{2,}", lines[0].strip()) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    repo, tag, image_id, created, size = re.split(r"\s{2,}", lines[1].strip())
    assert (repo, tag) == (f"{image.registry}/{image.repository}", "latest")
    assert image_id == image.config_digest[7:19]
    assert created.endswith(" ago")
    assert re.fullmatch(r"[\d.]+(B|kB|MB|GB)", size)
    assert rl("images", "--format", "{{.Repository}}:{{.Tag}}").lines == [busybox]
    assert rl("images", "-q").lines == [image.config_digest[7:19]]
    assert rl("images", "-q", "--no-trunc").lines == [image.config_digest]
    digests = rl("images", "--digests").lines
    assert "DIGEST" in digests[0] and image.digest in digests[1]
    row = json.loads(rl("images", "--format", "json").lines[0])
    assert row["Repository"] == repo and row["Tag"] == "latest"
    assert rl("images", "--filter", "dangling=true").lines[1:] == []
    assert rl("images", "--filter", "reference=*/rltest/busy*", "-q").lines == [image_id]
    assert rl("images", "--filter", "label=org.rl.test=busybox", "-q").lines == [image_id]
    assert rl("images", "--filter", "label=org.rl.test=other", "-q").lines == []


def test_inspect_format(rl: RunRl, busybox: str) -> None:
    assert rl("image", "inspect", "--format", "{{.Config.Cmd}}", busybox).out == "[sh]\n"
    [doc] = json.loads(rl("image", "inspect", busybox).out)
    assert doc["RepoTags"] == [busybox]
    assert doc["Config"]["Labels"] == {"org.rl.test": "busybox"}


def test_tag_and_rmi(rl: RunRl, busybox: str, fixture_images: dict) -> None:  # type: ignore[type-arg]
    image = fixture_images["busybox"]
    rl("tag", busybox, "localhost/copy:2")
    assert sorted(rl("images", "--format", "{{.Repository}}:{{.Tag}}").lines) == sorted([busybox, "localhost/copy:2"])
    assert rl("rmi", "localhost/copy:2").lines == ["Untagged: localhost/copy:2"]
    out = rl("rmi", busybox).lines
    assert out[0] == f"Untagged: {busybox}"
    assert f"Deleted: {image.config_digest}" in out
    assert rl("images", "-q").lines == []
    assert rl("image", "exists", busybox, rc=1).rc == 1


def test_system_df(rl: RunRl, busybox: str) -> None:
    lines = rl("system", "df").lines
    assert lines[0].split()[:2] == ["TYPE", "TOTAL"]
    assert lines[1].split()[:3] == ["Images", "1", "0"]


def test_malformed_reference(rl: RunRl) -> None:
    for cmd in (("pull", "Not A/Ref"), ("pull", "UPPER/case:1"), ("image", "inspect", "bad ref"),
                ("tag", "x", "Bad:tag:x")):
        result = rl(*cmd, rc=125)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith("Error: "), result.err
        assert "Traceback" not in result.err


def test_unknown_image(rl: RunRl) -> None:
    for cmd in (("rmi", "nosuchimage"), ("image", "inspect", "nosuchimage"), ("tag", "nosuchimage", "x:1"),
                ("save", "-o", "/dev/null", "nosuchimage")):
        result = rl(*cmd, rc=125)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "no such image: nosuchimage" in lines[0], result.err


@needs_registry
def test_pull_unknown_repository(rl: RunRl) -> None:
    result = rl("pull", f"{REGISTRY}/rltest/does-not-exist:1", rc=125)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0]
