"""rl save / rl load: docker-archive and oci-archive, both directions, and archives made by hand in
the layouts docker and podman write."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from rootless.errors import ImageError
from rootless.image.archive import (
    DOCKER_ARCHIVE,
    OCI_ARCHIVE,
    ArchiveReader,
    import_rootfs,
    load_archive,
    save_archive,
    saving_to,
)
from rootless.image.store import Store
from tests.unit.image.hostile import E, build_image, gz, sha256, tar_of

BASE = [E("bin/", kind="dir"), E("bin/sh", data=b"shell", mode=0o755), E("etc/", kind="dir"), E("etc/os", data=b"t")]
APP = [E("app/", kind="dir"), E("app/run", data=b"run", mode=0o755), E("etc/.wh.os")]


def tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def config_for(tars: list[bytes]) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
        }
    ).encode()


@pytest.mark.parametrize("fmt", [DOCKER_ARCHIVE, OCI_ARCHIVE])
def test_save_load_round_trip(fmt: str, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    rec = build_image(src, [BASE, APP], names=["docker.io/library/demo:1"])
    out = tmp_path / "demo.tar"
    with saving_to(out) as f:
        save_archive(src, [(rec, ["docker.io/library/demo:1"])], f, fmt)
    with ArchiveReader(out) as ar:
        assert ar.format == fmt
    dst = Store(tmp_path / "dst")
    loaded = load_archive(dst, out)
    assert len(loaded) == 1
    got = loaded[0].record
    assert got.id == rec.id
    assert got.diff_ids == rec.diff_ids
    assert got.repo_tags == ["docker.io/library/demo:1"]
    if fmt == OCI_ARCHIVE:
        assert got.manifest_digest == rec.manifest_digest  # blobs travel unchanged
    for diff_id in rec.diff_ids:
        assert tree(dst.layer_dir(diff_id)) == tree(src.layer_dir(diff_id))
    assert dst.check() == []
    # And back again: the loaded image saves too.
    again = tmp_path / "again.tar"
    with saving_to(again) as f:
        save_archive(dst, [(got, got.repo_tags)], f, fmt)
    third = Store(tmp_path / "third")
    assert load_archive(third, again)[0].record.id == rec.id


def test_docker_archive_layout(tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    rec = build_image(src, [BASE], names=["demo:1"])
    buf = io.BytesIO()
    save_archive(src, [(rec, ["demo:1"])], buf, DOCKER_ARCHIVE)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        names = set(tf.getnames())
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        layer = tf.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
        repositories = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
    hexid = rec.diff_ids[0][7:]
    assert manifest == [{"Config": f"{rec.id[7:]}.json", "RepoTags": ["demo:1"], "Layers": [f"{hexid}/layer.tar"]}]
    assert {f"{hexid}/layer.tar", f"{rec.id[7:]}.json", "manifest.json"} <= names
    assert sha256(layer) == rec.diff_ids[0]  # uncompressed, as docker save writes
    assert repositories == {"demo": {"1": hexid}}


def test_load_classic_docker_archive_made_by_hand(tmp_path: Path) -> None:
    tars = [tar_of(BASE), tar_of(APP)]
    config = config_for(tars)
    archive = tmp_path / "old.tar"
    with tarfile.open(archive, "w") as tf:
        add(tf, f"{sha256(config)[7:]}.json", config)
        for i, t in enumerate(tars):
            add(tf, f"layer{i}/layer.tar", t)
            add(tf, f"layer{i}/VERSION", b"1.0")
        manifest = [
            {
                "Config": f"{sha256(config)[7:]}.json",
                "RepoTags": ["old:latest"],
                "Layers": ["layer0/layer.tar", "layer1/layer.tar"],
            }
        ]
        add(tf, "manifest.json", json.dumps(manifest).encode())
    store = Store(tmp_path / "s")
    loaded = load_archive(store, archive, normalize=lambda n: "docker.io/library/" + n)
    rec = loaded[0].record
    assert rec.id == sha256(config)
    assert rec.repo_tags == ["docker.io/library/old:latest"]
    assert (store.layer_dir(rec.diff_ids[0]) / "bin/sh").read_bytes() == b"shell"
    assert [d["mediaType"] for d in rec.layers] == ["application/vnd.oci.image.layer.v1.tar"] * 2
    assert [d["digest"] for d in rec.layers] == rec.diff_ids  # uncompressed blobs
    assert store.check() == []


def test_load_new_docker_archive_with_blobs_layout(tmp_path: Path) -> None:
    """Docker 25+: manifest.json paths point into blobs/sha256, layers may be compressed."""
    tars = [tar_of(BASE), tar_of(APP)]
    blobs = [tars[0], gz(tars[1])]
    config = config_for(tars)
    archive = tmp_path / "new.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tf, f"blobs/sha256/{sha256(config)[7:]}", config)
        for b in blobs:
            add(tf, f"blobs/sha256/{sha256(b)[7:]}", b)
        manifest = [
            {
                "Config": f"blobs/sha256/{sha256(config)[7:]}",
                "RepoTags": ["new:2"],
                "Layers": [f"blobs/sha256/{sha256(b)[7:]}" for b in blobs],
            }
        ]
        add(tf, "manifest.json", json.dumps(manifest).encode())
        add(tf, "index.json", b'{"schemaVersion":2,"manifests":[]}')
    archive.write_bytes(gzip.compress(raw.getvalue()))  # docker load takes compressed archives too
    store = Store(tmp_path / "s")
    rec = load_archive(store, archive)[0].record
    assert rec.repo_tags == ["new:2"]
    assert [d["digest"] for d in rec.layers] == [sha256(b) for b in blobs]
    assert rec.layers[1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert (store.layer_dir(rec.diff_ids[1]) / "app/run").read_bytes() == b"run"
    assert store.check() == []


def test_load_oci_archive_made_by_hand(tmp_path: Path) -> None:
    tars = [tar_of(BASE)]
    layer = gz(tars[0])
    config = config_for(tars)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    # A nested index, as buildx writes, with an attestation manifest to skip.
    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": sha256(manifest),
                    "size": len(manifest),
                    "platform": {"os": "unknown", "architecture": "unknown"},
                },
            ],
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "example.com/a:1"},
            },
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": sha256(nested),
                "size": len(nested),
                "annotations": {"io.containerd.image.name": "example.com/b:2"},
            },
        ],
    }
    archive = tmp_path / "oci.tar"
    with tarfile.open(archive, "w") as tf:
        add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for blob in (config, layer, manifest, nested):
            add(tf, f"blobs/sha256/{sha256(blob)[7:]}", blob)
        add(tf, "index.json", json.dumps(index).encode())
    store = Store(tmp_path / "s")
    loaded = load_archive(store, archive, platform={"os": "linux", "architecture": "amd64"})
    assert len(loaded) == 1
    rec = loaded[0].record
    assert rec.manifest_digest == sha256(manifest)
    assert sorted(rec.repo_tags) == ["example.com/a:1", "example.com/b:2"]
    assert (store.layer_dir(rec.diff_ids[0]) / "etc/os").read_bytes() == b"t"
    assert store.check() == []


def test_load_rejects_damaged_archives(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match="not a tar archive") as ei:
        load_archive(store, junk)
    assert "\n" not in ei.value.line()
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w") as tf:
        add(tf, "hello", b"x")
    with pytest.raises(ImageError, match=r"neither manifest\.json"):
        load_archive(store, empty)
    # A layer whose content does not match the config's diff id.
    tars = [tar_of(BASE)]
    config = config_for(tars)
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tf:
        add(tf, "c.json", config)
        add(tf, "l/layer.tar", tar_of(APP))
        add(
            tf,
            "manifest.json",
            json.dumps([{"Config": "c.json", "RepoTags": None, "Layers": ["l/layer.tar"]}]).encode(),
        )
    with pytest.raises(ImageError, match="the image config says"):
        load_archive(store, bad)
    assert store.list_images() == [] and store.list_layers() == []
    assert [p.kind for p in store.check()] == []


def test_import_rootfs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    tar = tar_of(BASE)
    rec = import_rootfs(store, io.BytesIO(gz(tar)), ["example.com/imported:1"], {"Cmd": ["/bin/sh"]})
    assert rec.diff_ids == [sha256(tar)]
    assert rec.repo_tags == ["example.com/imported:1"]
    assert (store.layer_dir(rec.diff_ids[0]) / "bin/sh").read_bytes() == b"shell"
    assert store.check() == []
