"""``rl save`` / ``rl load``: docker-archive and oci-archive tarballs, as docker and podman write them.

docker-archive (``docker save``)::

    manifest.json      [{"Config": "<hex>.json", "RepoTags": ["name:tag"], "Layers": ["<hex>/layer.tar"]}]
    <config-hex>.json  the image config
    <id>/layer.tar     each layer, an uncompressed tar (its sha256 is the layer's diff id)
    repositories       {"name": {"tag": "<top layer id>"}} (legacy)

Docker 25 and later write the same manifest.json but with paths into an OCI layout
(``"Config": "blobs/sha256/<hex>"``, ``"Layers": ["blobs/sha256/<hex>"]``), and podman names layers
``<hex>.tar``; the reader follows whatever paths manifest.json gives, and accepts compressed
layers too.  rl writes the classic layout, which every docker and podman loads.

oci-archive (``podman save --format oci-archive``, skopeo)::

    oci-layout         {"imageLayoutVersion": "1.0.0"}
    index.json         manifests, named by the org.opencontainers.image.ref.name annotation
    blobs/sha256/<hex> manifests, configs and layers (layers as stored: usually compressed)

Loading stores every layer blob (a docker-archive layer as the uncompressed tar; its digest is its
diff id) and unpacks it through Store, so loaded images push and save like pulled ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform as _platform
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from rootless.errors import ImageError, NotFoundError, UsageError
from rootless.image import compression
from rootless.image.store import ImageRecord, Store, digest_hex, now_iso
from rootless.image.unpack import label_for
from rootless.records import field, record

DOCKER_ARCHIVE = "docker-archive"
OCI_ARCHIVE = "oci-archive"
FORMATS = (DOCKER_ARCHIVE, OCI_ARCHIVE)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_BAD_HINT = "the archive is damaged or was not written by docker save, podman save or rl save"


def _bad(path: str | os.PathLike[str], why: str) -> ImageError:
    return ImageError(f"cannot load {os.fspath(path)}: {why}", _BAD_HINT)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_platform() -> dict[str, str]:
    machine = _platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
        "i686": "386",
        "i386": "386",
    }.get(machine, machine)
    out = {"os": "linux", "architecture": arch}
    if machine == "armv7l":
        out["variant"] = "v7"
    elif machine == "armv6l":
        out["variant"] = "v6"
    return out


def platform_of(config: dict[str, Any]) -> dict[str, str]:
    out = {"os": str(config.get("os") or "linux"), "architecture": str(config.get("architecture") or "")}
    if config.get("variant"):
        out["variant"] = str(config["variant"])
    return out


# ---- reading -------------------------------------------------------------------------------------


@record
class ArchiveLayer:
    member: str  # path inside the archive
    diff_id: str  # from the config
    digest: str | None  # the blob's digest when the archive says it (OCI, blobs/sha256/ paths)
    media_type: str | None  # when the archive says it (OCI)
    size: int  # bytes of the member


@record
class ArchiveImage:
    config: bytes
    config_digest: str
    layers: list[ArchiveLayer]
    names: list[str] = field(default_factory=list)
    manifest: bytes | None = None  # the original manifest (oci-archive); None: rl writes one
    manifest_digest: str | None = None
    manifest_media_type: str | None = None

    @property
    def config_json(self) -> dict[str, Any]:
        data = json.loads(self.config)
        return data if isinstance(data, dict) else {}


class ArchiveReader:
    """An open docker-archive or oci-archive; ``images()`` lists what it holds.

    Compressed archives (gzip, bzip2, xz, zstd) are accepted; zstd ones are first decompressed
    into ``workdir`` (a temporary file, deleted on close).
    """

    def __init__(self, path: str | os.PathLike[str], workdir: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self._spool: IO[bytes] | None = None
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
        except FileNotFoundError:
            raise NotFoundError(f"cannot load {self.path}: no such file", "check the path") from None
        except OSError as e:
            raise ImageError(f"cannot load {self.path}: {e.strerror}") from None
        try:
            if head.startswith(compression.ZSTD_MAGIC):
                self._spool = tempfile.TemporaryFile(dir=workdir)  # noqa: SIM115
                with open(self.path, "rb") as src:
                    reader = compression.open_reader(src, compression.ZSTD)
                    shutil.copyfileobj(reader, self._spool, 1 << 20)
                    reader.close()
                self._spool.seek(0)
                self._tf = tarfile.open(fileobj=self._spool, mode="r:")  # noqa: SIM115
            else:
                self._tf = tarfile.open(self.path, mode="r:*")  # noqa: SIM115
            self._members: dict[str, tarfile.TarInfo] = {}
            for m in self._tf.getmembers():
                self._members[_norm(m.name)] = m
        except (tarfile.TarError, EOFError, compression.DecompressError) as e:
            self.close()
            reason = str(e).splitlines()[0].rstrip(":") if str(e) else type(e).__name__
            raise _bad(self.path, f"not a tar archive ({reason})") from None
        if "manifest.json" in self._members:
            self.format = DOCKER_ARCHIVE
        elif "index.json" in self._members:
            self.format = OCI_ARCHIVE
        else:
            self.close()
            raise _bad(self.path, "it has neither manifest.json (docker-archive) nor index.json (oci-archive)")

    def close(self) -> None:
        tf = getattr(self, "_tf", None)
        if tf is not None:
            tf.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, name: str) -> bool:
        return _norm(name) in self._members

    def open_member(self, name: str) -> BinaryIO:
        m = self._members.get(_norm(name))
        if m is None:
            raise _bad(self.path, f"{name!r} is missing from the archive")
        f = self._tf.extractfile(m)
        if f is None:
            raise _bad(self.path, f"{name!r} is not a file")
        return f  # type: ignore[return-value]

    def member_size(self, name: str) -> int:
        m = self._members[_norm(name)]
        while m.issym() or m.islnk():
            target = _norm(os.path.join(os.path.dirname(m.name), m.linkname) if m.issym() else m.linkname)
            nxt = self._members.get(target)
            if nxt is None:
                return m.size
            m = nxt
        return m.size

    def read_member(self, name: str, limit: int = 64 << 20) -> bytes:
        with self.open_member(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise _bad(self.path, f"{name!r} is too large for a metadata file")
        return data

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self.read_member(name))
        except ValueError as e:
            raise _bad(self.path, f"{name} is not valid JSON ({e})") from None

    def images(self, platform: dict[str, str] | None = None) -> list[ArchiveImage]:
        if self.format == DOCKER_ARCHIVE:
            return self._docker_images()
        return self._oci_images(platform or host_platform())

    def _docker_images(self) -> list[ArchiveImage]:
        manifest = self._json("manifest.json")
        if not isinstance(manifest, list):
            raise _bad(self.path, "manifest.json is not a list")
        out = []
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise _bad(self.path, "an entry of manifest.json has no Config")
            config = self.read_member(entry["Config"])
            config_digest = _sha(config)
            given = _blob_digest(entry["Config"])
            if given and given != config_digest:
                raise _bad(self.path, f"config {entry['Config']} does not match its digest")
            diff_ids = _diff_ids(config, self.path)
            layer_paths = entry.get("Layers") or []
            if not isinstance(layer_paths, list) or len(layer_paths) != len(diff_ids):
                raise _bad(
                    self.path,
                    f"manifest.json lists {len(layer_paths)} layers, the config {len(diff_ids)} diff ids",
                )
            layers = [
                ArchiveLayer(
                    member=str(p),
                    diff_id=d,
                    digest=_blob_digest(str(p)),
                    media_type=None,
                    size=self.member_size(str(p)) if self.has(str(p)) else 0,
                )
                for p, d in zip(layer_paths, diff_ids, strict=True)
            ]
            tags = entry.get("RepoTags") or []
            names = [str(t) for t in tags if isinstance(t, str)]
            out.append(ArchiveImage(config=config, config_digest=config_digest, layers=layers, names=names))
        return out

    def _blob(self, digest: str) -> bytes:
        return self.read_member(f"blobs/sha256/{digest_hex(digest)}")

    def _oci_images(self, want: dict[str, str]) -> list[ArchiveImage]:
        index = self._json("index.json")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise _bad(self.path, "index.json has no manifests")
        by_digest: dict[str, ArchiveImage] = {}
        for desc in index["manifests"]:
            if not isinstance(desc, dict):
                continue
            annotations = desc.get("annotations") or {}
            name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
            mdesc = self._pick_manifest(desc, want)
            if mdesc is None:
                continue
            digest = str(mdesc["digest"])
            img = by_digest.get(digest)
            if img is None:
                img = self._oci_image(mdesc)
                by_digest[digest] = img
            if name and name not in img.names:
                img.names.append(str(name))
        if not by_digest:
            raise _bad(self.path, "index.json lists no image manifest")
        return list(by_digest.values())

    def _pick_manifest(self, desc: dict[str, Any], want: dict[str, str]) -> dict[str, Any] | None:
        for _depth in range(4):
            mt = desc.get("mediaType")
            if mt in MANIFEST_TYPES or (mt is None and "digest" in desc and not self._is_index(desc)):
                return desc
            if mt not in INDEX_TYPES and not self._is_index(desc):
                return None  # attestations and other artifacts
            index = self._verified_json(desc)
            candidates = [
                d
                for d in index.get("manifests") or []
                if isinstance(d, dict) and (d.get("platform") or {}).get("os") not in (None, "unknown")
            ]
            if not candidates:
                return None
            exact = [d for d in candidates if _platform_matches(d.get("platform") or {}, want)]
            desc = (exact or candidates)[0]
        return None

    def _is_index(self, desc: dict[str, Any]) -> bool:
        try:
            data = json.loads(self._blob(str(desc["digest"])))
        except (ValueError, KeyError, ImageError):
            return False
        return isinstance(data, dict) and "manifests" in data

    def _verified_json(self, desc: dict[str, Any]) -> dict[str, Any]:
        digest = str(desc.get("digest"))
        data = self._blob(digest)
        if _sha(data) != digest:
            raise _bad(self.path, f"blob {digest} does not match its digest")
        try:
            out = json.loads(data)
        except ValueError:
            raise _bad(self.path, f"blob {digest} is not valid JSON") from None
        if not isinstance(out, dict):
            raise _bad(self.path, f"blob {digest} is not a JSON object")
        return out

    def _oci_image(self, mdesc: dict[str, Any]) -> ArchiveImage:
        digest = str(mdesc["digest"])
        raw = self._blob(digest)
        if _sha(raw) != digest:
            raise _bad(self.path, f"manifest {digest} does not match its digest")
        manifest = json.loads(raw)
        try:
            config_digest = str(manifest["config"]["digest"])
            layer_descs = list(manifest["layers"])
        except (KeyError, TypeError):
            raise _bad(self.path, f"manifest {digest} has no config or layers") from None
        config = self._blob(config_digest)
        if _sha(config) != config_digest:
            raise _bad(self.path, f"config {config_digest} does not match its digest")
        diff_ids = _diff_ids(config, self.path)
        if len(diff_ids) != len(layer_descs):
            raise _bad(self.path, f"manifest {digest} has {len(layer_descs)} layers, the config {len(diff_ids)}")
        layers = [
            ArchiveLayer(
                member=f"blobs/sha256/{digest_hex(str(d['digest']))}",
                diff_id=diff,
                digest=str(d["digest"]),
                media_type=str(d.get("mediaType") or "") or None,
                size=int(d.get("size") or 0),
            )
            for d, diff in zip(layer_descs, diff_ids, strict=True)
        ]
        media_type = str(manifest.get("mediaType") or mdesc.get("mediaType") or OCI_MANIFEST)
        return ArchiveImage(
            config=config,
            config_digest=config_digest,
            layers=layers,
            manifest=raw,
            manifest_digest=digest,
            manifest_media_type=media_type,
        )


def _norm(name: str) -> str:
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _blob_digest(path: str) -> str | None:
    parts = _norm(path).split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        candidate = f"{parts[1]}:{parts[2]}"
        with contextlib.suppress(ImageError):
            digest_hex(candidate)
            return candidate
    return None


def _diff_ids(config: bytes, path: Path) -> list[str]:
    try:
        data = json.loads(config)
        diff_ids = data["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list):
            raise TypeError
        for d in diff_ids:
            digest_hex(d)
    except (ValueError, KeyError, TypeError, ImageError):
        raise _bad(path, "the image config has no valid rootfs.diff_ids") from None
    return [str(d) for d in diff_ids]


def _platform_matches(p: dict[str, Any], want: dict[str, str]) -> bool:
    if p.get("os") != want.get("os") or p.get("architecture") != want.get("architecture"):
        return False
    return not want.get("variant") or not p.get("variant") or p.get("variant") == want.get("variant")


# ---- loading into the store ------------------------------------------------------------------------


@record
class LoadedImage:
    record: ImageRecord
    names: list[str]


def _manifest_for(config: bytes, layers: list[dict[str, Any]]) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config), "size": len(config)},
        "layers": layers,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def load_archive(
    store: Store,
    path: str | os.PathLike[str],
    normalize: Callable[[str], str] | None = None,
    platform: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[LoadedImage]:
    """Load every image of a docker-archive or oci-archive into ``store`` and name it.

    ``normalize`` maps the archive's names (docker writes short ones, "alpine:3.19") to the names
    the store uses; names it rejects (raising UsageError) are dropped.
    """
    out = []
    with ArchiveReader(path, workdir=store.tmp_dir) as ar:
        for img in ar.images(platform):
            label_image = img.names[0] if img.names else img.config_digest[:19]
            descs: list[dict[str, Any]] = []
            for layer in img.layers:
                label = label_for(layer.diff_id, label_image)
                if progress:
                    progress(f"loading {label}")
                digest = layer.digest
                if digest is None and store.has_blob(layer.diff_id) and store.layer_present(layer.diff_id):
                    digest = layer.diff_id  # an uncompressed layer we already have
                if digest is None or not store.has_blob(digest):
                    with ar.open_member(layer.member) as f:
                        digest = store.put_blob_stream(f, digest, layer.size or None)
                kind = _blob_kind(store, digest)
                store.add_layer_from_blob(layer.diff_id, digest, label=label)
                descs.append(
                    {
                        "mediaType": layer.media_type or compression.media_type_for(kind),
                        "digest": digest,
                        "size": store.blob_size(digest),
                    }
                )
            store.put_blob(img.config, img.config_digest)
            if img.manifest is not None and img.manifest_digest:
                manifest, manifest_digest = img.manifest, img.manifest_digest
                manifest_type = img.manifest_media_type or OCI_MANIFEST
            else:
                manifest = _manifest_for(img.config, descs)
                manifest_digest, manifest_type = _sha(manifest), OCI_MANIFEST
            store.put_blob(manifest, manifest_digest)
            config = img.config_json
            record = ImageRecord(
                id=img.config_digest,
                manifest_digest=manifest_digest,
                manifest_media_type=manifest_type,
                config_digest=img.config_digest,
                layers=descs,
                diff_ids=[layer.diff_id for layer in img.layers],
                platform=platform_of(config),
                created=str(config.get("created") or ""),
                added=now_iso(),
            )
            names = []
            for n in img.names:
                try:
                    names.append(normalize(n) if normalize else n)
                except UsageError:
                    continue
            record = store.put_image(record, names)
            out.append(LoadedImage(record, names))
    return out


def _blob_kind(store: Store, digest: str) -> str:
    with store.open_blob(digest) as f:
        return compression.sniff(f.read(8))


# ---- saving ----------------------------------------------------------------------------------------


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o644
    ti.mtime = 0
    tf.addfile(ti, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o755
    ti.mtime = 0
    tf.addfile(ti)


class _VerifyingReader(io.RawIOBase):
    def __init__(self, src: IO[bytes] | io.RawIOBase, expected: str, what: str) -> None:
        super().__init__()
        self._src = src
        self._sha = hashlib.sha256()
        self._expected = expected
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._src.read(len(b))
        n = len(data)
        b[:n] = data
        self._sha.update(data)
        return n

    def verify(self) -> None:
        """Hash what the reader has not consumed yet and compare with the expected digest."""
        while data := self._src.read(1 << 20):
            self._sha.update(data)
        if "sha256:" + self._sha.hexdigest() != self._expected:
            raise ImageError(
                f"cannot save {self._what}: its content does not match {self._expected}",
                "the store is damaged; repair it and pull the image again",
            )


def _uncompressed_size(store: Store, diff_id: str, blob: str) -> int:
    info = store.layer_info(diff_id)
    if info is not None and info.size:
        return info.size
    with store.open_blob(blob) as f, compression.open_reader(f) as r:
        total = 0
        while chunk := r.read(1 << 20):
            total += len(chunk)
    return total


def save_archive(
    store: Store,
    images: Sequence[tuple[ImageRecord, Sequence[str]]],
    out: BinaryIO,
    fmt: str = DOCKER_ARCHIVE,
) -> None:
    """Write ``images`` (each with the names to record) to ``out`` as a ``fmt`` archive.

    ``out`` may be a pipe.  On error the output is incomplete; the caller deletes the file.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown archive format {fmt!r}", f"use one of: {', '.join(FORMATS)}")
    for rec, _names in images:
        missing = [m for m in store.missing_for(rec) if m.startswith("blob")]
        if missing:
            raise ImageError(
                f"cannot save image {rec.short_id}: {missing[0]} is missing from the store",
                "pull the image again",
            )
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        if fmt == DOCKER_ARCHIVE:
            _save_docker(store, images, tf)
        else:
            _save_oci(store, images, tf)


