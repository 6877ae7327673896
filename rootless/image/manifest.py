"""Image manifests, indexes and configs: parsed, validated, and the platform chosen from an index.

Accepted: Docker schema 2 manifests and manifest lists, OCI image manifests and indexes. Docker schema 1
is refused (registries stopped serving it; rl cannot verify it). Everything a pull trusts is checked
here: digests (sha256 only), sizes, required fields, layer media types (gzip, zstd, uncompressed tar);
foreign / non-distributable layers are refused since their bytes live outside the registry.
"""

from __future__ import annotations

import json
from typing import Any

from rootless.errors import ImageError
from rootless.image.platform import Platform, best_match, normalize
from rootless.records import field, record

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
# What to send as Accept when pulling: every type rl understands.
ACCEPT = ", ".join(MANIFEST_TYPES)

LAYER_COMPRESSION: dict[str, str] = {
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
}
FOREIGN_LAYER_TYPES = (DOCKER_LAYER_FOREIGN, OCI_LAYER_NONDIST, OCI_LAYER_NONDIST_GZIP, OCI_LAYER_NONDIST_ZSTD)
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_CONFIG_SIZE = 8 * 1024 * 1024

# Index entries that are not runnable images (buildx attestations, signatures).
_REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"

_HEX = frozenset("0123456789abcdef")


def sha256_digest(data: bytes) -> str:
    import hashlib  # OpenSSL's, ~2.5 ms: `rl run` of a stored image never hashes

    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, what: str, where: str) -> str:
    """``value`` as a sha256 digest string, or ImageError naming what is wrong with it."""
    hint = "the registry serves a malformed image; ask its publisher to push it again"
    if not isinstance(value, str) or not value:
        raise ImageError(f"invalid {what} digest in {where}: missing or not a string", hint)
    algorithm, sep, encoded = value.partition(":")
    if not sep:
        raise ImageError(f"invalid {what} digest {value!r} in {where}: no algorithm prefix", hint)
    if algorithm != "sha256":
        raise ImageError(
            f"unsupported digest algorithm {algorithm!r} for {what} in {where}: only sha256 is supported",
            "push the image with sha256 digests (the default of docker, podman and buildah)",
        )
    if len(encoded) != 64 or not set(encoded) <= _HEX:
        raise ImageError(
            f"invalid {what} digest {value!r} in {where}: not sha256: and 64 lowercase hex digits", hint)
    return value


def verify_digest(data: bytes, expected: str, what: str, where: str) -> None:
    got = sha256_digest(data)
    if got != expected:
        raise ImageError(
            f"{what} {expected} from {where} does not match its digest: got {got}",
            "the registry or a proxy returned different content; retry, or report it to the registry's admin",
        )


def _invalid(where: str, reason: str) -> ImageError:
    return ImageError(f"invalid manifest for {where}: {reason}",
                      "the registry serves a malformed image; ask its publisher to push it again")


def _bad_config(where: str, reason: str) -> ImageError:
    return ImageError(f"invalid image config for {where}: {reason}",
                      "the registry serves a malformed image; ask its publisher to push it again")


@record(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    artifact_type: str = ""

    @property
    def compression(self) -> str:
        """``gzip``, ``zstd`` or ``none`` for a layer descriptor."""
        return LAYER_COMPRESSION.get(self.media_type, "none")

    def is_attestation(self) -> bool:
        return _REFERENCE_TYPE_ANNOTATION in self.annotations or (
            self.platform is not None and self.platform.os == "unknown")


@record(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@record(frozen=True)
class ImageIndex:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def platforms(self) -> list[Platform]:
        """The runnable platforms the index offers, in its order, attestations left out."""
        seen: list[Platform] = []
        for d in self.manifests:
            if d.platform is not None and not d.is_attestation() and d.platform not in seen:
                seen.append(d.platform)
        return seen


def _base_media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _load_json(body: bytes, where: str, what: str, limit: int) -> dict[str, Any]:
    if len(body) > limit:
        raise ImageError(f"{what} for {where} is too large: {len(body)} bytes (limit {limit})",
                         "the registry serves something that is not an image")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})" if isinstance(
            e, json.JSONDecodeError) else "not UTF-8 text"
        raise ImageError(f"invalid {what} for {where}: {reason}",
                         "the registry serves a malformed image; ask its publisher to push it again") from None
    if not isinstance(data, dict):
        raise ImageError(f"invalid {what} for {where}: the JSON is not an object",
                         "the registry serves a malformed image; ask its publisher to push it again")
    return data


