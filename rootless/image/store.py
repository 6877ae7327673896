"""The image store: blobs, unpacked layers, image records and names, on disk under one root.

Layout of the store root S (the storage drivers depend on it):

    S/blobs/sha256/<hex>            verified blobs (manifests, configs, layer blobs as downloaded)
    S/layers/<diffid-hex>/diff/     an unpacked layer, overlayfs lowerdir format (see unpack.py)
    S/layers/<diffid-hex>/layer.json  {"diff_id", "size", "created", "flattened", ...}; a layer
                                    directory without it is incomplete and invisible
    S/images/<config-hex>/image.json  an ImageRecord
    S/repositories.json             {"name:tag": image id, "name@sha256:...": image id}
    S/tmp/                          work in progress; each item NAME has a lock file NAME.lock
                                    flocked by its owner, so a dead owner's leftovers are known
    S/store.lock                    flock guarding repositories.json and the image records

Writers never make anything visible until it is complete: blobs are verified then renamed into
blobs/, layers are unpacked in tmp/, get their layer.json there, and the whole directory is
renamed into layers/.  Deletions rename into tmp/ first, then delete.  So a crash (even kill -9)
leaves only tmp/ items, which ``check`` reports and ``repair``/``clean_tmp`` remove.

Metadata changes (records, names, deletions) happen under S/store.lock.  Downloads and unpacks
do not hold it; ``put_image`` checks under the lock that everything the record needs exists.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from rootless.errors import ConflictError, ImageError, NotFoundError, StorageError, UsageError
from rootless.records import field, record
from rootless.state.atomic import atomic_write_json, fsync_dir, read_json
from rootless.state.locks import FileLock
from rootless.timefmt import now_rfc3339

if TYPE_CHECKING:
    from rootless.image.unpack import UnpackStats

# hashlib (OpenSSL's, ~2.5 ms) and rootless.image.unpack (tarfile, ~2 ms) are imported where blobs and
# layers are written or removed: `rl run` only looks records and layers up.


def _sha256(data: bytes = b"") -> Any:
    import hashlib

    return hashlib.sha256(data)


def remove_tree(path: str | os.PathLike[str]) -> None:
    from rootless.image.unpack import remove_tree as remove

    remove(path)

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HEX_PREFIX_RE = re.compile(r"^(?:sha256:)?([0-9a-f]{1,64})$")
RECORD_VERSION = 1
_YOUNG = 60.0  # seconds: an unlocked, empty tmp lock younger than this may be a writer starting up
_PULL_HINT = "pull or load the image again"

InUse = Callable[[str], bool]


def now_iso() -> str:
    return now_rfc3339()


def digest_hex(digest: str) -> str:
    """The hex part of a "sha256:<64 hex>" digest; ImageError for anything else."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ImageError(
            f"invalid digest {digest!r}: rl stores only sha256 digests (sha256:<64 hex digits>)",
            "check the image reference or manifest",
        )
    return digest[7:]


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = _sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@record
class ImageRecord:
    """What the store knows of an image; ``id`` is the config digest."""

    id: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    layers: list[dict[str, Any]]  # descriptors: {"mediaType", "digest", "size"}
    diff_ids: list[str]
    platform: dict[str, str] = field(default_factory=dict)  # os, architecture, variant
    created: str = ""  # the config's "created"
    size: int = 0  # sum of the layers' uncompressed sizes (filled by put_image when 0)
    index_digest: str | None = None
    added: str = ""  # when it entered this store
    # Filled when read from the store; not stored in image.json.
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def blob_digests(self) -> list[str]:
        """Blobs the image needs (the index, when known, is kept but not required)."""
        return [self.manifest_digest, self.config_digest, *(layer["digest"] for layer in self.layers)]

    def referenced_blobs(self) -> set[str]:
        refs = set(self.blob_digests())
        if self.index_digest:
            refs.add(self.index_digest)
        return refs

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "id": self.id,
            "manifest_digest": self.manifest_digest,
            "manifest_media_type": self.manifest_media_type,
            "index_digest": self.index_digest,
            "config_digest": self.config_digest,
            "layers": [
                {"mediaType": d["mediaType"], "digest": d["digest"], "size": int(d["size"])} for d in self.layers
            ],
            "diff_ids": list(self.diff_ids),
            "platform": dict(self.platform),
            "created": self.created,
            "size": self.size,
            "added": self.added,
        }

    @classmethod
    def from_json(cls, data: Any) -> ImageRecord:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        rec = cls(
            id=str(data["id"]),
            manifest_digest=str(data["manifest_digest"]),
            manifest_media_type=str(data.get("manifest_media_type", "")),
            config_digest=str(data["config_digest"]),
            layers=[dict(d) for d in data["layers"]],
            diff_ids=[str(d) for d in data["diff_ids"]],
            platform=dict(data.get("platform") or {}),
            created=str(data.get("created") or ""),
            size=int(data.get("size") or 0),
            index_digest=data.get("index_digest"),
            added=str(data.get("added") or ""),
        )
        for d in [rec.id, rec.config_digest, rec.manifest_digest, *rec.diff_ids]:
            digest_hex(d)
        for desc in rec.layers:
            digest_hex(desc["digest"])
        if len(rec.layers) != len(rec.diff_ids):
            raise ValueError("layers and diff_ids differ in length")
        return rec

    def validate(self) -> None:
        try:
            ImageRecord.from_json(self.to_json())
        except (KeyError, ValueError, TypeError, ImageError) as e:
            raise ImageError(f"image record {self.id!r} is invalid: {e}") from None
        if self.id != self.config_digest:
            raise ImageError(f"image record {self.id!r} is invalid: its id is not its config digest")


