"""RegistryClient against real docker-registry processes on 127.0.0.1: push/pull, Basic and token
auth, retries, resumed and restarted downloads, digest verification, redirects and mirrors."""

from __future__ import annotations

import base64
import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.errors import AuthError, ImageError, NotFoundError, RegistryError
from rootless.image import manifest as m
from rootless.image.auth import CredentialResolver, Credentials, login
from rootless.image.platform import Platform
from rootless.image.registry import BytesSink, FileSink, RegistryClient

try:
    import registry_auth as ra
except ImportError:  # tests/integration is a package
    from . import registry_auth as ra  # type: ignore[no-redef]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(ra.REGISTRY_BIN is None or shutil.which("openssl") is None
                       or shutil.which("htpasswd") is None,
                       reason="needs docker-registry, openssl and htpasswd"),
]

FAST = {"backoff": 0.01, "max_backoff": 0.05, "max_retry_after": 2.0}


def client(host: str, **kw: object) -> RegistryClient:
    return RegistryClient(host, **{**FAST, **kw})  # type: ignore[arg-type]


def push(c: RegistryClient, repo: str, img: ra.TinyImage, tag: str = "latest") -> str:
    for digest, data in img.blobs():
        if not c.blob_exists(repo, digest):
            c.upload_blob(repo, digest, io.BytesIO(data), len(data))
    return c.put_manifest(repo, tag, img.manifest, img.media_type)


def pull(c: RegistryClient, repo: str, ref: str) -> tuple[m.ImageManifest, list[bytes], m.ImageConfig]:
    body, media_type, _ = c.get_manifest(repo, ref)
    man = m.parse_manifest(body, media_type, f"{repo}:{ref}")
    assert isinstance(man, m.ImageManifest)
    layers = []
    for layer in man.layers:
        sink = BytesSink()
        c.fetch_blob(repo, layer.digest, layer.size, sink)
        layers.append(sink.getvalue())
    cfg = m.parse_config(c.fetch_blob_bytes(repo, man.config.digest, man.config.size), repo, len(man.layers))
    return man, layers, cfg


@pytest.fixture(scope="module")
def image() -> ra.TinyImage:
    # One small layer and one of 1.5 MiB random bytes (gzip cannot shrink it), so transfers take chunks.
    return ra.make_image([{"etc/hello": b"hello\n"}, {"big.bin": os.urandom(1536 * 1024)}])


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, image: ra.TinyImage) -> Iterator[ra.Registry]:
    with ra.running_registry(tmp_path_factory.mktemp("plain")) as reg:
        with client(reg.host) as c:
            push(c, "test/img", image, "v1")
        yield reg


@pytest.fixture
def proxy(plain: ra.Registry) -> Iterator[ra.FaultProxy]:
    p = ra.FaultProxy(plain.host)
    yield p
    p.close()


def blob_gets(p: ra.FaultProxy, digest: str) -> list[dict[str, str]]:
    return [h for (meth, path, h) in p.requests if meth == "GET" and path.endswith(f"/blobs/{digest}")]


# ------------------------------------------------------------------------------- push and pull


def test_push_pull_roundtrip(plain: ra.Registry, image: ra.TinyImage) -> None:
    with client(plain.host) as c:
        _man, layers, cfg = pull(c, "test/img", "v1")
        assert layers == image.layers
        assert cfg.cmd == ("/bin/sh",) and len(cfg.diff_ids) == 2
        body, media_type, digest = c.get_manifest("test/img", image.manifest_digest)
        assert (body, media_type, digest) == (image.manifest, m.DOCKER_MANIFEST, image.manifest_digest)
        assert c.head_manifest("test/img", "v1") == (image.manifest_digest, m.DOCKER_MANIFEST, len(image.manifest))
        assert c.head_manifest("test/img", "nope") is None
        assert c.list_tags("test/img") == ["v1"]


