"""Image use cases end to end against the real test registry: pull (every fixture image, platforms,
ownership, whiteouts, faults, kill -9, concurrency), inspect, rmi with containers, save/load, import,
push, login.

``rl`` runs as a subprocess with its own store root and runroot per test (the user namespace's pause
process is per runroot and is stopped when the test ends); the test reads the store from outside.
"""

from __future__ import annotations

import http.client
import http.server
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rootless.image.platform import host_platform
from rootless.image.store import Store
from rootless.runtime import pause, userns
from rootless.state.containers import ContainerRecord, ContainerStore, new_id, now_rfc3339
from tests.fixtures import (
    FixtureImage,
    busybox_entries,
    decompress_layer,
    gzip_bytes,
    make_layer,
)
from tests.fixtures.images import STANDARD_IMAGES

try:
    import registry_auth as ra
except ImportError:  # tests/integration is a package
    from . import registry_auth as ra  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

if userns.userns_problems():
    pytest.skip(f"user namespaces are disabled: {userns.userns_problems()[0].message}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    rc: int
    out: str
    err: str


class RlEnv:
    """One user's rl with a private store and runroot."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "storage"
        self.runroot = tmp / "run"
        self.runroot.mkdir(mode=0o700)
        home = tmp / "home"
        home.mkdir()
        self.config_home = home / ".config"
        self.env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_RUNTIME_DIR": str(self.runroot),
            "RL_SYSTEM_CONFIG": str(tmp / "etc-rl.toml"),
            "PYTHONPATH": str(ROOT),
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rootless", "--root", str(self.root), "--runroot", str(self.runroot), *args]

    def __call__(self, *args: str, rc: int | None = 0, input: bytes | str | None = None,
                 timeout: float = 300) -> Run:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(self.argv(*args), env=self.env, input=data, capture_output=True, timeout=timeout,
                              stdin=None if data is not None else subprocess.DEVNULL)
        run = Run(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if rc is not None:
            assert run.rc == rc, f"rl {' '.join(args)}: rc={run.rc}\n{run.out}\n{run.err}"
        if run.rc == 0:
            assert "Traceback" not in run.err, run.err
        return run

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)

    @property
    def store(self) -> Store:
        return Store(self.root)

    def in_namespace(self, code: str) -> str:
        """Run Python ``code`` inside rl's user namespace (for deletions of subordinate-owned files)."""
        prog = ("from pathlib import Path\nfrom rootless.runtime import pause\n"
                f"pause.enter(Path({str(self.runroot)!r}))\n")
        proc = subprocess.run([sys.executable, "-c", prog + code], env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def namespace(self) -> Any:
        handle = pause.status(self.runroot)
        assert handle is not None, "no pause process"
        return handle.info()

    def cleanup(self) -> None:
        if self.root.exists() and pause.status(self.runroot) is not None:
            self.in_namespace(f"import shutil\nshutil.rmtree({str(self.root)!r}, ignore_errors=True)\n")
        pause.migrate(self.runroot)


@pytest.fixture
def rl(tmp_path: Path) -> Iterator[RlEnv]:
    env = RlEnv(tmp_path)
    try:
        yield env
    finally:
        env.cleanup()


def _layer_dirs(store: Store, image: str) -> list[Path]:
    rec = store.resolve(image)
    return [store.layer_dir(d) for d in rec.diff_ids]


def _find(dirs: Sequence[Path], rel: str) -> Path:
    for d in reversed(dirs):
        p = d / rel
        if os.path.lexists(p):
            return p
    raise AssertionError(f"{rel} in none of {dirs}")


def _expected_platform_key(image: FixtureImage) -> str:
    host = host_platform()
    for key in image.children:
        if key.split("/")[1] == host.architecture:
            return key
    pytest.skip(f"the multiarch fixture has no image for {host}")


# ---------------------------------------------------------------------------------- pulling


@pytest.mark.parametrize("name", sorted(STANDARD_IMAGES))
def test_pull_every_fixture_image(rl: RlEnv, fixture_images: dict[str, FixtureImage], name: str) -> None:
    image = fixture_images[name]
    out = rl("pull", image.reference).out
    assert out.splitlines()[-1] == image.reference
    assert f"Digest: {image.digest}" in out
    store = rl.store
    rec = store.resolve(image.reference)
    expected = image.children[_expected_platform_key(image)] if image.is_index else image
    assert rec.id == expected.config_digest
    assert rec.diff_ids == expected.diff_ids
    assert [d["digest"] for d in rec.layers] == expected.layer_digests
    assert f"{image.registry}/{image.repository}@{image.digest}" in rec.repo_digests
    for diff_id in rec.diff_ids:
        assert store.layer_present(diff_id)
    assert (_find(_layer_dirs(store, image.reference), "bin/busybox")).stat().st_size > 100_000
    for path, text in expected.files.items():
        assert _find(_layer_dirs(store, image.reference), path.lstrip("/")).read_text() == text
    assert store.check() == []
    # A second pull finds everything in place.
    again = rl("pull", image.reference).out
    assert "Status: Image is up to date" in again


def test_inspect_shows_the_config(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multilayer"]
    rl("pull", "-q", image.reference)
    [doc] = json.loads(rl("image", "inspect", image.reference).out)
    cfg = doc["Config"]
    assert doc["Id"] == image.config_digest
    assert cfg["Env"] == image.env
    assert cfg["Cmd"] == image.cmd
    assert cfg["Entrypoint"] == image.entrypoint
    assert cfg["WorkingDir"] == image.working_dir
    assert cfg["User"] == image.user
    assert cfg["Labels"] == image.labels
    assert sorted(cfg["ExposedPorts"]) == image.exposed_ports
    assert cfg["StopSignal"] == "SIGTERM"
    assert doc["RootFS"] == {"Type": "layers", "Layers": image.diff_ids}
    assert doc["RepoTags"] == [image.reference]
    assert doc["Os"] == "linux" and doc["Architecture"] == "amd64"
    assert rl("image", "inspect", "--format", "{{.Config.WorkingDir}}", image.reference).out.strip() == "/data"


def test_multiarch_default_and_platform(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multiarch"]
    key = _expected_platform_key(image)
    rl("pull", image.reference)
    arch = key.split("/")[1]
    assert _find(_layer_dirs(rl.store, image.reference), "arch").read_text() == f"{arch}\n"
    rl("pull", "--platform", "linux/arm64", image.reference)
    rec = rl.store.resolve(image.reference)
    assert rec.id == image.children["linux/arm64/v8"].config_digest
    assert _find(_layer_dirs(rl.store, image.reference), "arch").read_text() == "arm64\n"
    [doc] = json.loads(rl("image", "inspect", image.reference).out)
    assert doc["Architecture"] == "arm64"
    bad = rl("pull", "--platform", "linux/s390x", image.reference, rc=125)
    assert len(bad.err.strip().splitlines()) == 1 and "linux/s390x" in bad.err and "available" in bad.err


def test_owners_map_to_subordinate_ids(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multilayer"]
    rl("pull", image.reference)
    ns = rl.namespace()
    if ns.single_id:
        pytest.skip("single-ID namespace: ownership is flattened")
    dirs = _layer_dirs(rl.store, image.reference)
    owned = _find(dirs, "data/alice-file").stat()
    assert owned.st_uid == ns.host_uid_of(1234)
    assert owned.st_gid == ns.host_gid_of(1234)
    root_owned = _find(dirs, "bin/busybox").stat()
    assert root_owned.st_uid == os.getuid()
    setuid = _find(dirs, "usr/bin/setuid-tool").stat()
    assert setuid.st_mode & stat.S_ISUID


def test_whiteouts_and_opaque_dirs(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multilayer"]
    rl("pull", image.reference)
    third = _layer_dirs(rl.store, image.reference)[2]
    wh = (third / "etc" / "deleteme").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(third / "opt" / "replaced", "user.overlay.opaque") == b"y"
    assert (third / "opt" / "replaced" / "c").read_text() == "c\n"
    assert not (third / "opt" / "replaced" / "a").exists()


def test_pull_debian(rl: RlEnv, debian_image: FixtureImage) -> None:
    rl("pull", debian_image.reference, timeout=900)
    dirs = _layer_dirs(rl.store, debian_image.reference)
    assert _find(dirs, "etc/debian_version").read_text().startswith("12")
    assert rl.store.check(verify_blobs=False) == []


# ------------------------------------------------------------------------------------ faults


def test_corrupt_blob_is_refused_and_the_next_pull_works(
        rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["busybox"]
    proxy = ra.FaultProxy(image.registry)
    try:
        ref = f"{proxy.host}/{image.repository}:{image.tag}"
        proxy.add("corrupt", f"GET /v2/{image.repository}/blobs/{image.layer_digests[0]}", times=None)
        failed = rl("pull", ref, rc=125)
        lines = failed.err.strip().splitlines()
        assert len(lines) == 1, failed.err
        assert "does not match its digest" in lines[0] and image.layer_digests[0] in lines[0]
        assert rl.store.check() == []
        assert rl("images", "-q").out == ""
        proxy.clear()
        rl("pull", ref)
        assert rl.store.resolve(ref).id == image.config_digest
        assert rl.store.check() == []
    finally:
        proxy.close()


class SlowProxy:
    """Forwards to a registry, sending blob bodies slowly (``rate`` bytes per second)."""

    def __init__(self, upstream: str, rate: int) -> None:
        self.upstream = upstream
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "range")}
                    conn.request("GET", self.path, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = [(k, v) for k, v in resp.getheaders()
                           if k.lower() not in ("connection", "transfer-encoding", "content-length",
                                                "accept-ranges")]
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for k, v in out:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                slow = "/blobs/" in self.path and len(data) > 100_000
                step = 16 * 1024
                try:
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i:i + step])
                        if slow:
                            self.wfile.flush()
                            time.sleep(step / rate)
                except OSError:
                    pass

            do_HEAD = do_GET

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_kill_9_mid_pull_leaves_no_image(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["busybox"]
    proxy = SlowProxy(image.registry, rate=256 * 1024)
    try:
        ref = f"{proxy.host}/{image.repository}:{image.tag}"
        proc = rl.popen("pull", ref)
        tmp = rl.root / "tmp"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            blobs = [p for p in tmp.glob("blob-*") if not p.name.endswith(".lock")] if tmp.exists() else []
            if any(p.stat().st_size > 64 * 1024 for p in blobs if p.exists()):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        else:
            raise AssertionError("the download never started")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert rl("images", "-q").out == ""
        problems = rl.store.check()
        assert problems and all(p.kind == "tmp-stale" for p in problems), problems
        rl.in_namespace(f"from rootless.image.store import Store\nStore({str(rl.root)!r}).repair()\n")
        assert rl.store.check() == []
        rl("pull", ref)
        assert rl.store.resolve(ref).id == image.config_digest
        assert rl.store.check() == []
    finally:
        proxy.close()


def test_two_concurrent_pulls_both_succeed(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multilayer"]
    procs = [rl.popen("pull", image.reference) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        assert out.decode().splitlines()[-1] == image.reference
    assert rl.store.resolve(image.reference).id == image.config_digest
    assert len(rl("images", "-q").out.split()) == 1
    assert rl.store.check() == []


# ------------------------------------------------------------------------------- rmi, tag


def test_rmi_refuses_an_image_a_container_uses(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["busybox"]
    rl("pull", image.reference)
    rec = rl.store.resolve(image.reference)
    ContainerStore(rl.root).create(ContainerRecord(id=new_id(), name="user1", image=image.reference,
                                                   image_id=rec.id, created=now_rfc3339()))
    refused = rl("rmi", image.reference, rc=125)
    assert len(refused.err.strip().splitlines()) == 1 and "container" in refused.err
    assert rl.store.resolve(image.reference).id == rec.id
    forced = rl("rmi", "-f", image.reference)
    assert f"Untagged: {image.reference}" in forced.out
    assert rl.store.resolve(rec.id).id == rec.id  # kept for its container
    assert rl("images", "--format", "{{.Repository}}:{{.Tag}}").out.split() == ["<none>:<none>"]


def test_tag_and_rmi_by_id(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["busybox"]
    rl("pull", image.reference)
    rl("tag", image.reference, "localhost/mine:1")
    names = rl("images", "--format", "{{.Repository}}:{{.Tag}}").out.split()
    assert sorted(names) == sorted([image.reference, "localhost/mine:1"])
    short = image.config_digest[7:19]
    rl("rmi", short, rc=125)  # two names: needs -f
    out = rl("rmi", "-f", short).out
    assert f"Deleted: {image.config_digest}" in out
    assert rl("images", "-q").out == ""
    assert rl.store.check() == []


# ------------------------------------------------------------------------------ save, load


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_load_round_trip(rl: RlEnv, fixture_images: dict[str, FixtureImage], tmp_path: Path,
                              fmt: str) -> None:
    image = fixture_images["multilayer"]
    rl("pull", image.reference)
    archive = tmp_path / f"image-{fmt}.tar"
    rl("save", "--format", fmt, "-o", str(archive), image.reference)
    assert archive.stat().st_size > 100_000
    rl("rmi", image.reference)
    assert rl("images", "-q").out == ""
    out = rl("load", "-i", str(archive)).out
    assert f"Loaded image: {image.reference}" in out
    rec = rl.store.resolve(image.reference)
    assert rec.id == image.config_digest and rec.diff_ids == image.diff_ids
    assert rl.store.check() == []
    # stdin works too, and stdout for save
    saved = subprocess.run(rl.argv("save", "--format", fmt, image.reference), env=rl.env, capture_output=True,
                           check=True).stdout
    rl("rmi", image.reference)
    assert "Loaded image" in rl("load", input=saved).out


def _docker_archive(build: Any, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(path: str, data: bytes) -> None:
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        config = build.config.read()
        layers = []
        for blob in build.layers:
            path = f"{blob.diff_id[7:]}/layer.tar"
            add(path, decompress_layer(blob.media_type, blob.read()))
            layers.append(path)
        add(f"{build.config.digest[7:]}.json", config)
        add("manifest.json", json.dumps([{"Config": f"{build.config.digest[7:]}.json", "RepoTags": [name],
                                          "Layers": layers}]).encode())
    return buf.getvalue()


def _oci_archive(build: Any, name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        def add(path: str, data: bytes) -> None:
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for blob in [*build.layers, build.config, build.manifest]:
            add(f"blobs/sha256/{blob.digest[7:]}", blob.read())
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [{**build.manifest.descriptor(),
                                "annotations": {"org.opencontainers.image.ref.name": name}}]}
        add("index.json", json.dumps(index).encode())
    return buf.getvalue()


@pytest.mark.parametrize("layout", ["docker", "oci"])
def test_load_archives_built_by_the_fixtures(rl: RlEnv, tmp_path: Path, layout: str) -> None:
    build = STANDARD_IMAGES["multilayer"]()
    name = "localhost/fixture/multilayer:loaded"
    data = _docker_archive(build, name) if layout == "docker" else _oci_archive(build, name)
    path = tmp_path / "archive.tar"
    path.write_bytes(data)
    out = rl("load", "-q", "-i", str(path)).out
    assert f"Loaded image: {name}" in out
    rec = rl.store.resolve(name)
    assert rec.id == build.config.digest
    assert rec.diff_ids == [b.diff_id for b in build.layers]
    assert _find(_layer_dirs(rl.store, name), "opt/replaced/c").read_text() == "c\n"
    assert rl.store.check() == []


# ----------------------------------------------------------------------------------- import


@pytest.mark.parametrize("compress", ["plain", "gzip", "zstd"])
def test_import_rootfs_with_changes(rl: RlEnv, tmp_path: Path, compress: str) -> None:
    layer = make_layer(busybox_entries())
    data = layer.tar
    if compress == "gzip":
        data = gzip_bytes(data)
    elif compress == "zstd":
        from tests.fixtures import zstd_bytes

        data = zstd_bytes(data)
    path = tmp_path / "rootfs.tar"
    path.write_bytes(data)
    out = rl("import", "--change", 'CMD ["/bin/sh", "-c", "echo hi"]', "--change", "ENV GREETING=hello",
             "--change", "WORKDIR /tmp", "--change", "USER 1234", "--change", "EXPOSE 8080",
             "--change", "LABEL org.example=yes", "-m", "imported by a test", str(path), "imported:1").out
    image_id = out.strip()
    assert image_id.startswith("sha256:")
    [doc] = json.loads(rl("image", "inspect", "imported:1").out)
    assert doc["Id"] == image_id
    assert doc["Config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert doc["Config"]["Env"] == ["GREETING=hello"]
    assert doc["Config"]["WorkingDir"] == "/tmp"
    assert doc["Config"]["User"] == "1234"
    assert doc["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert doc["Config"]["Labels"] == {"org.example": "yes"}
    assert doc["Comment"] == "imported by a test"
    assert doc["RootFS"]["Layers"] == [layer.diff_id]
    assert rl("import", "-", "fromstdin:1", input=data).out.startswith("sha256:")
    assert rl.store.check() == []


# ----------------------------------------------------------------------------- push, login


def test_push_and_pull_back(rl: RlEnv, fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["multilayer"]
    rl("pull", image.reference)
    dest = f"{image.registry}/rltest/pushed-{uuid.uuid4().hex[:8]}:v1"
    out = rl("push", image.reference, dest).out
    assert f"v1: digest: {image.digest}" in out
    rl("rmi", image.reference)
    rl("pull", dest)
    assert rl.store.resolve(dest).id == image.config_digest


def test_login_checks_the_password(rl: RlEnv, registry_factory: Any, fixture_images: dict[str, FixtureImage]) -> None:
    server = registry_factory(htpasswd_users={"alice": "s3cret"})
    auth_file = rl.config_home / "rl" / "auth.json"
    wrong = rl("login", "-u", "alice", "--password-stdin", server.address, input="nope\n", rc=125)
    assert len(wrong.err.strip().splitlines()) == 1 and "alice" in wrong.err
    assert not auth_file.exists() or server.address not in auth_file.read_text()
    ok = rl("login", "-u", "alice", "--password-stdin", server.address, input="s3cret\n")
    assert "Login Succeeded" in ok.out
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert server.address in json.loads(auth_file.read_text())["auths"]
    # The stored credentials are used: push an image there and pull it back.
    image = fixture_images["busybox"]
    rl("pull", image.reference)
    dest = f"{server.address}/private/busybox:1"
    rl("push", image.reference, dest)
    rl("pull", dest)
    assert rl.store.resolve(dest).id == image.config_digest
    assert "Removed login credentials" in rl("logout", server.address).out
    rl("rmi", dest)
    denied = rl("pull", dest, rc=125)
    assert len(denied.err.strip().splitlines()) == 1 and "rl login" in denied.err


def test_short_name_search_tries_the_next_registry(rl: RlEnv, registry_factory: Any,
                                                   fixture_images: dict[str, FixtureImage]) -> None:
    image = fixture_images["busybox"]
    empty = registry_factory()
    (rl.tmp / "etc-rl.toml").write_text(f'[registries]\nsearch = ["{empty.address}", "{image.registry}"]\n')
    out = rl("pull", "rltest/busybox").out
    assert out.splitlines()[-1] == image.reference
    assert rl("image", "exists", "rltest/busybox").rc == 0
    assert rl("image", "exists", "rltest/nothing", rc=1).rc == 1