@record
class LayerInfo:
    diff_id: str
    size: int
    created: str
    flattened: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "diff_id": self.diff_id,
            "size": self.size,
            "created": self.created,
            "flattened": self.flattened,
        }

    @classmethod
    def from_json(cls, data: Any) -> LayerInfo:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        known = {"diff_id", "size", "created", "flattened"}
        return cls(
            diff_id=str(data["diff_id"]),
            size=int(data["size"]),
            created=str(data.get("created", "")),
            flattened=bool(data.get("flattened", False)),
            extra={k: v for k, v in data.items() if k not in known},
        )


@record
class RemoveResult:
    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # image ids
    layers_removed: list[str] = field(default_factory=list)  # diff ids
    blobs_removed: list[str] = field(default_factory=list)
    reclaimed: int = 0  # bytes (layer tar sizes + blob sizes)

    def merge(self, other: RemoveResult) -> None:
        self.untagged += other.untagged
        self.deleted += other.deleted
        self.layers_removed += other.layers_removed
        self.blobs_removed += other.blobs_removed
        self.reclaimed += other.reclaimed


@record
class Problem:
    kind: str  # blob-corrupt, blob-stray, layer-incomplete, layer-corrupt, image-corrupt,
    # image-missing-blob, image-missing-layer, tag-dangling, repositories-corrupt, tmp-stale, temp-file
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


@record
class ImageUsage:
    id: str
    repo_tags: list[str]
    size: int
    shared_size: int
    unique_size: int
    in_use: bool


@record
class DiskUsage:
    images: list[ImageUsage]
    images_size: int  # bytes of distinct layers referenced by images
    layers: int
    layers_size: int
    layers_shared_size: int  # layers used by more than one image
    layers_unique_size: int  # layers used by exactly one image
    layers_unreferenced_size: int
    blobs: int
    blobs_size: int
    tmp_size: int
    reclaimable: int  # layers and blobs of images no container uses


# ---- tmp work items ------------------------------------------------------------------------------


class _Work:
    """An item in S/tmp/ owned by this process: NAME plus NAME.lock, flocked while alive."""

    def __init__(self, tmp: Path, kind: str) -> None:
        name = f"{kind}-{os.getpid()}-{os.urandom(6).hex()}"
        self.path = tmp / name
        self.lock = FileLock(tmp / f"{name}.lock", timeout=0)
        if not self.lock.try_acquire():  # pragma: no cover - a fresh random name
            raise StorageError(f"cannot lock new work item {self.lock.path}")

    def done(self) -> None:
        """The item is gone (renamed into place or deleted): drop the lock file, then the lock."""
        with contextlib.suppress(OSError):
            os.unlink(self.lock.path)
        self.lock.release()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            remove_tree(self.path)
        self.done()


