"""The fixture images are really on the registry, whole and self-consistent.

Fetches every manifest, index child and blob back over the Distribution API and
checks digests, sizes, media types and that config diff_ids match the
uncompressed layers. Also checks the builders' own promises (layer contents,
determinism) and the extra-registry factory.
"""

from __future__ import annotations

import io
import json
import stat
import tarfile
from collections.abc import Callable

import pytest

from tests.fixtures import (
    ALICE_GID,
    ALICE_UID,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    STANDARD_IMAGES,
    File,
    FixtureImage,
    RegistryClient,
    RegistryServer,
    decompress_layer,
    gzip_layer,
    image_build,
    make_config,
    make_layer,
    push_image,
    sha256_digest,
)

# name -> (manifest media type, config media type, layer media types)
EXPECTED_KINDS: dict[str, tuple[str, str, list[str]]] = {
    "busybox": (DOCKER_MANIFEST, DOCKER_CONFIG, [DOCKER_LAYER_GZIP]),
    "busybox-zstd": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER_ZSTD]),
    "busybox-uncompressed": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER_TAR]),
    "multilayer": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER_GZIP] * 3),
    "multiarch-amd64": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER_GZIP] * 2),
    "multiarch-arm64": (OCI_MANIFEST, OCI_CONFIG, [OCI_LAYER_GZIP] * 2),
    "debian": (DOCKER_MANIFEST, DOCKER_CONFIG, [DOCKER_LAYER_GZIP]),
}


def fetch_layer_tars(client: RegistryClient, image: FixtureImage) -> list[bytes]:
    """Check ``image`` (a single-platform image) on the registry; return its
    uncompressed layer tars."""
    fetched = client.get_manifest(image.repository, image.tag or image.digest)
    assert fetched.media_type == image.media_type
    assert fetched.digest == image.digest == sha256_digest(fetched.data)
    assert len(fetched.data) == image.manifest_size
    manifest = fetched.json()
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == image.media_type

    expected_manifest, expected_config, expected_layers = EXPECTED_KINDS[image.name]
    assert image.media_type == expected_manifest
    assert manifest["config"] == {
        "mediaType": expected_config,
        "digest": image.config_digest,
        "size": image.config_size,
    }
    config_bytes = client.get_blob(image.repository, image.config_digest)
    assert sha256_digest(config_bytes) == image.config_digest
    assert len(config_bytes) == image.config_size
    config = json.loads(config_bytes)
    assert config == image.config
    assert config["os"] == "linux"
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == image.diff_ids
    layer_history = [entry for entry in config["history"] if not entry.get("empty_layer")]
    assert len(layer_history) == len(manifest["layers"])

    assert [layer["mediaType"] for layer in manifest["layers"]] == expected_layers == image.layer_media_types
    tars = []
    for descriptor, digest, size, diff_id in zip(
        manifest["layers"], image.layer_digests, image.layer_sizes, image.diff_ids, strict=True
    ):
        assert (descriptor["digest"], descriptor["size"]) == (digest, size)
        blob = client.get_blob(image.repository, digest)
        assert sha256_digest(blob) == digest
        assert len(blob) == size
        tar = decompress_layer(descriptor["mediaType"], blob)
        assert sha256_digest(tar) == diff_id
        if descriptor["mediaType"] == OCI_LAYER_TAR:
            assert digest == diff_id
        tars.append(tar)
    return tars


def flatten(tars: list[bytes]) -> dict[str, tarfile.TarInfo]:
    """Apply layers in order, honouring OCI whiteouts: path -> member."""
    tree: dict[str, tarfile.TarInfo] = {}
    for tar in tars:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            members = archive.getmembers()
        for member in members:
            path = "/" + member.name.removeprefix("./").strip("/")
            parent, _, base = path.rpartition("/")
            if base == ".wh..wh..opq":
                for existing in [p for p in tree if p.startswith(parent + "/")]:
                    del tree[existing]
            elif base.startswith(".wh."):
                hidden = f"{parent}/{base.removeprefix('.wh.')}"
                for existing in [p for p in tree if p == hidden or p.startswith(hidden + "/")]:
                    del tree[existing]
        for member in members:
            path = "/" + member.name.removeprefix("./").strip("/")
            if not path.rpartition("/")[2].startswith(".wh."):
                tree[path] = member
    return tree