def test_oci_chunked_upload_mount_and_progress(plain: ra.Registry) -> None:
    img = ra.make_image([{"a": os.urandom(300 * 1024)}], oci=True)
    seen: list[tuple[int, int]] = []
    with client(plain.host) as c:
        layer_digest, layer = img.blobs()[0]
        c.upload_blob("test/oci", layer_digest, io.BytesIO(layer), len(layer), chunk_size=100 * 1024,
                      progress=lambda done, total: seen.append((done, total)))
        assert seen[-1] == (len(layer), len(layer)) and len(seen) >= 3
        push(c, "test/oci", img, "1")
        man, layers, _ = pull(c, "test/oci", "1")
        assert man.media_type == m.OCI_MANIFEST and layers == img.layers
        assert c.mount_blob("test/mounted", layer_digest, "test/oci") is True
        assert c.blob_exists("test/mounted", layer_digest)
        missing = "sha256:" + "0" * 64
        assert c.mount_blob("test/mounted", missing, "test/oci") is False
        assert not c.blob_exists("test/mounted", missing)
        progress: list[int] = []
        sink = BytesSink()
        c.fetch_blob("test/oci", layer_digest, len(layer), sink, progress=lambda d, t: progress.append(d))
        assert progress[-1] == len(layer) and sink.getvalue() == layer


def test_index_push_and_platform_choice(plain: ra.Registry) -> None:
    amd, arm = ra.make_image([{"x": b"amd"}], oci=True), ra.make_image([{"x": b"arm"}], oci=True, arch="arm64")
    with client(plain.host) as c:
        entries = []
        for img, arch in ((amd, "amd64"), (arm, "arm64")):
            digest = push(c, "test/multi", img, arch)
            entries.append({"mediaType": m.OCI_MANIFEST, "digest": digest, "size": len(img.manifest),
                            "platform": {"os": "linux", "architecture": arch}})
        index = m.json.dumps({"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": entries}).encode()
        c.put_manifest("test/multi", "latest", index, m.OCI_INDEX)
        body, media_type, _ = c.get_manifest("test/multi", "latest")
        parsed = m.parse_manifest(body, media_type, "test/multi")
        assert isinstance(parsed, m.ImageIndex)
        chosen = m.choose_platform(parsed, Platform("linux", "arm64", "v8"), "test/multi")
        assert chosen.digest == arm.manifest_digest
        with pytest.raises(ImageError, match="available linux/amd64, linux/arm64"):
            m.choose_platform(parsed, Platform("linux", "s390x"), "test/multi")


def test_not_found(plain: ra.Registry) -> None:
    with client(plain.host) as c:
        with pytest.raises(NotFoundError, match=r"manifest for .*test/img:missing not found"):
            c.get_manifest("test/img", "missing")
        with pytest.raises(NotFoundError, match=r"blob sha256:0+ not found"):
            c.fetch_blob("test/img", "sha256:" + "0" * 64, 10, BytesSink())


def test_parallel_downloads_share_a_client(plain: ra.Registry, image: ra.TinyImage) -> None:
    errors: list[BaseException] = []
    results: list[bytes] = []
    with client(plain.host) as c:
        def work() -> None:
            try:
                for digest, data in image.blobs():
                    sink = BytesSink()
                    c.fetch_blob("test/img", digest, len(data), sink)
                    results.append(sink.getvalue())
            except BaseException as e:
                errors.append(e)
        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and len(results) == 6 * len(image.blobs())


# ------------------------------------------------------------------------------------ Basic auth


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ra.Registry]:
    d = tmp_path_factory.mktemp("basic")
    htpasswd = ra.write_htpasswd(d / "htpasswd", {"alice": "s3cret"})
    with ra.running_registry(d, {"htpasswd": {"realm": "rl-test", "path": str(htpasswd)}}) as reg:
        yield reg


def test_basic_auth_good_password(basic_registry: ra.Registry, image: ra.TinyImage, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    auth_file = tmp_path / "auth.json"
    login(auth_file, basic_registry.host, "alice", "s3cret")
    resolver = CredentialResolver(auth_file, environ={"HOME": str(tmp_path)})
    with caplog.at_level(logging.DEBUG, logger="rl"), client(basic_registry.host, credentials=resolver) as c:
        push(c, "private/img", image)
        _, layers, _ = pull(c, "private/img", "latest")
        assert layers == image.layers
    assert "using credentials for" in caplog.text
    assert "s3cret" not in caplog.text and base64.b64encode(b"alice:s3cret").decode() not in caplog.text


def test_basic_auth_wrong_password(basic_registry: ra.Registry) -> None:
    with client(basic_registry.host, credentials=Credentials("alice", "wrong")) as c, \
            pytest.raises(AuthError) as info:
        c.get_manifest("private/img", "latest")
    assert info.value.message.startswith(f"authentication to {basic_registry.host} failed: ")
    assert "'alice'" in info.value.message and "wrong" not in info.value.message
    assert info.value.hint is not None and "rl login" in info.value.hint


def test_basic_auth_no_credentials(basic_registry: ra.Registry) -> None:
    with client(basic_registry.host) as c, pytest.raises(AuthError, match="needs credentials"):
        c.get_manifest("private/img", "latest")


# ------------------------------------------------------------------------------------ token auth


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ra.TokenIssuer]:
    tok = ra.TokenIssuer(tmp_path_factory.mktemp("issuer"), {"alice": "tok-secret-pw"},
                         refresh_tokens={"refresh-1": "alice"})
    yield tok
    tok.close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory, issuer: ra.TokenIssuer,
                   image: ra.TinyImage) -> Iterator[ra.Registry]:
    with ra.running_registry(tmp_path_factory.mktemp("token"), issuer.registry_auth()) as reg:
        with client(reg.host, credentials=Credentials("alice", "tok-secret-pw")) as c:
            push(c, "public/img", image)
            push(c, "private/img", image)
        yield reg