class BlobWriter:
    """A sink for one blob: ``write`` chunks, then ``commit`` verifies and publishes it.

    ``reset()`` restarts (a download from scratch), ``truncate_to(offset)`` keeps the first
    ``offset`` bytes (a Range resume).  As a context manager it commits on success and discards on
    an exception.
    """

    def __init__(self, store: Store, digest: str | None, size: int | None = None) -> None:
        if digest is not None:
            digest_hex(digest)
        self.digest = digest  # None: named by its content at commit (archives, imports)
        self.expected_size = size if size is not None and size >= 0 else None
        self._store = store
        self._work = _Work(store.tmp_dir, "blob")
        try:
            self._f: BinaryIO = open(self._work.path, "w+b")  # noqa: SIM115
        except OSError as e:
            self._work.done()
            raise StorageError(
                f"cannot create {self._work.path}: {e.strerror}", "check the storage directory"
            ) from None
        self._sha = _sha256()
        self.offset = 0
        self.path: Path | None = None  # the published blob, after commit
        self._open = True

    def tell(self) -> int:
        return self.offset

    def write(self, data: bytes) -> int:
        if not self._open:
            raise StorageError(f"blob {self.digest}: write after commit or abort")
        n = len(data)
        if self.expected_size is not None and self.offset + n > self.expected_size:
            raise ImageError(
                f"blob {self.digest} is larger than the {self.expected_size} bytes its descriptor says",
                "the registry or archive sent something else; try again",
            )
        try:
            self._f.write(data)
        except OSError as e:
            raise StorageError(f"cannot write blob {self.digest}: {e.strerror}", "check free space") from None
        self._sha.update(data)
        self.offset += n
        return n

    def reset(self) -> None:
        self.truncate_to(0)

    def truncate_to(self, offset: int) -> None:
        if offset < 0 or offset > self.offset:
            raise ValueError(f"cannot truncate blob {self.digest} to {offset} (have {self.offset} bytes)")
        self._f.flush()
        self._f.truncate(offset)
        self._sha = _sha256()
        self._f.seek(0)
        left = offset
        while left:
            chunk = self._f.read(min(left, 1 << 20))
            if not chunk:  # pragma: no cover - the file shrank under us
                raise StorageError(f"blob {self.digest}: temporary file shrank while resuming")
            self._sha.update(chunk)
            left -= len(chunk)
        self._f.seek(offset)
        self.offset = offset

    def commit(self) -> Path:
        if not self._open:
            raise StorageError(f"blob {self.digest}: already committed or aborted")
        try:
            if self.expected_size is not None and self.offset != self.expected_size:
                raise ImageError(
                    f"blob {self.digest} is {self.offset} bytes, its descriptor says {self.expected_size}",
                    "the download was cut short or corrupted; try again",
                )
            got = "sha256:" + self._sha.hexdigest()
            if self.digest is None:
                self.digest = got
            if got != self.digest:
                raise ImageError(
                    f"blob {self.digest} does not match its digest: the content is {got}",
                    "the download was corrupted; try again",
                )
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.chmod(self._work.path, 0o644)
            final = self._store.blob_path(self.digest)
            os.replace(self._work.path, final)
            fsync_dir(final.parent)
        except BaseException:
            self.abort()
            raise
        self._open = False
        self._work.done()
        self.path = final
        return final

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(OSError):
            self._f.close()
        self._work.discard()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if self._open:
                self.commit()
        else:
            self.abort()


class LayerWriter:
    """A layer being unpacked into S/tmp; see Store.layer_writer."""

    def __init__(self, store: Store, diff_id: str, label: str) -> None:
        from rootless.image.unpack import label_for

        self.diff_id = diff_id
        self.label = label or label_for(diff_id)
        self._store = store
        self._work = _Work(store.tmp_dir, "layer")
        try:
            os.mkdir(self._work.path, 0o700)
            os.mkdir(self._work.path / "diff", 0o755)
        except OSError as e:
            self._work.discard()
            raise StorageError(
                f"cannot create {self._work.path}: {e.strerror}", "check the storage directory"
            ) from None
        self.path = self._work.path / "diff"
        self.stats: UnpackStats | None = None
        self.info: LayerInfo | None = None
        self.reused = False  # another process published the same layer first; ours was discarded

    def unpack(self, stream: BinaryIO, compression_kind: str | None = None, verify: bool = True) -> UnpackStats:
        """Extract ``stream`` (compression sniffed when None) and check it hashes to the diff id."""
        from rootless.image.unpack import unpack

        self.stats = unpack(
            stream,
            self.path,
            label=self.label,
            compression_kind=compression_kind,
            expected_diff_id=self.diff_id if verify else None,
        )
        return self.stats

    def _commit(self) -> LayerInfo:
        if self.stats is None:
            raise StorageError(f"{self.label}: nothing was unpacked")
        info = LayerInfo(
            diff_id=self.diff_id,
            size=self.stats.size,
            created=now_iso(),
            flattened=self.stats.flattened,
            extra={
                "entries": self.stats.entries,
                "skipped_devices": self.stats.skipped_devices,
                "skipped_xattrs": len(self.stats.skipped_xattrs),
            },
        )
        atomic_write_json(self._work.path / "layer.json", info.to_json())
        final = self._store.layer_path(self.diff_id)
        for _attempt in range(3):
            try:
                os.rename(self._work.path, final)
                fsync_dir(final.parent)
                self._work.done()
                self.info = info
                return info
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    self._work.discard()
                    raise StorageError(f"cannot store {self.label} in {final}: {e.strerror}") from None
            existing = self._store.layer_info(self.diff_id)
            if existing is not None:
                self._work.discard()
                self.reused = True
                self.info = existing
                return existing
            # A directory without layer.json (made by hand or by an old rl): move it away.
            with self._store.lock():
                if self._store.layer_info(self.diff_id) is None and final.exists():
                    self._store._trash(final).discard()
        self._work.discard()
        raise StorageError(f"cannot store {self.label}: {final} keeps reappearing", "retry the command")


# ---- the store ---------------------------------------------------------------------------------------