def file_texts(tars: list[bytes], paths: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for tar in tars:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            for member in archive.getmembers():
                path = "/" + member.name.removeprefix("./").strip("/")
                if path in paths and member.isfile():
                    stream = archive.extractfile(member)
                    assert stream is not None
                    found[path] = stream.read().decode()
                elif path in paths and member.islnk():
                    found[path] = found["/" + member.linkname.removeprefix("./").strip("/")]
    return found


@pytest.mark.parametrize("name", sorted(STANDARD_IMAGES))
def test_fixture_image_is_whole_on_registry(
    name: str, fixture_images: dict[str, FixtureImage], registry_client: RegistryClient
) -> None:
    image = fixture_images[name]
    assert image.reference == f"{registry_client.address}/{image.repository}:{image.tag}"
    if not image.is_index:
        tars = fetch_layer_tars(registry_client, image)
        assert file_texts(tars, list(image.files)) == image.files
        return

    fetched = registry_client.get_manifest(image.repository, image.tag)
    assert fetched.media_type == image.media_type == OCI_INDEX
    assert fetched.digest == image.digest == sha256_digest(fetched.data)
    index = fetched.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    platforms = {}
    for entry in index["manifests"]:
        platform = entry["platform"]
        key = "/".join(filter(None, (platform["os"], platform["architecture"], platform.get("variant"))))
        platforms[key] = entry
    assert sorted(platforms) == sorted(image.children) == ["linux/amd64", "linux/arm64/v8"]
    for key, entry in platforms.items():
        child = image.children[key]
        assert (entry["mediaType"], entry["digest"], entry["size"]) == (
            child.media_type,
            child.digest,
            child.manifest_size,
        )
        assert child.platform == key
        assert child.reference == f"{registry_client.address}/{image.repository}@{child.digest}"
        tars = fetch_layer_tars(registry_client, child)
        assert child.config["architecture"] == entry["platform"]["architecture"]
        assert child.config.get("variant") == entry["platform"].get("variant")
        assert file_texts(tars, ["/arch"]) == {"/arch": entry["platform"]["architecture"] + "\n"}


def test_debian_image_is_whole_on_registry(debian_image: FixtureImage, registry_client: RegistryClient) -> None:
    tars = fetch_layer_tars(registry_client, debian_image)
    tree = flatten(tars)
    if "/" in tree:  # GNU tar's "./" entry: the image's root directory
        assert stat.S_IMODE(tree["/"].mode) == 0o755
    assert "/etc/debian_version" in tree
    assert "/usr/bin/apt-get" in tree or "/bin/apt-get" in tree
    assert not [path for path, member in tree.items() if member.ischr() or member.isblk()]
    assert debian_image.cmd == ["bash"]


def test_busybox_image_contents(fixture_images: dict[str, FixtureImage], registry_client: RegistryClient) -> None:
    image = fixture_images["busybox"]
    assert image.cmd == ["sh"]
    assert image.labels == {"org.rl.test": "busybox"}
    assert image.exposed_ports == ["80/tcp"]
    assert image.working_dir == "/"
    assert image.env and image.env[0].startswith("PATH=")
    tree = flatten(fetch_layer_tars(registry_client, image))
    busybox = tree["/bin/busybox"]
    assert busybox.isfile() and busybox.mode == 0o755
    assert tree["/bin/sh"].issym() and tree["/bin/sh"].linkname == "busybox"
    assert stat.S_IMODE(tree["/tmp"].mode) == 0o1777
    assert (tree["/home/alice"].uid, tree["/home/alice"].gid) == (ALICE_UID, ALICE_GID)
    passwd = file_texts(fetch_layer_tars(registry_client, image), ["/etc/passwd"])["/etc/passwd"]
    assert f"alice:x:{ALICE_UID}:{ALICE_GID}:" in passwd
    for member in tree.values():
        assert (member.mtime, member.uname, member.gname) == (1_700_000_000, "", "")


def test_multilayer_image_contents(fixture_images: dict[str, FixtureImage], registry_client: RegistryClient) -> None:
    image = fixture_images["multilayer"]
    assert image.entrypoint == ["/bin/sh", "-c"]
    assert image.cmd == ["echo multilayer says $GREETING"]
    assert image.user == f"{ALICE_UID}:{ALICE_GID}"
    assert image.working_dir == "/data"
    assert "RL_TEST=multilayer" in image.env
    assert image.exposed_ports == ["5353/udp", "8080/tcp"]
    tars = fetch_layer_tars(registry_client, image)

    with tarfile.open(fileobj=io.BytesIO(tars[2])) as archive:
        names = archive.getnames()
    assert "etc/.wh.deleteme" in names and "opt/replaced/.wh..wh..opq" in names

    tree = flatten(tars)
    assert tree["/data/hardlink-b"].islnk() and tree["/data/hardlink-b"].linkname == "data/hardlink-a"
    assert tree["/data/rel-link"].issym() and tree["/data/rel-link"].linkname == "hardlink-a"
    assert tree["/data/abs-link"].linkname == "/etc/passwd"
    assert tree["/data/fifo"].isfifo()
    assert tree["/usr/bin/setuid-tool"].mode == 0o4755 and tree["/usr/bin/setuid-tool"].uid == 0
    for path in ("/data/alice-dir", "/data/alice-dir/owned.txt", "/data/alice-file"):
        assert (tree[path].uid, tree[path].gid) == (ALICE_UID, ALICE_GID)
    assert "/etc/deleteme" not in tree
    assert "/etc/passwd" in tree
    assert sorted(p for p in tree if p.startswith("/opt/replaced/")) == ["/opt/replaced/c"]
    assert file_texts(tars, list(image.files)) == image.files


def test_builders_are_deterministic() -> None:
    for build in STANDARD_IMAGES.values():
        assert build().manifest.digest == build().manifest.digest


def test_pushing_again_uploads_nothing(
    fixture_images: dict[str, FixtureImage], registry_client: RegistryClient
) -> None:
    build = STANDARD_IMAGES["multilayer"]()
    assert build.manifest.digest == fixture_images["multilayer"].digest
    for blob in [*build.layers, build.config]:
        assert blob is not None
        assert registry_client.push_blob(build.repository, blob) is False


def test_registry_factory_with_htpasswd(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory(htpasswd_users={"alice": "s3cret"})
    anonymous = RegistryClient(server.address)
    assert anonymous.request("GET", "/v2/").status == 401
    wrong = RegistryClient(server.address, username="alice", password="nope")
    assert wrong.request("GET", "/v2/").status == 401

    client = RegistryClient(server.address, username="alice", password="s3cret")
    layer = make_layer([File("hello.txt", b"hi\n")])
    blob = gzip_layer(layer)
    config = make_config(diff_ids=[layer.diff_id], cmd=["cat", "/hello.txt"])
    pushed = push_image(client, image_build("hello", "private/hello", "v1", [blob], config))
    assert client.get_manifest("private/hello", "v1").digest == pushed.digest
    assert client.get_blob("private/hello", blob.digest) == blob.read()
    assert client.tags("private/hello") == ["v1"]
    client.delete_manifest("private/hello", pushed.digest)
    assert client.tags("private/hello") == []