def _save_docker(store: Store, images: Sequence[tuple[ImageRecord, Sequence[str]]], tf: tarfile.TarFile) -> None:
    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for rec, names in images:
        layer_paths = []
        for desc, diff_id in zip(rec.layers, rec.diff_ids, strict=True):
            h = digest_hex(diff_id)
            layer_paths.append(f"{h}/layer.tar")
            if h in written:
                continue
            written.add(h)
            _add_dir(tf, f"{h}/")
            _add_bytes(tf, f"{h}/VERSION", b"1.0")
            ti = tarfile.TarInfo(f"{h}/layer.tar")
            ti.size = _uncompressed_size(store, diff_id, desc["digest"])
            ti.mode = 0o644
            ti.mtime = 0
            with store.open_blob(desc["digest"]) as f, compression.open_reader(f) as r:
                verifying = _VerifyingReader(r, diff_id, f"layer {diff_id}")
                tf.addfile(ti, verifying)
                verifying.verify()
        config_name = f"{digest_hex(rec.config_digest)}.json"
        if config_name not in written:
            written.add(config_name)
            _add_bytes(tf, config_name, store.read_blob(rec.config_digest))
        tags = [n for n in names if "@" not in n]
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layer_paths})
        for t in tags:
            repo, _, tag = t.rpartition(":")
            if layer_paths:
                repositories.setdefault(repo, {})[tag] = layer_paths[-1].split("/")[0]
    _add_bytes(tf, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    if repositories:
        _add_bytes(tf, "repositories", json.dumps(repositories, separators=(",", ":")).encode())


def _save_oci(store: Store, images: Sequence[tuple[ImageRecord, Sequence[str]]], tf: tarfile.TarFile) -> None:
    _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    _add_dir(tf, "blobs/")
    _add_dir(tf, "blobs/sha256/")
    written: set[str] = set()
    descriptors: list[dict[str, Any]] = []
    for rec, names in images:
        for digest in [rec.config_digest, *(d["digest"] for d in rec.layers), rec.manifest_digest]:
            if digest in written:
                continue
            written.add(digest)
            ti = tarfile.TarInfo(f"blobs/sha256/{digest_hex(digest)}")
            ti.size = store.blob_size(digest)
            ti.mode = 0o644
            ti.mtime = 0
            with store.open_blob(digest) as f:
                tf.addfile(ti, f)
        base = {
            "mediaType": rec.manifest_media_type or OCI_MANIFEST,
            "digest": rec.manifest_digest,
            "size": store.blob_size(rec.manifest_digest),
        }
        if rec.platform.get("architecture"):
            base["platform"] = dict(rec.platform)
        tags = [n for n in names if "@" not in n]
        if not tags:
            descriptors.append(base)
        for t in tags:
            descriptors.append({**base, "annotations": {REF_NAME: t, CONTAINERD_NAME: t}})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    _add_bytes(tf, "index.json", json.dumps(index, separators=(",", ":")).encode())


@contextlib.contextmanager
def saving_to(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open ``path`` for save_archive; the file appears only if saving succeeds."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.rl-partial-{os.getpid()}")
    f = open(tmp, "wb")  # noqa: SIM115
    try:
        yield f
        f.close()
        os.replace(tmp, target)
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store_image(store: Store, image_config: dict[str, Any], layers: list[dict[str, Any]],
                names: Sequence[str] = ()) -> ImageRecord:
    """An image made here (``rl import``, ``rl commit``): its config and an OCI manifest over
    ``layers`` (whose blobs and unpacked layers are in the store) as blobs, its record under ``names``."""
    raw_config = json.dumps(image_config, separators=(",", ":")).encode()
    config_digest = store.put_blob(raw_config)
    record = ImageRecord(
        id=config_digest,
        manifest_digest=store.put_blob(_manifest_for(raw_config, layers)),
        manifest_media_type=OCI_MANIFEST,
        config_digest=config_digest,
        layers=layers,
        diff_ids=list(image_config["rootfs"]["diff_ids"]),
        platform=platform_of(image_config),
        created=str(image_config["created"]),
    )
    return store.put_image(record, names)


def import_rootfs(
    store: Store,
    stream: BinaryIO,
    names: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    label: str = "imported rootfs",
    message: str = "",
) -> ImageRecord:
    """``rl import``: a rootfs tarball (plain, gzip or zstd) becomes a one-layer image.

    ``config`` supplies the image config's "config" section (Env, Cmd, ...); ``message`` its comment.
    """
    digest = store.put_blob_stream(stream)
    kind = _blob_kind(store, digest)
    if kind not in (compression.NONE, compression.GZIP, compression.ZSTD):
        raise ImageError(f"cannot import: the tarball is compressed with {kind}",
                         "decompress it first, or use gzip or zstd")
    with store.open_blob(digest) as f, compression.open_reader(f, kind) as r:
        h = hashlib.sha256()
        while chunk := r.read(1 << 20):
            h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    store.add_layer_from_blob(diff_id, digest, label=label)
    plat = host_platform()
    created = now_iso()
    history: dict[str, Any] = {"created": created, "created_by": "rl import"}
    image_config: dict[str, Any] = {
        "architecture": plat["architecture"],
        "os": "linux",
        "created": created,
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [history],
    }
    if plat.get("variant"):
        image_config["variant"] = plat["variant"]
    if message:
        history["comment"] = message
        image_config["comment"] = message
    desc = {"mediaType": compression.media_type_for(kind), "digest": digest, "size": store.blob_size(digest)}
    return store_image(store, image_config, [desc], names)