def test_token_auth_credentialed(token_registry: ra.Registry, issuer: ra.TokenIssuer, image: ra.TinyImage,
                                 caplog: pytest.LogCaptureFixture) -> None:
    issuer.requests.clear()
    with caplog.at_level(logging.DEBUG, logger="rl"), \
            client(token_registry.host, credentials=Credentials("alice", "tok-secret-pw")) as c:
        _, layers, _ = pull(c, "private/img", "latest")
    assert layers == image.layers
    assert "token for" in caplog.text and "tok-secret-pw" not in caplog.text
    assert "eyJ" not in caplog.text  # no JWT in the log
    # One token for the pull scope, cached for the manifest and every blob.
    assert len(issuer.requests) == 1
    req = issuer.requests[0]
    assert req["user"] == "alice" and req["params"]["scope"] == ["repository:private/img:pull"]
    assert req["params"]["service"] == ["rl-test-registry"]
    assert req["authorization"] == "Basic " + base64.b64encode(b"alice:tok-secret-pw").decode()


def test_token_auth_anonymous(token_registry: ra.Registry, issuer: ra.TokenIssuer, image: ra.TinyImage) -> None:
    with client(token_registry.host) as c:
        _, layers, _ = pull(c, "public/img", "latest")
        assert layers == image.layers
        with pytest.raises(AuthError, match="needs credentials, or the repository does not exist"):
            c.get_manifest("private/img", "latest")


def test_token_auth_wrong_password(token_registry: ra.Registry) -> None:
    with client(token_registry.host, credentials=Credentials("alice", "nope")) as c, \
            pytest.raises(AuthError) as info:
        c.get_manifest("private/img", "latest")
    assert info.value.message == (f"authentication to {token_registry.host} failed: "
                                  "the token service rejected the credentials of user 'alice'")
    assert "nope" not in info.value.line()


def test_token_auth_identity_token(token_registry: ra.Registry, issuer: ra.TokenIssuer) -> None:
    issuer.requests.clear()
    with client(token_registry.host, credentials=Credentials("", identity_token="refresh-1")) as c:
        c.get_manifest("private/img", "latest")
    assert issuer.requests[0]["method"] == "POST"
    assert issuer.requests[0]["params"]["grant_type"] == ["refresh_token"]
    with client(token_registry.host, credentials=Credentials("", identity_token="bad")) as c, \
            pytest.raises(AuthError):
        c.get_manifest("private/img", "latest")


def test_token_access_token_field(tmp_path: Path, image: ra.TinyImage) -> None:
    tok = ra.TokenIssuer(tmp_path / "iss", {"bob": "pw"}, access_token_field=True)
    try:
        with ra.running_registry(tmp_path / "reg", tok.registry_auth()) as reg, \
                client(reg.host, credentials=Credentials("bob", "pw")) as c:
            push(c, "bob/img", image)
            assert pull(c, "bob/img", "latest")[1] == image.layers
    finally:
        tok.close()


def test_token_auth_through_redirect_drops_authorization(
        token_registry: ra.Registry, image: ra.TinyImage) -> None:
    store = ra.StaticServer()
    p = ra.FaultProxy(token_registry.host)
    try:
        digest, data = image.blobs()[1]
        store.files["/blob"] = data
        p.add("redirect", f"GET /v2/private/img/blobs/{digest}", location=store.url("/blob"))
        with client(p.host, credentials=Credentials("alice", "tok-secret-pw")) as c:
            sink = BytesSink()
            c.fetch_blob("private/img", digest, len(data), sink)
        assert sink.getvalue() == data
        assert blob_gets(p, digest)[0]["Authorization"].startswith("Bearer ")
        assert len(store.requests) == 1 and "Authorization" not in store.requests[0][1]
    finally:
        p.close()
        store.close()


