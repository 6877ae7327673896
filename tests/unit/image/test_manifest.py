"""Manifest, index and config parsing: what a pull trusts is validated with one-line reasons."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rootless.errors import ImageError
from rootless.image import manifest as m
from rootless.image.platform import Platform

W = "docker.io/library/x:latest"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def image_manifest(media_type: str = m.DOCKER_MANIFEST, layer_type: str = m.DOCKER_LAYER_GZIP,
                   **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": m.DOCKER_CONFIG, "digest": D1, "size": 100},
        "layers": [{"mediaType": layer_type, "digest": D2, "size": 2000}],
    }
    doc.update(overrides)
    return doc


def index(media_type: str = m.OCI_INDEX, platforms: list[dict[str, str]] | None = None,
          extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    plats = platforms if platforms is not None else [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ]
    entries = [{"mediaType": m.OCI_MANIFEST, "digest": "sha256:" + f"{i:x}" * 64, "size": 500, "platform": p}
               for i, p in enumerate(plats, start=4)]
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": entries + (extra or [])}


def parse(doc: dict[str, Any] | bytes, content_type: str | None = None) -> m.ImageManifest | m.ImageIndex:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return m.parse_manifest(body, content_type, W)


def fails(doc: dict[str, Any] | bytes, match: str, content_type: str | None = None) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        parse(doc, content_type)
    assert "\n" not in info.value.message and info.value.hint
    return info.value


@pytest.mark.parametrize(("mt", "lt", "compression"), [
    (m.DOCKER_MANIFEST, m.DOCKER_LAYER_GZIP, "gzip"),
    (m.DOCKER_MANIFEST, m.DOCKER_LAYER, "none"),
    (m.OCI_MANIFEST, m.OCI_LAYER_GZIP, "gzip"),
    (m.OCI_MANIFEST, m.OCI_LAYER_ZSTD, "zstd"),
    (m.OCI_MANIFEST, m.OCI_LAYER, "none"),
])
def test_image_manifests(mt: str, lt: str, compression: str) -> None:
    man = parse(image_manifest(mt, lt), mt + "; charset=utf-8")
    assert isinstance(man, m.ImageManifest)
    assert man.media_type == mt
    assert man.config.digest == D1 and man.config.size == 100
    assert [(layer.digest, layer.size, layer.compression) for layer in man.layers] == [(D2, 2000, compression)]


def test_media_type_from_header_or_body_or_shape() -> None:
    doc = image_manifest(m.OCI_MANIFEST)
    del doc["mediaType"]
    assert parse(doc, m.OCI_MANIFEST).media_type == m.OCI_MANIFEST
    assert parse(doc, "application/octet-stream").media_type == m.OCI_MANIFEST  # by shape
    assert parse(image_manifest(), "application/json").media_type == m.DOCKER_MANIFEST  # by body
    idx = index()
    del idx["mediaType"]
    assert isinstance(parse(idx, None), m.ImageIndex)


def test_media_type_mismatch() -> None:
    fails(image_manifest(m.DOCKER_MANIFEST), "says", m.OCI_MANIFEST)


def test_schema1_rejected() -> None:
    fails({"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}, "schema 1")
    fails(image_manifest(), "schema 1", m.DOCKER_SCHEMA1_SIGNED)
    fails({"schemaVersion": 2, "mediaType": m.DOCKER_SCHEMA1}, "schema 1")


@pytest.mark.parametrize(("body", "match"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8|not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b"x" * (m.MAX_MANIFEST_SIZE + 1), "too large"),
])
def test_malformed_json(body: bytes, match: str) -> None:
    fails(body, match)


@pytest.mark.parametrize(("change", "match"), [
    ({"schemaVersion": 3}, "schemaVersion"),
    ({"mediaType": "application/vnd.example.thing+json"}, "unsupported manifest type"),
    ({"config": None}, "config must be an object"),
    ({"layers": None}, "no layers"),
    ({"layers": {"a": 1}}, "no layers"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": D1}}, "size is missing"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": D1, "size": -1}}, "negative"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": D1, "size": "12"}}, "not an integer"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": D1, "size": True}}, "not an integer"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": D1, "size": 1.5}}, "not an integer"),
    ({"config": {"digest": D1, "size": 1}}, "no mediaType"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "size": 1}}, "missing"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": "sha256:abc", "size": 1}}, "64 lowercase hex"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": "sha256:" + "A" * 64, "size": 1}}, "64 lowercase hex"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": "a" * 64, "size": 1}}, "no algorithm"),
    ({"config": {"mediaType": m.DOCKER_CONFIG, "digest": "sha512:" + "a" * 128, "size": 1}},
     "unsupported digest algorithm 'sha512'"),
    ({"layers": [{"mediaType": m.DOCKER_LAYER_GZIP, "digest": 5, "size": 1}]}, "not a string"),
    ({"layers": [{"mediaType": "application/vnd.example+json", "digest": D2, "size": 1}]},
     "unsupported media type"),
    ({"layers": [{"mediaType": m.DOCKER_LAYER_FOREIGN, "digest": D2, "size": 1,
                  "urls": ["https://go.microsoft.com/x"]}]}, "foreign, non-distributable.*microsoft"),
    ({"layers": [{"mediaType": m.OCI_LAYER_NONDIST_GZIP, "digest": D2, "size": 1}]}, "non-distributable"),
    ({"layers": [{"mediaType": m.OCI_LAYER_GZIP, "digest": D2, "size": 1, "urls": ["https://x"]}]},
     "non-distributable"),
    ({"annotations": {"a": 1}}, "annotations"),
])
def test_invalid_manifests(change: dict[str, Any], match: str) -> None:
    doc = image_manifest(m.OCI_MANIFEST, m.OCI_LAYER_GZIP)
    doc.update(change)
    fails(doc, match)


def test_missing_config() -> None:
    doc = image_manifest()
    del doc["config"]
    fails(doc, "no config")


def test_index_and_choose_platform() -> None:
    idx = parse(index())
    assert isinstance(idx, m.ImageIndex)
    assert [str(p) for p in idx.platforms()] == ["linux/amd64", "linux/arm64"]
    assert m.choose_platform(idx, Platform("linux", "amd64"), W).digest == "sha256:" + "4" * 64
    assert m.choose_platform(idx, Platform("linux", "arm64"), W).digest == "sha256:" + "5" * 64
    with pytest.raises(ImageError) as info:
        m.choose_platform(idx, Platform("linux", "s390x"), W)
    assert info.value.message == f"no image for linux/s390x in {W}: available linux/amd64, linux/arm64"


def test_choose_platform_variants_and_attestations() -> None:
    attestation = {"mediaType": m.OCI_MANIFEST, "digest": D3, "size": 10,
                   "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
    idx = parse(index(platforms=[{"os": "linux", "architecture": "arm", "variant": "v6"},
                                 {"os": "linux", "architecture": "arm", "variant": "v7"}],
                      extra=[attestation]))
    assert isinstance(idx, m.ImageIndex)
    assert m.choose_platform(idx, Platform("linux", "arm", "v8"), W).platform == Platform("linux", "arm", "v7")
    assert m.choose_platform(idx, Platform("linux", "arm", "v6"), W).platform == Platform("linux", "arm", "v6")
    with pytest.raises(ImageError, match=r"available linux/arm/v6, linux/arm/v7$"):
        m.choose_platform(idx, Platform("linux", "amd64"), W)


def test_docker_manifest_list_requires_platforms() -> None:
    doc = index(m.DOCKER_MANIFEST_LIST)
    doc["manifests"][0].pop("platform")
    fails(doc, "no platform")
    bad = index(m.DOCKER_MANIFEST_LIST, platforms=[{"os": "linux"}])
    fails(bad, "os and architecture")


def test_index_requires_manifests() -> None:
    fails({"schemaVersion": 2, "mediaType": m.OCI_INDEX}, "no manifests")


# ------------------------------------------------------------------------------------- configs


def config(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "arm64", "os": "linux", "variant": "v8", "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin", "A=b"], "Cmd": ["sh", "-c", "x"], "Entrypoint": ["/init"],
            "WorkingDir": "/srv", "User": "1000:1000", "Labels": {"a": "b"},
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGINT",
        },
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [{"created_by": "ADD x"}, {"created_by": "ENV a", "empty_layer": True}, {"created_by": "RUN"}],
    }
    doc.update(overrides)
    return doc


def test_config_fields() -> None:
    c = m.parse_config(json.dumps(config()).encode(), W, layer_count=2)
    assert c.env == ("PATH=/bin", "A=b")
    assert c.cmd == ("sh", "-c", "x") and c.entrypoint == ("/init",)
    assert (c.working_dir, c.user, c.stop_signal) == ("/srv", "1000:1000", "SIGINT")
    assert c.labels == {"a": "b"}
    assert c.exposed_ports == ("80/tcp", "53/udp") and c.volumes == ("/data",)
    assert c.diff_ids == (D1, D2)
    assert [h.empty_layer for h in c.history] == [False, True, False]
    assert str(c.platform) == "linux/arm64"


def test_config_minimal() -> None:
    c = m.parse_config(json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}).encode(), W, layer_count=0)
    assert c.cmd is None and c.entrypoint is None and c.env == () and c.labels == {}


@pytest.mark.parametrize(("change", "match"), [
    ({"rootfs": None}, "rootfs is missing"),
    ({"rootfs": {"type": "other", "diff_ids": []}}, "rootfs type"),
    ({"rootfs": {"type": "layers"}}, "diff_ids is missing"),
    ({"rootfs": {"type": "layers", "diff_ids": [D1]}}, "1 diff_ids for 2 layers"),
    ({"rootfs": {"type": "layers", "diff_ids": [D1, "sha256:zz"]}}, "diff_ids"),
    ({"config": {"Env": "A=b"}}, None),  # tolerated: a bare string
    ({"config": {"Env": [1]}}, "Env must be a list"),
    ({"config": {"Cmd": {"a": 1}}}, "Cmd must be a list"),
    ({"config": {"Labels": []}}, "Labels must be an object"),
    ({"config": {"ExposedPorts": ["80"]}}, "ExposedPorts must be an object"),
    ({"config": {"User": 0}}, "User must be a string"),
    ({"config": []}, "config must be an object"),
    ({"history": {}}, "history must be a list"),
])
def test_config_invalid(change: dict[str, Any], match: str | None) -> None:
    body = json.dumps(config(**change)).encode()
    if match is None:
        m.parse_config(body, W, layer_count=2)
        return
    with pytest.raises(ImageError, match=match):
        m.parse_config(body, W, layer_count=2)


def test_config_not_json() -> None:
    with pytest.raises(ImageError, match="invalid image config"):
        m.parse_config(b"nope", W)


def test_digest_helpers() -> None:
    assert m.sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    m.verify_digest(b"", m.sha256_digest(b""), "blob", W)
    with pytest.raises(ImageError, match="does not match its digest"):
        m.verify_digest(b"x", m.sha256_digest(b""), "blob", W)
