"""The usual mistakes of a docker/podman user, black-box: each ends in ONE line on stderr,
``Error: what failed on what and why: hint``, docker's exit code, no traceback, nothing left behind.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Result, RunRl, rl_command

pytestmark = pytest.mark.system

IMAGE = "{busybox}"  # replaced by the fixture busybox reference


def one_line(result: Result, *words: str) -> str:
    """The error is one line, starts with 'Error: ' in lowercase, has a hint, names ``words``."""
    err = result.err
    where = f"rc={result.rc}\nstdout:\n{result.out}\nstderr:\n{err}"
    assert "Traceback" not in err, where
    assert err.count("\n") == 1 and err.endswith("\n"), where
    assert err.startswith("Error: "), where
    body = err[len("Error: "):]
    assert body[:1] == body[:1].lower(), where
    assert ": " in body, where  # at least "what: why" or "what: hint"
    for word in words:
        assert word.lower() in err.lower(), f"{word!r} missing in {where}"
    return err


def expand(args: tuple[str, ...], busybox: str) -> list[str]:
    return [a.replace(IMAGE, busybox) for a in args]


# (arguments, exit code, words the message must hold)
USAGE_CASES: list[tuple[tuple[str, ...], int, tuple[str, ...]]] = [
    # image references
    (("pull", "127.0.0.1:5555/rltest/BusyBox"), 125, ("invalid reference format", "lowercase")),
    (("pull", "busybox:"), 125, ("invalid reference format", "empty tag")),
    (("pull", "busybox@sha256:abc"), 125, ("invalid reference format", "invalid digest")),
    (("pull", "busybox@md5:abc"), 125, ("invalid reference format", "digest")),
    (("run", "--rm", "--pull", "never", "rltest-no-such-image", "true"), 125, ("not in the store", "never")),
    (("pull", "--platform", "foo/bar/baz/qux", "busybox"), 125, ("invalid platform",)),
    (("run", "--rm", "--platform", "nonsense", IMAGE, "true"), 125, ("invalid platform", "nonsense")),
    # rl run flags
    (("run", "--rm", "--cap-add", "NOSUCH", IMAGE, "true"), 125, ("capability", "NOSUCH")),
    (("run", "--rm", "--security-opt", "bogus", IMAGE, "true"), 125, ("--security-opt", "bogus")),
    (("run", "--rm", "--security-opt", "seccomp=/nonexistent.json", IMAGE, "true"), 125,
     ("seccomp profile", "/nonexistent.json", "no such file")),
    (("run", "--rm", "-v", "/tmp:rel", IMAGE, "true"), 125, ("'rel'", "absolute")),
    (("run", "--rm", "-it", IMAGE, "cat"), 125, ("the input device is not a tty", "leave out -t")),  # stdin: /dev/null
    (("run", "--rm", "-v", "/tmp:/a:ro:extra", IMAGE, "true"), 125, ("volume specification",)),
    (("run", "--rm", "-v", "/tmp:/a:bogus", IMAGE, "true"), 125, ("invalid option 'bogus'",)),
    (("run", "--rm", "-v", ":/a", IMAGE, "true"), 125, ("empty source",)),
    (("run", "--rm", "--mount", "type=bogus,dst=/a", IMAGE, "true"), 125, ("--mount", "unknown type")),
    (("run", "--rm", "--mount", "type=bind,dst=/a", IMAGE, "true"), 125, ("--mount", "source")),
    (("run", "--rm", "--mount", "type=bind,src=/tmp", IMAGE, "true"), 125, ("--mount", "no target")),
    (("run", "--rm", "--mount", "type=bind,src=/tmp,dst=rel", IMAGE, "true"), 125, ("--mount", "absolute")),
    (("run", "--rm", "--mount", "src=/tmp,dst=/a,foo=bar", IMAGE, "true"), 125, ("--mount", "unknown field 'foo=bar'")),
    (("run", "--rm", "--mount", "garbage", IMAGE, "true"), 125, ("--mount", "unknown field 'garbage'")),
    (("run", "--rm", "--mount", "type=tmpfs,dst=/a,tmpfs-size=abc", IMAGE, "true"), 125,
     ("tmpfs option", "size=abc")),
    (("run", "--rm", "--tmpfs", "rel", IMAGE, "true"), 125, ("--tmpfs", "absolute")),
    (("run", "--rm", "--tmpfs", "/a:size=abc", IMAGE, "true"), 125, ("tmpfs option", "size=abc")),
    (("run", "--rm", "--tmpfs", "/a:bogus", IMAGE, "true"), 125, ("tmpfs option", "bogus")),
    (("run", "--rm", "--add-host", "foo", IMAGE, "true"), 125, ("--add-host", "NAME:IP")),
    (("run", "--rm", "--add-host", "foo:notanip", IMAGE, "true"), 125, ("--add-host", "not an ip address")),
    (("run", "--rm", "-p", "0", IMAGE, "true"), 125, ("invalid port '0'", "1 to 65535")),
    (("run", "--rm", "-p", "70000:80", IMAGE, "true"), 125, ("invalid port '70000'", "1 to 65535")),
    (("run", "--rm", "-p", "abc:80", IMAGE, "true"), 125, ("invalid port 'abc'",)),
    (("run", "--rm", "-p", "8000-8001:80-82", IMAGE, "true"), 125, ("differ in size",)),
    (("run", "--rm", "-p", "80/sctpx", IMAGE, "true"), 125, ("invalid protocol",)),
    (("run", "--rm", "--memory", "1x", IMAGE, "true"), 125, ("--memory '1x'",)),
    (("run", "--rm", "--memory", "-5", IMAGE, "true"), 125, ("--memory '-5'",)),
    (("run", "--rm", "--cpus", "abc", IMAGE, "true"), 125, ("--cpus 'abc'",)),
    (("run", "--rm", "--cpus", "-1", IMAGE, "true"), 125, ("--cpus '-1'",)),
    (("run", "--rm", "--pids-limit", "abc", IMAGE, "true"), 125, ("--pids-limit", "rl run --help")),
    (("run", "--rm", "--user", "99999999999", IMAGE, "true"), 125, ("--user", "out of range")),
    (("run", "--rm", "--user", "0:99999999999", IMAGE, "true"), 125, ("--user", "out of range")),
    (("run", "--rm", "--user", "nosuchuser", IMAGE, "true"), 125, ("nosuchuser",)),
    (("run", "--rm", "--workdir", "rel", IMAGE, "true"), 125, ("working directory", "absolute")),
    (("run", "--rm", "--name", "a b", IMAGE, "true"), 125, ("container name 'a b'",)),
    (("run", "--rm", "--network", "nosuchnet", IMAGE, "true"), 125, ("no such network", "nosuchnet")),
    (("run", "--rm", "--network", "container:nosuch", IMAGE, "true"), 125, ("no such container", "nosuch")),
    (("run", "--rm", "--storage-driver", "nosuch", IMAGE, "true"), 125, ("storage driver", "nosuch")),
    (("--storage-driver", "nosuch", "ps"), 125, ("storage.driver", "nosuch")),
    (("run", "--rm", "--nosuch-flag", IMAGE), 125, ("no such option", "rl run --help")),
    (("run", "--rm", "--pull", "bogus", IMAGE), 125, ("--pull", "bogus")),
    (("run", "--rm", IMAGE, "nosuchcmd"), 127, ("executable file not found", "nosuchcmd")),
    (("nosuchcommand",), 125, ("no such command",)),
    # missing containers
    *[((cmd, "nosuch"), 125, ("no such container", "nosuch")) for cmd in
      ("stop", "kill", "logs", "wait", "start", "attach", "port", "top", "diff", "export")],
    (("rm", "nosuch"), 1, ("no such container", "nosuch")),
    (("inspect", "nosuch"), 1, ("no such object", "nosuch")),
    (("exec", "nosuch", "true"), 125, ("no such container", "nosuch")),
    (("cp", "nosuch:/etc/passwd", "/tmp/rl-errors-x"), 125, ("no such container",)),
    (("cp", "/etc/passwd", "nosuch:/tmp"), 125, ("no such container",)),
    (("commit", "nosuch", "someimage"), 125, ("no such container",)),
    (("rename", "nosuch", "other"), 125, ("no such container",)),
    (("network", "rm", "nosuchnet"), 125, ("no such network",)),
    (("volume", "rm", "nosuchvol"), 125, ("no such volume",)),
    (("network", "create", "bad name"), 125, ("invalid network name",)),
    (("volume", "create", "bad name"), 125, ("invalid volume name",)),
    # configuration
    (("config", "set", "nosuch.key", "1"), 125, ("unknown setting 'nosuch.key'",)),
    (("config", "set", "storage.driver", "bogus"), 125, ("invalid value 'bogus'", "storage.driver")),
    (("config", "set", "storage.driver"), 125, ("missing argument", "rl config set --help")),
]


@pytest.mark.parametrize(("args", "rc", "words"), USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_mistake_is_one_line(rl: RunRl, fixture_images: dict[str, Any], args: tuple[str, ...], rc: int,
                             words: tuple[str, ...]) -> None:
    busybox = str(fixture_images["busybox"].reference)
    if IMAGE in args:
        rl("pull", "-q", busybox)
    one_line(rl(*expand(args, busybox), rc=rc), *words)
    if args[0] == "run":
        # a refused run leaves no container behind
        assert rl("ps", "-a", "-q").out == ""


def test_unreachable_registry(rl: RunRl) -> None:
    one_line(rl("pull", "127.0.0.1:1/foo/bar", rc=125), "cannot reach 127.0.0.1:1", "connection refused")
    one_line(rl("run", "--rm", "127.0.0.1:1/foo/bar", "true", rc=125), "cannot reach 127.0.0.1:1")
    assert rl("ps", "-a", "-q").out == ""


def test_unknown_image_in_a_registry(rl: RunRl, registry_address: str) -> None:
    one_line(rl("pull", f"{registry_address}/rltest/no-such-image", rc=125), "not found", "no-such-image")
    one_line(rl("pull", f"{registry_address}/rltest/busybox:no-such-tag", rc=125), "not found", "no-such-tag")


def test_image_without_a_command(rl: RunRl, tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    rl("import", str(empty), "scratchy")
    one_line(rl("run", "--rm", "scratchy", rc=125), "no command specified", "scratchy")
    one_line(rl("run", "--rm", "scratchy", "/bin/sh", rc=127), "/bin/sh", "no such file")
    assert rl("ps", "-a", "-q").out == ""


def test_conflicts_with_a_running_container(rl: RunRl, fixture_images: dict[str, Any]) -> None:
    busybox = str(fixture_images["busybox"].reference)
    rl("network", "create", "errnet")
    rl("volume", "create", "errvol")
    rl("create", "-q", "--name", "stopped", busybox, "true")
    rl("run", "-d", "-q", "--name", "busy", "--network", "errnet", "-v", "errvol:/data", busybox, "sleep", "300")
    try:
        one_line(rl("run", "--rm", "--name", "busy", busybox, "true", rc=125), "already in use", "busy")
        one_line(rl("rm", "busy", rc=125), "cannot remove container", "running", "rl rm -f")
        one_line(rl("rmi", busybox, rc=125), "cannot remove image", "container")
        one_line(rl("network", "rm", "errnet", rc=125), "errnet", "in use")
        one_line(rl("volume", "rm", "errvol", rc=125), "errvol", "in use")
        one_line(rl("exec", "stopped", "true", rc=125), "not running", "rl start stopped")
        one_line(rl("kill", "-s", "NOSUCH", "busy", rc=125), "invalid signal", "NOSUCH")
        one_line(rl("rename", "stopped", "busy", rc=125), "already in use")
        one_line(rl("rename", "stopped", "a b", rc=125), "invalid container name")
        assert sorted(rl("ps", "-a", "--format", "{{.Names}}").lines) == ["busy", "stopped"]
    finally:
        rl("rm", "-f", "busy", "stopped")


def test_login_with_a_wrong_password(rl: RunRl, rl_env: dict[str, str], registry_factory: Any) -> None:
    server = registry_factory(htpasswd_users={"alice": "s3cret"})
    registry = server.url.split("://", 1)[1]
    one_line(rl("login", "-u", "alice", "-p", "wrong", registry, rc=125), "cannot log in", registry, "alice")
    one_line(rl("login", "-u", "alice", "--password-stdin", registry, input="", rc=125), "empty password")
    one_line(rl("login", "-u", "alice", "-p", "x", "127.0.0.1:1", rc=125), "cannot reach 127.0.0.1:1")
    auth = Path(rl_env["XDG_CONFIG_HOME"]) / "rl" / "auth.json"
    assert not auth.exists() or registry not in auth.read_text()  # nothing saved for a failed login


def _registry_has(address: str, repository: str, tag: str) -> bool:
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.index.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def big_image(request: pytest.FixtureRequest, registry_address: str) -> str:
    """The Debian image: tens of MB, so a pull takes long enough to interrupt."""
    if _registry_has(registry_address, "rltest/debian", "bookworm"):
        return f"{registry_address}/rltest/debian:bookworm"
    return str(request.getfixturevalue("debian_image").reference)


def test_ctrl_c_during_pull_leaves_no_image(rl: RunRl, rl_env: dict[str, str], big_image: str) -> None:
    # a terminal's Ctrl-C: SIGINT with its default disposition (a test runner may ignore it)
    # unbuffered: the progress line must come out when it is written, not when rl exits
    proc = subprocess.Popen([*rl_command(), "pull", big_image], env={**rl_env, "PYTHONUNBUFFERED": "1"},
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "TAG: Pulling from ...": the manifest is in, the layer is coming
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, f"{first}{out}{err}"
    assert "Traceback" not in err
    assert rl("images", "-q").out == ""
    tmp = Path(rl_env["XDG_DATA_HOME"]) / "rl" / "storage" / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())
    rl("pull", "-q", big_image)
    assert rl("run", "--rm", big_image, "cat", "/etc/debian_version").out.strip()
    assert json.loads(rl("image", "inspect", big_image).out)[0]["RepoTags"] == [big_image]