# ------------------------------------------------------------------------------- faults and retries


def test_retry_on_500(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    proxy.add("status", "GET /v2/test/img/manifests/v1", times=2, status=500)
    with client(proxy.host) as c:
        assert c.get_manifest("test/img", "v1")[0] == image.manifest
    assert sum(1 for meth, path, _ in proxy.requests if path.endswith("/manifests/v1")) == 3


def test_retry_after_on_429(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[0]
    proxy.add("status", f"GET /v2/test/img/blobs/{digest}", status=429, headers={"Retry-After": "1"})
    with client(proxy.host) as c:
        start = time.monotonic()
        sink = BytesSink()
        c.fetch_blob("test/img", digest, len(data), sink)
        assert time.monotonic() - start >= 0.9
    assert sink.getvalue() == data


def test_retry_after_is_capped(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    proxy.add("status", "GET /v2/test/img/manifests/v1", status=429, headers={"Retry-After": "3600"})
    with client(proxy.host, max_retry_after=0.1) as c:
        start = time.monotonic()
        c.get_manifest("test/img", "v1")
        assert time.monotonic() - start < 5


def test_gives_up_after_max_attempts(proxy: ra.FaultProxy) -> None:
    proxy.add("status", "GET /v2/test/img/manifests/v1", times=None, status=503)
    with client(proxy.host, max_attempts=3) as c, pytest.raises(RegistryError, match="failed after 3 attempts"):
        c.get_manifest("test/img", "v1")
    assert sum(1 for _, path, _ in proxy.requests if path.endswith("/manifests/v1")) == 3


def test_unreachable_registry() -> None:
    with client(f"127.0.0.1:{ra.free_port()}", max_attempts=2) as c, \
            pytest.raises(RegistryError, match="cannot reach"):
        c.get_manifest("x/y", "latest")


def test_truncated_blob_resumes_with_range(proxy: ra.FaultProxy, image: ra.TinyImage, tmp_path: Path) -> None:
    digest, data = image.blobs()[1]
    proxy.add("truncate", f"GET /v2/test/img/blobs/{digest}")
    restarts = []

    class Sink(FileSink):
        def restart(self) -> None:
            restarts.append(1)
            super().restart()

    with open(tmp_path / "blob", "w+b") as f, client(proxy.host) as c:
        c.fetch_blob("test/img", digest, len(data), Sink(f))
    assert (tmp_path / "blob").read_bytes() == data
    gets = blob_gets(proxy, digest)
    assert len(gets) == 2 and "Range" not in gets[0]
    assert gets[1]["Range"].startswith("bytes=") and int(gets[1]["Range"][6:-1]) > 0
    assert restarts == []


def test_truncated_blob_restarts_without_ranges(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[1]
    proxy.add("truncate", f"GET /v2/test/img/blobs/{digest}")
    proxy.add("no-ranges", f"GET /v2/test/img/blobs/{digest}", times=None)
    restarts = []

    class Sink(BytesSink):
        def restart(self) -> None:
            restarts.append(len(self.buf))
            super().restart()

    sink = Sink()
    with client(proxy.host) as c:
        c.fetch_blob("test/img", digest, len(data), sink)
    assert sink.getvalue() == data
    assert len(restarts) == 1 and restarts[0] > 0
    assert all("Range" not in h for h in blob_gets(proxy, digest))


def test_callable_sink_resumes_but_cannot_restart(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[1]
    got = bytearray()
    proxy.add("truncate", f"GET /v2/test/img/blobs/{digest}")
    with client(proxy.host) as c:
        c.fetch_blob("test/img", digest, len(data), got.extend)
        assert bytes(got) == data
        proxy.add("truncate", f"GET /v2/test/img/blobs/{digest}")
        proxy.add("no-ranges", f"GET /v2/test/img/blobs/{digest}", times=None)
        with pytest.raises(RegistryError, match="cannot be resumed"):
            c.fetch_blob("test/img", digest, len(data), bytearray().extend)


def test_corrupt_blob_once_is_fetched_again(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[1]
    proxy.add("corrupt", f"GET /v2/test/img/blobs/{digest}")
    sink = BytesSink()
    with client(proxy.host) as c:
        c.fetch_blob("test/img", digest, len(data), sink)
    assert sink.getvalue() == data and len(blob_gets(proxy, digest)) == 2


def test_corrupt_blob_fails_digest_check(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[1]
    proxy.add("corrupt", f"GET /v2/test/img/blobs/{digest}", times=None)
    with client(proxy.host) as c, pytest.raises(ImageError) as info:
        c.fetch_blob("test/img", digest, len(data), BytesSink())
    assert f"blob {digest}" in info.value.message
    assert f"expected {digest}, got sha256:" in info.value.message


def test_wrong_size_is_an_error(plain: ra.Registry, image: ra.TinyImage) -> None:
    digest, data = image.blobs()[1]
    with client(plain.host) as c:
        with pytest.raises(ImageError, match="larger than its size"):
            c.fetch_blob("test/img", digest, len(data) - 10, BytesSink())
        expected = f"smaller than its size: expected {len(data) + 10} bytes, got {len(data)}"
        with pytest.raises(ImageError, match=expected):
            c.fetch_blob("test/img", digest, len(data) + 10, BytesSink())


def test_corrupt_manifest(proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    proxy.add("corrupt", "GET /v2/test/img/manifests/", times=None)
    with client(proxy.host) as c:
        with pytest.raises(ImageError, match="does not match its digest"):
            c.get_manifest("test/img", image.manifest_digest)
        with pytest.raises(ImageError, match="does not match the registry's digest"):
            c.get_manifest("test/img", "v1")


# ----------------------------------------------------------------------------------------- mirrors


def test_mirror_is_used_first(plain: ra.Registry, proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    with client(plain.host, mirrors=[proxy.host]) as c:
        _, layers, _ = pull(c, "test/img", "v1")
    assert layers == image.layers
    assert any(path.endswith("/manifests/v1") for _, path, _ in proxy.requests)
    assert len([1 for meth, path, _ in proxy.requests if "/blobs/" in path]) == 3


def test_mirror_failures_fall_back(plain: ra.Registry, proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    dead = f"127.0.0.1:{ra.free_port()}"
    proxy.add("status", "/v2/test/img/", times=None, status=404)
    with client(plain.host, mirrors=[dead, f"http://{proxy.host}"], max_attempts=2) as c:
        _, layers, _ = pull(c, "test/img", "v1")
    assert layers == image.layers


def test_mirror_with_prefix(plain: ra.Registry, proxy: ra.FaultProxy, image: ra.TinyImage) -> None:
    # "host/test" as a mirror serves repository "img" as "test/img".
    with client("registry.invalid", mirrors=[f"{proxy.host}/test"], max_attempts=1) as c:
        body, _, _ = c.get_manifest("img", "v1")
    assert body == image.manifest


# --------------------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ra.Registry, Path]]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = ra.make_tls_cert(d)
    with ra.running_registry(d, tls=(cert, key)) as reg:
        yield reg, cert


def test_tls_verification_failure_is_not_retried(tls_registry: tuple[ra.Registry, Path]) -> None:
    reg, _ = tls_registry
    with client(reg.host, max_attempts=5) as c:
        start = time.monotonic()
        with pytest.raises(RegistryError) as info:
            c.get_manifest("x/y", "latest")
        assert time.monotonic() - start < 5
    assert info.value.message.startswith(f"tls verification of {reg.host} failed: certificate verify failed")
    assert info.value.hint is not None and "tls-verify" in info.value.hint


@pytest.mark.parametrize("mode", ["tls_verify_false", "insecure", "ca_file"])
def test_tls_registry(tls_registry: tuple[ra.Registry, Path], image: ra.TinyImage, mode: str) -> None:
    reg, cert = tls_registry
    kw: dict[str, object] = {"tls_verify_false": {"tls_verify": False}, "insecure": {"insecure": True},
                             "ca_file": {"ca_files": [str(cert)]}}[mode]  # type: ignore[assignment]
    with client(reg.host, **kw) as c:
        push(c, f"tls/{mode.replace('_', '-')}", image)
        assert pull(c, f"tls/{mode.replace('_', '-')}", "latest")[1] == image.layers
        assert c._main.base == f"https://{reg.host}"