class Store:
    def __init__(self, root: str | os.PathLike[str], lock_timeout: float = 60.0) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.layers_dir = self.root / "layers"
        self.images_dir = self.root / "images"
        self.tmp_dir = self.root / "tmp"
        self.repos_path = self.root / "repositories.json"
        self.lock_path = self.root / "store.lock"
        self.lock_timeout = lock_timeout
        self.ensure()

    def ensure(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for d in (self.blobs_dir, self.layers_dir, self.images_dir, self.tmp_dir):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(
                f"cannot create the image store in {self.root}: {e.strerror}",
                "check that the storage directory is writable, or choose another with --root",
            ) from None

    def lock(self, timeout: float | None = None) -> FileLock:
        """The store's metadata lock (exclusive), as a context manager."""
        return FileLock(self.lock_path, timeout=self.lock_timeout if timeout is None else timeout, what="image store")

    # ---- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store", _PULL_HINT) from None

    def blob_writer(self, digest: str | None, size: int | None = None) -> BlobWriter:
        """A sink for a blob; with ``digest=None`` the blob is named by its content on commit."""
        return BlobWriter(self, digest, size)

    def put_blob_stream(self, stream: BinaryIO, digest: str | None = None, size: int | None = None) -> str:
        """Copy a stream into a blob (verified when ``digest`` is given); returns the digest."""
        if digest is not None and self.has_blob(digest):
            return digest
        with self.blob_writer(digest, size) as w:
            while chunk := stream.read(1 << 20):
                w.write(chunk)
        assert w.digest is not None
        return w.digest

    def put_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store a small blob (manifest, config) and return its digest."""
        digest = digest or "sha256:" + _sha256(data).hexdigest()
        if self.has_blob(digest):
            return digest
        with self.blob_writer(digest, len(data)) as w:
            w.write(data)
        return digest

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store", _PULL_HINT) from None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store", _PULL_HINT) from None

    # ---- layers --------------------------------------------------------------------------------

    def layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / digest_hex(diff_id)

    def layer_dir(self, diff_id: str) -> Path:
        """The directory to use as an overlay lowerdir."""
        return self.layer_path(diff_id) / "diff"

    def layer_info(self, diff_id: str) -> LayerInfo | None:
        """The layer's metadata, or None when it is absent or incomplete."""
        path = self.layer_path(diff_id) / "layer.json"
        try:
            # Missing now means absent, whatever appears after: another pull may publish the layer
            # between a failed open and a second look (seen as a spurious error in concurrent pulls).
            data = read_json(path, default=None, what="layer metadata")
            return None if data is None else LayerInfo.from_json(data)
        except (KeyError, ValueError, TypeError):
            raise StorageError(
                f"layer metadata {path} is corrupt", "repair the store, then pull the image again"
            ) from None

    def layer_present(self, diff_id: str) -> bool:
        return (self.layer_path(diff_id) / "layer.json").is_file()

    @contextlib.contextmanager
    def layer_writer(self, diff_id: str, label: str = "") -> Iterator[LayerWriter]:
        """Unpack a layer: ``with store.layer_writer(d) as lw: lw.unpack(stream)``.

        On success the layer is published (or, when another process published it first, ours is
        discarded and ``lw.reused`` is set); on an exception the temporary tree is removed.
        """
        digest_hex(diff_id)
        lw = LayerWriter(self, diff_id, label)
        try:
            yield lw
        except BaseException:
            lw._work.discard()
            raise
        lw._commit()

    def add_layer(
        self,
        diff_id: str,
        stream: BinaryIO,
        compression_kind: str | None = None,
        label: str = "",
    ) -> LayerInfo:
        """Unpack ``stream`` as layer ``diff_id`` unless present; one process at a time per layer."""
        info = self.layer_info(diff_id)
        if info is not None:
            return info
        inflight = FileLock(self.tmp_dir / f"inflight-{digest_hex(diff_id)}.lock", timeout=None)
        with inflight:
            try:
                info = self.layer_info(diff_id)
                if info is None:
                    with self.layer_writer(diff_id, label) as lw:
                        lw.unpack(stream, compression_kind)
                    assert lw.info is not None
                    info = lw.info
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(inflight.path)
        return info

    def add_layer_from_blob(self, diff_id: str, blob_digest: str, label: str = "") -> LayerInfo:
        """Unpack the stored blob ``blob_digest`` as layer ``diff_id`` (compression sniffed)."""
        if self.layer_present(diff_id):
            info = self.layer_info(diff_id)
            if info is not None:
                return info
        with self.open_blob(blob_digest) as f:
            return self.add_layer(diff_id, f, None, label)

    def list_layers(self) -> list[str]:
        """diff ids of the complete layers."""
        out = []
        for p in _listdir(self.layers_dir):
            if (self.layers_dir / p / "layer.json").is_file():
                out.append("sha256:" + p)
        return out

    # ---- names ---------------------------------------------------------------------------------

    def _read_repos(self) -> dict[str, str]:
        data = read_json(self.repos_path, default={}, what="image names file")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise StorageError(f"image names file {self.repos_path} is corrupt", "repair the store to reset the names")
        return data

    def _write_repos(self, repos: dict[str, str]) -> None:
        atomic_write_json(self.repos_path, dict(sorted(repos.items())))

    @staticmethod
    def _check_name(name: str) -> None:
        last = name.rsplit("/", 1)[-1]
        if not name or any(c.isspace() for c in name) or not ("@" in name or ":" in last):
            raise UsageError(
                f"invalid image name {name!r}: expected name:tag or name@sha256:digest",
                "give a full name such as docker.io/library/alpine:latest",
            )

    def names(self) -> dict[str, str]:
        """All names: {"name:tag" or "name@digest": image id}."""
        return self._read_repos()

    def _names_of(self, repos: dict[str, str], image_id: str) -> tuple[list[str], list[str]]:
        tags = sorted(k for k, v in repos.items() if v == image_id and "@" not in k)
        digests = sorted(k for k, v in repos.items() if v == image_id and "@" in k)
        return tags, digests

    # ---- images --------------------------------------------------------------------------------

    def _image_file(self, image_id: str) -> Path:
        return self.images_dir / digest_hex(image_id) / "image.json"

    def _load_record(self, image_id: str) -> ImageRecord:
        path = self._image_file(image_id)
        data = read_json(path, default=None, what="image record")
        if data is None:
            raise NotFoundError(f"no such image: {image_id}", "list images with 'rl images'")
        try:
            return ImageRecord.from_json(data)
        except (KeyError, ValueError, TypeError, ImageError) as e:
            raise StorageError(f"image record {path} is corrupt: {e}", "repair the store") from None

    def get_image(self, image_id: str) -> ImageRecord:
        rec = self._load_record(image_id)
        rec.repo_tags, rec.repo_digests = self._names_of(self._read_repos(), rec.id)
        return rec

    def image_ids(self) -> list[str]:
        return ["sha256:" + h for h in _listdir(self.images_dir) if (self.images_dir / h / "image.json").is_file()]

    def list_images(self) -> list[ImageRecord]:
        repos = self._read_repos()
        out = []
        for image_id in self.image_ids():
            try:
                rec = self._load_record(image_id)
            except (NotFoundError, StorageError):
                continue  # removed meanwhile, or corrupt (check() reports it)
            rec.repo_tags, rec.repo_digests = self._names_of(repos, rec.id)
            out.append(rec)
        out.sort(key=lambda r: (r.added, r.id), reverse=True)
        return out

    def missing_for(self, record: ImageRecord) -> list[str]:
        """What ``record`` needs that the store lacks ("blob sha256:..", "layer sha256:..")."""
        missing = [f"blob {d}" for d in record.blob_digests() if not self.has_blob(d)]
        missing += [f"layer {d}" for d in record.diff_ids if not self.layer_present(d)]
        return missing

    def put_image(self, record: ImageRecord, names: Iterable[str] = ()) -> ImageRecord:
        """Store ``record`` and point ``names`` at it (moving them from other images)."""
        record.validate()
        names = list(names)
        for n in names:
            self._check_name(n)
        with self.lock():
            missing = self.missing_for(record)
            if missing:
                raise StorageError(
                    f"cannot store image {record.short_id}: {missing[0]} is missing "
                    "(removed by another rl command meanwhile?)",
                    "run the command again",
                )
            if not record.size:
                record.size = sum(self._layer_size(d) for d in dict.fromkeys(record.diff_ids))
            try:
                old = self._load_record(record.id)
                record.added = old.added or record.added
            except (NotFoundError, StorageError):
                pass
            record.added = record.added or now_iso()
            path = self._image_file(record.id)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write_json(path, record.to_json())
            if names:
                repos = self._read_repos()
                for n in names:
                    repos[n] = record.id
                self._write_repos(repos)
            repos = self._read_repos()
        record.repo_tags, record.repo_digests = self._names_of(repos, record.id)
        return record

    def _layer_size(self, diff_id: str) -> int:
        try:
            info = self.layer_info(diff_id)
        except StorageError:
            return 0
        return info.size if info else 0

    def resolve(self, ref: str) -> ImageRecord:
        """An image by full or short id (with or without "sha256:"), name:tag or name@digest.

        Names are matched as given (the caller normalises them); a name without tag or digest also
        matches name:latest.
        """
        ref = ref.strip()
        repos = self._read_repos()
        image_id = repos.get(ref)
        if image_id is None and "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]:
            image_id = repos.get(ref + ":latest")
        if image_id is None:
            m = _HEX_PREFIX_RE.match(ref)
            if m:
                prefix = m.group(1)
                matches = [h for h in _listdir(self.images_dir) if h.startswith(prefix)]
                matches = [h for h in matches if (self.images_dir / h / "image.json").is_file()]
                if len(matches) > 1:
                    raise UsageError(
                        f"image id prefix {ref!r} is ambiguous: it matches {len(matches)} images",
                        "give more characters of the id",
                    )
                if matches:
                    image_id = "sha256:" + matches[0]
        if image_id is None:
            raise NotFoundError(f"no such image: {ref}", "list images with 'rl images', or pull it")
        rec = self._load_record(image_id)
        rec.repo_tags, rec.repo_digests = self._names_of(repos, rec.id)
        return rec

    def tag(self, ref: str, name: str) -> ImageRecord:
        """Point ``name`` (name:tag) at the image ``ref`` resolves to."""
        self._check_name(name)
        with self.lock():
            rec = self.resolve(ref)
            repos = self._read_repos()
            repos[name] = rec.id
            self._write_repos(repos)
        rec.repo_tags, rec.repo_digests = self._names_of(repos, rec.id)
        return rec

    def untag(self, name: str) -> str:
        """Remove the name; returns the image id it pointed to."""
        with self.lock():
            repos = self._read_repos()
            image_id = repos.pop(name, None)
            if image_id is None:
                raise NotFoundError(f"no such image name: {name}", "list images with 'rl images'")
            self._write_repos(repos)
        return image_id

    # ---- removal -------------------------------------------------------------------------------

    def remove_image(self, ref: str, force: bool = False, in_use: InUse | None = None) -> RemoveResult:
        """``rl rmi``: untag, and delete the image when no name is left.

        Removing by name drops that name; the image goes when it has no tag left.  Removing by id
        an image with several tags needs ``force``.  An image ``in_use`` (by a container) is
        refused; with ``force`` it is only untagged and stays for its containers.  Layers and blobs
        no other image uses are deleted.
        """
        result = RemoveResult()
        doomed: list[_Work] = []
        with self.lock():
            repos = self._read_repos()
            by_name = ref in repos
            rec = self.resolve(ref)
            tags, digests = self._names_of(repos, rec.id)
            used = bool(in_use and in_use(rec.id))
            if by_name:
                del repos[ref]
                result.untagged.append(ref)
                tags = [t for t in tags if t != ref]
                digests = [d for d in digests if d != ref]
                if tags:
                    self._write_repos(repos)
                    return result
            elif len(tags) > 1 and not force:
                raise ConflictError(
                    f"cannot remove image {rec.short_id}: it is referenced by {len(tags)} names ({', '.join(tags)})",
                    "remove the names one by one, or use --force",
                )
            if used:
                if not force:
                    raise ConflictError(
                        f"cannot remove image {ref}: a container uses image {rec.short_id}",
                        "remove the container first, or use --force to only untag the image",
                    )
                for n in tags + digests:
                    repos.pop(n, None)
                    result.untagged.append(n)
                self._write_repos(repos)
                return result
            for n in tags + digests:
                repos.pop(n, None)
                result.untagged.append(n)
            self._write_repos(repos)
            doomed += self._delete_images_locked([rec.id], result)
        for w in doomed:
            w.discard()
        return result

    def _delete_images_locked(self, image_ids: list[str], result: RemoveResult) -> list[_Work]:
        """Delete records and whatever only they used; returns trash items to discard later."""
        trash: list[_Work] = []
        gone = set(image_ids)
        for image_id in image_ids:
            try:
                rec = self._load_record(image_id)
            except (NotFoundError, StorageError):
                rec = None
            d = self._image_file(image_id).parent
            if d.exists():
                trash.append(self._trash(d))
            result.deleted.append(image_id)
            if rec is None:
                continue
            keep_blobs, keep_layers = self._references(exclude=gone)
            for diff_id in dict.fromkeys(rec.diff_ids):
                if diff_id in keep_layers:
                    continue
                path = self.layer_path(diff_id)
                if path.exists():
                    result.reclaimed += self._layer_size(diff_id)
                    trash.append(self._trash(path))
                    result.layers_removed.append(diff_id)
            for digest in rec.referenced_blobs():
                if digest in keep_blobs:
                    continue
                with contextlib.suppress(OSError, ImageError):
                    p = self.blob_path(digest)
                    size = p.stat().st_size
                    p.unlink()
                    result.reclaimed += size
                    result.blobs_removed.append(digest)
        return trash

    def _references(self, exclude: Iterable[str] = ()) -> tuple[set[str], set[str]]:
        exclude = set(exclude)
        blobs: set[str] = set()
        layers: set[str] = set()
        for image_id in self.image_ids():
            if image_id in exclude:
                continue
            try:
                rec = self._load_record(image_id)
            except (NotFoundError, StorageError):
                continue
            blobs |= rec.referenced_blobs()
            layers.update(rec.diff_ids)
        return blobs, layers

    def _trash(self, path: Path) -> _Work:
        """Atomically move ``path`` into tmp/ as a work item; the caller discards it (deletes it,
        best outside the store lock).  If we die first, the item is stale and clean_tmp removes it."""
        work = _Work(self.tmp_dir, "trash")
        try:
            os.rename(path, work.path)
        except BaseException:
            work.done()
            raise
        return work

    def prune(
        self,
        dangling_only: bool = True,
        in_use: InUse | None = None,
        orphans_older_than: float = 3600.0,
    ) -> RemoveResult:
        """Delete images without tags (all unused images when not ``dangling_only``), then layers
        and blobs no image references that are older than ``orphans_older_than`` seconds (left by
        interrupted pulls; younger ones may belong to a pull in progress)."""
        result = RemoveResult()
        doomed: list[_Work] = []
        with self.lock():
            repos = self._read_repos()
            victims = []
            for image_id in self.image_ids():
                tags, _digests = self._names_of(repos, image_id)
                if dangling_only and tags:
                    continue
                if in_use and in_use(image_id):
                    continue
                victims.append(image_id)
            for image_id in victims:
                for n in [k for k, v in repos.items() if v == image_id]:
                    del repos[n]
                    result.untagged.append(n)
            if victims:
                self._write_repos(repos)
            doomed += self._delete_images_locked(victims, result)
            doomed += self._prune_orphans_locked(result, orphans_older_than)
        for w in doomed:
            w.discard()
        return result

    def _prune_orphans_locked(self, result: RemoveResult, older_than: float) -> list[_Work]:
        trash: list[_Work] = []
        keep_blobs, keep_layers = self._references()
        limit = time.time() - older_than
        for h in _listdir(self.layers_dir):
            diff_id = "sha256:" + h
            path = self.layers_dir / h
            if diff_id in keep_layers:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime > limit:
                    continue
                result.reclaimed += self._layer_size(diff_id)
                trash.append(self._trash(path))
                result.layers_removed.append(diff_id)
        for h in _listdir(self.blobs_dir):
            digest = "sha256:" + h
            if digest in keep_blobs:
                continue
            with contextlib.suppress(OSError):
                p = self.blobs_dir / h
                st = p.stat()
                if st.st_mtime > limit:
                    continue
                p.unlink()
                result.reclaimed += st.st_size
                result.blobs_removed.append(digest)
        return trash

    # ---- tmp -----------------------------------------------------------------------------------

    def _tmp_items(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(stale, active) tmp entries as (name, reason)."""
        stale: list[tuple[str, str]] = []
        active: list[tuple[str, str]] = []
        names = set(_listdir(self.tmp_dir))
        bases = {n[:-5] if n.endswith(".lock") else n for n in names}
        for base in sorted(bases):
            lock_name = base + ".lock"
            if lock_name not in names:
                stale.append((base, "no owner"))
                continue
            lock_path = self.tmp_dir / lock_name
            holder = _read_small(lock_path)
            try:
                young = time.time() - lock_path.stat().st_mtime < _YOUNG
            except FileNotFoundError:
                continue
            probe = FileLock(lock_path, timeout=0, create=False, record_pid=False)
            try:
                taken = probe.try_acquire()
            except FileNotFoundError:
                continue  # finished meanwhile
            if not taken:
                active.append((base, f"in use by pid {holder or '?'}"))
                continue
            probe.release()
            if not holder and young and not base.startswith("inflight-"):
                active.append((base, "starting"))
                continue
            stale.append((base, f"owner pid {holder or '?'} is gone"))
        return stale, active

    def clean_tmp(self) -> list[str]:
        """Remove tmp items whose owner process is dead; returns their names."""
        removed = []
        stale, _active = self._tmp_items()
        for base, _reason in stale:
            lock_path = self.tmp_dir / (base + ".lock")
            probe = FileLock(lock_path, timeout=0, create=False, record_pid=False)
            try:
                have_lock = probe.try_acquire()
                if not have_lock:
                    continue  # someone took it meanwhile
            except FileNotFoundError:
                have_lock = False
            try:
                with contextlib.suppress(OSError):
                    remove_tree(self.tmp_dir / base)
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
            finally:
                if have_lock:
                    probe.release()
            removed.append(base)
        return removed

    # ---- disk usage ----------------------------------------------------------------------------

    def df(self, in_use: InUse | None = None) -> DiskUsage:
        images = self.list_images()
        refcount: dict[str, int] = {}
        for rec in images:
            for d in set(rec.diff_ids):
                refcount[d] = refcount.get(d, 0) + 1
        sizes = {d: self._layer_size(d) for d in self.list_layers()}
        usage = []
        reclaimable_layers: set[str] = set()
        used_layers: set[str] = set()
        for rec in images:
            ds = set(rec.diff_ids)
            shared = sum(sizes.get(d, 0) for d in ds if refcount[d] > 1)
            unique = sum(sizes.get(d, 0) for d in ds if refcount[d] == 1)
            used = bool(in_use and in_use(rec.id))
            (used_layers if used else reclaimable_layers).update(ds)
            usage.append(ImageUsage(rec.id, rec.repo_tags, shared + unique, shared, unique, used))
        blobs = [self.blobs_dir / h for h in _listdir(self.blobs_dir)]
        blob_size = sum(_size(p) for p in blobs)
        referenced = set(refcount)
        return DiskUsage(
            images=usage,
            images_size=sum(sizes.get(d, 0) for d in referenced),
            layers=len(sizes),
            layers_size=sum(sizes.values()),
            layers_shared_size=sum(s for d, s in sizes.items() if refcount.get(d, 0) > 1),
            layers_unique_size=sum(s for d, s in sizes.items() if refcount.get(d, 0) == 1),
            layers_unreferenced_size=sum(s for d, s in sizes.items() if d not in referenced),
            blobs=len(blobs),
            blobs_size=blob_size,
            tmp_size=_tree_size(self.tmp_dir),
            reclaimable=sum(sizes.get(d, 0) for d in reclaimable_layers - used_layers),
        )

    # ---- consistency ---------------------------------------------------------------------------

    def check(self, verify_blobs: bool = True) -> list[Problem]:
        """Everything inconsistent in the store (see Problem.kind); nothing is changed."""
        problems: list[Problem] = []
        for h in _listdir(self.blobs_dir):
            p = self.blobs_dir / h
            if not re.fullmatch(r"[0-9a-f]{64}", h) or not p.is_file():
                problems.append(Problem("blob-stray", str(p), "not a blob name"))
            elif verify_blobs:
                got = sha256_file(p)
                if got != "sha256:" + h:
                    problems.append(Problem("blob-corrupt", str(p), f"content is {got}"))
        for h in _listdir(self.layers_dir):
            p = self.layers_dir / h
            if not (p / "layer.json").is_file():
                problems.append(Problem("layer-incomplete", str(p), "no layer.json"))
                continue
            try:
                info = LayerInfo.from_json(read_json(p / "layer.json"))
                if info.diff_id != "sha256:" + h or not (p / "diff").is_dir():
                    raise ValueError("diff id or diff/ wrong")
            except (StorageError, KeyError, ValueError, TypeError) as e:
                problems.append(Problem("layer-corrupt", str(p), str(e)))
        image_ids = set()
        for h in _listdir(self.images_dir):
            p = self.images_dir / h / "image.json"
            try:
                rec = ImageRecord.from_json(read_json(p))
                if rec.id != "sha256:" + h:
                    raise ValueError(f"id {rec.id} does not match the directory")
            except (StorageError, KeyError, ValueError, TypeError, ImageError) as e:
                problems.append(Problem("image-corrupt", str(p), str(e).splitlines()[0]))
                continue
            image_ids.add(rec.id)
            for d in rec.blob_digests():
                if not self.has_blob(d):
                    problems.append(Problem("image-missing-blob", str(p), f"blob {d} is missing"))
            for d in rec.diff_ids:
                if not self.layer_present(d):
                    problems.append(Problem("image-missing-layer", str(p), f"layer {d} is missing"))
        try:
            repos = self._read_repos()
        except StorageError as e:
            problems.append(Problem("repositories-corrupt", str(self.repos_path), e.message))
            repos = {}
        for name, image_id in sorted(repos.items()):
            if image_id not in image_ids:
                problems.append(Problem("tag-dangling", name, f"points to missing image {image_id}"))
        stale, _active = self._tmp_items()
        for base, reason in stale:
            problems.append(Problem("tmp-stale", str(self.tmp_dir / base), reason))
        for folder in [self.root, *(self.images_dir / h for h in _listdir(self.images_dir))]:
            for n in _listdir(folder):
                if n.startswith(".") and ".tmp-" in n:
                    problems.append(Problem("temp-file", str(folder / n), "left by an interrupted write"))
        return problems

    def repair(self) -> list[Problem]:
        """Remove whatever check() finds broken; returns the problems that were fixed."""
        fixed: list[Problem] = []
        doomed: list[_Work] = []
        with self.lock():
            problems = self.check(verify_blobs=True)
            result = RemoveResult()
            bad_images: list[str] = []
            for pr in problems:
                p = Path(pr.path)
                if pr.kind in ("blob-corrupt", "blob-stray"):
                    with contextlib.suppress(OSError):
                        remove_tree(p)
                elif pr.kind in ("layer-incomplete", "layer-corrupt"):
                    with contextlib.suppress(OSError):
                        doomed.append(self._trash(p))
                elif pr.kind == "image-corrupt":
                    with contextlib.suppress(OSError):
                        doomed.append(self._trash(p.parent))
                elif pr.kind in ("image-missing-blob", "image-missing-layer"):
                    bad_images.append("sha256:" + p.parent.name)
                elif pr.kind == "repositories-corrupt":
                    self._write_repos({})
                elif pr.kind == "temp-file":
                    with contextlib.suppress(OSError):
                        os.unlink(p)
                elif pr.kind != "tmp-stale":
                    continue
                fixed.append(pr)
            if bad_images:
                doomed += self._delete_images_locked(list(dict.fromkeys(bad_images)), result)
            repos = self._read_repos()
            live = set(self.image_ids())
            dangling = [n for n, v in repos.items() if v not in live]
            for n in dangling:
                del repos[n]
                fixed.append(Problem("tag-dangling", n, "removed"))
            if dangling:
                self._write_repos(repos)
        for w in doomed:
            w.discard()
        self.clean_tmp()
        return fixed


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _read_small(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(32).decode("ascii", "replace").strip()
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames + dirnames:
            total += _size(Path(dirpath) / n)
    return total


__all__ = [
    "BlobWriter",
    "DiskUsage",
    "ImageRecord",
    "LayerInfo",
    "LayerWriter",
    "Problem",
    "RemoveResult",
    "Store",
    "digest_hex",
]