def _str_map(value: object, what: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid(where, f"{what} must be an object of strings")
    return dict(value)


def _size(value: object, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(where, f"{what} size is missing or not an integer")
    if value < 0:
        raise _invalid(where, f"{what} size {value} is negative")
    return value


def _platform(value: object, where: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(where, "platform must be an object")
    os_name, arch, variant = value.get("os"), value.get("architecture"), value.get("variant", "")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        raise _invalid(where, "platform needs os and architecture strings")
    if not isinstance(variant, str):
        raise _invalid(where, "platform variant must be a string")
    return normalize(os_name, arch, variant)


def parse_descriptor(value: object, what: str, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(where, f"{what} must be an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(where, f"{what} has no mediaType")
    digest = check_digest(value.get("digest"), what, where)
    size = _size(value.get("size"), what, where)
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _invalid(where, f"{what} urls must be a list of strings")
    artifact_type = value.get("artifactType", "")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=_platform(value.get("platform"), where),
        urls=tuple(urls),
        annotations=_str_map(value.get("annotations"), f"{what} annotations", where),
        artifact_type=artifact_type if isinstance(artifact_type, str) else "",
    )


def detect_media_type(data: dict[str, Any], content_type: str | None, where: str) -> str:
    """The manifest's media type from the Content-Type and the body's own mediaType, which must agree."""
    header = _base_media_type(content_type)
    body_type = data.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise _invalid(where, "mediaType must be a string")
    schema = data.get("schemaVersion")
    if header in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES or schema == 1:
        raise ImageError(
            f"unsupported manifest for {where}: docker schema 1 manifests are deprecated and not supported",
            "push the image again with a current docker, podman or buildah (schema 2 or OCI)",
        )
    if schema != 2:
        raise _invalid(where, f"schemaVersion is {schema!r}, expected 2")
    known_header = header if header in MANIFEST_TYPES else ""
    if body_type and known_header and body_type != known_header:
        raise _invalid(where, f"the registry says {known_header} but the manifest says {body_type}")
    media_type = body_type or known_header
    if not media_type:
        # OCI allows omitting mediaType; tell by shape.
        if "manifests" in data:
            media_type = OCI_INDEX
        elif "config" in data or "layers" in data:
            media_type = OCI_MANIFEST
        else:
            raise _invalid(where, f"cannot tell its type (Content-Type {header or 'missing'}, no mediaType field)")
    if media_type not in MANIFEST_TYPES:
        raise ImageError(
            f"unsupported manifest type {media_type} for {where}",
            "rl pulls docker schema 2 and OCI images; this reference may be a non-image artifact",
        )
    return media_type


def parse_manifest(body: bytes, content_type: str | None, where: str) -> ImageManifest | ImageIndex:
    """Parse and validate a manifest or index; ``where`` names the reference for error messages."""
    data = _load_json(body, where, "manifest", MAX_MANIFEST_SIZE)
    media_type = detect_media_type(data, content_type, where)
    if media_type in INDEX_TYPES:
        return _parse_index(data, media_type, where)
    return _parse_image_manifest(data, media_type, where)


def _parse_index(data: dict[str, Any], media_type: str, where: str) -> ImageIndex:
    entries = data.get("manifests")
    if not isinstance(entries, list):
        raise _invalid(where, "index has no manifests list")
    manifests = tuple(parse_descriptor(e, f"manifests[{i}]", where) for i, e in enumerate(entries))
    if media_type == DOCKER_MANIFEST_LIST:
        for i, d in enumerate(manifests):
            if d.platform is None:
                raise _invalid(where, f"manifests[{i}] of a manifest list has no platform")
    return ImageIndex(media_type, manifests, _str_map(data.get("annotations"), "annotations", where))


def _parse_image_manifest(data: dict[str, Any], media_type: str, where: str) -> ImageManifest:
    if "config" not in data:
        raise _invalid(where, "no config descriptor")
    config = parse_descriptor(data["config"], "config", where)
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list):
        raise _invalid(where, "no layers list")
    layers = tuple(parse_descriptor(item, f"layers[{i}]", where) for i, item in enumerate(raw_layers))
    for i, layer in enumerate(layers):
        check_layer_media_type(layer, i, where)
    return ImageManifest(media_type, config, layers, _str_map(data.get("annotations"), "annotations", where))


def check_layer_media_type(layer: Descriptor, index: int, where: str) -> None:
    if layer.media_type in FOREIGN_LAYER_TYPES or layer.urls:
        raise ImageError(
            f"layer {index} ({layer.digest}) of {where} is a foreign, non-distributable layer "
            f"stored outside the registry{' at ' + layer.urls[0] if layer.urls else ''}",
            "rl pulls only layers the registry itself serves; use a Linux image",
        )
    if layer.media_type not in LAYER_COMPRESSION:
        raise ImageError(
            f"layer {index} ({layer.digest}) of {where} has unsupported media type {layer.media_type}",
            "rl pulls tar layers, plain or compressed with gzip or zstd; this may be a non-image artifact",
        )


def is_index(m: ImageManifest | ImageIndex) -> bool:
    return isinstance(m, ImageIndex)


def choose_platform(index: ImageIndex, want: Platform, where: str) -> Descriptor:
    """The manifest descriptor for ``want`` (with arm variant fallbacks), or ImageError listing what exists."""
    candidates = [(d.platform, d) for d in index.manifests
                  if d.platform is not None and not d.is_attestation() and d.media_type in IMAGE_MANIFEST_TYPES]
    chosen = best_match(((p, d) for p, d in candidates if p is not None), want)
    if chosen is not None:
        return chosen
    available = index.platforms()
    listing = ", ".join(str(p) for p in available) if available else "none"
    raise ImageError(
        f"no image for {want} in {where}: available {listing}",
        "pick one of those with --platform, or use an image built for this platform",
    )


@record(frozen=True)
class HistoryEntry:
    created: str = ""
    created_by: str = ""
    comment: str = ""
    empty_layer: bool = False


@record(frozen=True)
class ImageConfig:
    architecture: str
    os: str
    variant: str
    env: tuple[str, ...]
    cmd: tuple[str, ...] | None
    entrypoint: tuple[str, ...] | None
    working_dir: str
    user: str
    labels: dict[str, str]
    exposed_ports: tuple[str, ...]
    volumes: tuple[str, ...]
    stop_signal: str
    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    created: str
    raw: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def platform(self) -> Platform:
        return normalize(self.os or "linux", self.architecture or "", self.variant)


def _opt_str_list(value: object, what: str, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):  # docker tolerates a bare string in some old images
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad_config(where, f"{what} must be a list of strings")
    return tuple(value)


def _opt_str(value: object, what: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_config(where, f"{what} must be a string")
    return value


def _key_set(value: object, what: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _bad_config(where, f"{what} must be an object")
    return tuple(str(k) for k in value)


def parse_config(body: bytes, where: str, layer_count: int | None = None) -> ImageConfig:
    """Parse an image config blob; with ``layer_count`` check rootfs.diff_ids has one id per layer."""
    data = _load_json(body, where, "image config", MAX_CONFIG_SIZE)
    cfg = data.get("config")
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise _bad_config(where, "config must be an object")
    rootfs = data.get("rootfs")
    if not isinstance(rootfs, dict):
        raise _bad_config(where, "rootfs is missing")
    if rootfs.get("type") != "layers":
        raise _bad_config(where, f"rootfs type is {rootfs.get('type')!r}, expected 'layers'")
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list):
        raise _bad_config(where, "rootfs.diff_ids is missing")
    diff_ids = tuple(check_digest(d, f"rootfs.diff_ids[{i}]", where) for i, d in enumerate(raw_ids))
    if layer_count is not None and layer_count != len(diff_ids):
        raise _bad_config(where, f"{len(diff_ids)} diff_ids for {layer_count} layers")
    labels = cfg.get("Labels")
    labels = {} if labels is None else labels
    if not isinstance(labels, dict):
        raise _bad_config(where, "Labels must be an object")
    raw_history = data.get("history")
    raw_history = [] if raw_history is None else raw_history
    if not isinstance(raw_history, list):
        raise _bad_config(where, "history must be a list")
    history = []
    for h in raw_history:
        if not isinstance(h, dict):
            raise _bad_config(where, "history entries must be objects")
        history.append(HistoryEntry(
            created=_opt_str(h.get("created"), "history created", where),
            created_by=_opt_str(h.get("created_by"), "history created_by", where),
            comment=_opt_str(h.get("comment"), "history comment", where),
            empty_layer=bool(h.get("empty_layer", False)),
        ))
    return ImageConfig(
        architecture=_opt_str(data.get("architecture"), "architecture", where),
        os=_opt_str(data.get("os"), "os", where),
        variant=_opt_str(data.get("variant"), "variant", where),
        env=_opt_str_list(cfg.get("Env"), "Env", where) or (),
        cmd=_opt_str_list(cfg.get("Cmd"), "Cmd", where),
        entrypoint=_opt_str_list(cfg.get("Entrypoint"), "Entrypoint", where),
        working_dir=_opt_str(cfg.get("WorkingDir"), "WorkingDir", where),
        user=_opt_str(cfg.get("User"), "User", where),
        labels={str(k): str(v) for k, v in labels.items()},
        exposed_ports=_key_set(cfg.get("ExposedPorts"), "ExposedPorts", where),
        volumes=_key_set(cfg.get("Volumes"), "Volumes", where),
        stop_signal=_opt_str(cfg.get("StopSignal"), "StopSignal", where),
        diff_ids=diff_ids,
        history=tuple(history),
        created=_opt_str(data.get("created"), "created", where),
        raw=data,
    )
