"""Pulling and pushing images: registry options, reference candidates, and the layer pipeline.

A pull resolves the reference (a short name through the search registries, first that answers),
fetches the manifest (an index picks the platform), verifies and stores the manifest and config
blobs, then fetches the layers on a small thread pool. Each layer's bytes go from the registry
client's sink into both the blob writer and, through a bounded queue, an unpacker thread that
extracts them as they arrive. The layer is published only after the blob verified; when the
client has to start a download over (a broken transfer without range support, a digest mismatch)
the streaming unpack is abandoned and the layer is unpacked from the stored blob instead. Layers
and blobs already in the store are skipped. The image record (and its names) is written last, so
an interrupted pull leaves only work items in S/tmp, which the next command's store cleans.

The caller enters the user namespace before calling :func:`pull_image`: the kernel refuses
``setns`` to a threaded process, and the layers must be unpacked as the namespace's root so that
their files belong to the image's own ids.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, cast

from rootless.engine import progress as pr
from rootless.engine.registries import RegistryOptions
from rootless.errors import AuthError, ImageError, NotFoundError, RegistryError, RLError
from rootless.image import manifest as mf
from rootless.image import reference as refs
from rootless.image.auth import Credentials
from rootless.image.platform import Platform, host_platform, matches
from rootless.image.registry import RegistryClient
from rootless.image.store import BlobWriter, ImageRecord, Store
from rootless.image.unpack import label_for
from rootless.log import log
from rootless.records import record

PARALLEL_LAYERS = 3
_QUEUE_CHUNKS = 64  # 64 x 256 KiB of downloaded bytes may wait for the unpacker
_EOF: Any = None


@record
class PullResult:
    record: ImageRecord
    reference: refs.Reference  # the candidate that answered
    digest: str  # what the reference points to in the registry (the index's digest for an index)
    downloaded: bool  # new blobs or layers came in
    existed: bool  # the image was complete in the store before
    flattened: bool  # some layer's ownership was flattened (single-ID namespace)


def _is_fallback_error(e: RLError) -> bool:
    """A candidate's error that makes a short-name pull try the next search registry: not found,
    unauthorized, or unreachable (a malformed image is an answer, not a reason to look elsewhere)."""
    return isinstance(e, NotFoundError | AuthError | RegistryError)


@record
class Resolved:
    """The manifest a reference resolved to (through an index for the wanted platform)."""

    client: RegistryClient
    reference: refs.Reference
    body: bytes
    media_type: str
    digest: str
    manifest: mf.ImageManifest
    index_body: bytes | None = None
    index_digest: str | None = None


def resolve_manifest(text: str, opts: RegistryOptions, want: Platform | None, reporter: pr.Reporter) -> Resolved:
    """The first candidate reference that has the image, with its manifest (the client stays open)."""
    candidates = refs.candidates(text, opts.search)
    errors: list[RLError] = []
    for ref in candidates:
        client = opts.client(ref.registry, ref.repository)
        try:
            if len(candidates) > 1:
                reporter.note(f"Trying to pull {ref}...")
            body, media_type, digest = client.get_manifest(ref.repository, ref.for_ref())
            parsed = mf.parse_manifest(body, media_type, str(ref))
            index_body: bytes | None = None
            index_digest: str | None = None
            if isinstance(parsed, mf.ImageIndex):
                index_body, index_digest = body, digest
                chosen = mf.choose_platform(parsed, want or host_platform(), str(ref))
                body, media_type, digest = client.get_manifest(ref.repository, chosen.digest)
                if digest != chosen.digest:
                    raise ImageError(f"manifest {chosen.digest} of {ref} does not match its digest: got {digest}",
                                     "the registry returned different content; try again")
                parsed = mf.parse_manifest(body, media_type, f"{ref}@{digest}")
                if not isinstance(parsed, mf.ImageManifest):
                    raise ImageError(f"the index {ref} points to another index for {want or host_platform()}",
                                     "rl follows one level of index; use the image's manifest digest")
            return Resolved(client, ref, body, media_type or parsed.media_type, digest, parsed, index_body,
                            index_digest)
        except RLError as e:
            client.close()
            if len(candidates) > 1 and _is_fallback_error(e):
                log.debug("%s: %s; trying the next search registry", ref, e.line())
                errors.append(e)
                continue
            raise
    tried = ", ".join(str(c) for c in candidates)
    first = errors[0] if errors else None
    raise NotFoundError(
        f"cannot pull {text}: no search registry has it (tried {tried})"
        + (f"; {first.message}" if first else ""),
        "check the name, or give the full reference with its registry",
    )


# ----------------------------------------------------------------------------------- the pipeline


class _Aborted(Exception):
    """The download feeding the unpacker started over or failed: drop the partial layer."""


class _Cancelled(Exception):
    """Another layer failed: stop this one."""


_ABORT = object()


class _Feed(io.RawIOBase):
    """A bounded queue of downloaded chunks read as a file by the unpacker thread."""

    def __init__(self) -> None:
        super().__init__()
        self.q: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self.done = threading.Event()  # the reader stopped (finished or failed)
        self._buf = memoryview(b"")
        self._eof = False

    # producer side
    def put(self, item: Any) -> bool:
        """Queue ``item``; False when the reader has stopped."""
        while not self.done.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    # consumer side
    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        if self._eof:
            return False
        item = self.q.get()
        if item is _ABORT:
            raise _Aborted()
        if item is _EOF:
            self._eof = True
            return False
        self._buf = memoryview(item)
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self._buf and not self._next():
            return b""
        if size is None or size < 0 or size >= len(self._buf):
            out = bytes(self._buf)
            self._buf = memoryview(b"")
            return out
        out = bytes(self._buf[:size])
        self._buf = self._buf[size:]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Unpacker:
    """A thread unpacking one layer from a :class:`_Feed` into the store."""

    def __init__(self, store: Store, diff_id: str, label: str) -> None:
        self.feed = _Feed()
        self.error: BaseException | None = None
        self.flattened = False
        self._store = store
        self._diff_id = diff_id
        self._label = label
        self._thread = threading.Thread(target=self._run, name=f"unpack-{pr.short_id(diff_id)}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._store.layer_writer(self._diff_id, self._label) as lw:
                stats = lw.unpack(cast(BinaryIO, self.feed), None)
            self.flattened = stats.flattened and not lw.reused
        except BaseException as e:
            self.error = e
        finally:
            self.feed.done.set()

    @property
    def alive(self) -> bool:
        return not self.feed.done.is_set()

    def finish(self) -> None:
        self.feed.put(_EOF)
        self._thread.join()

    def abort(self) -> None:
        self.feed.put(_ABORT)
        self._thread.join()


class _TeeSink:
    """The registry client's sink: every chunk to the blob writer and, while it keeps up, the unpacker."""

    def __init__(self, writer: BlobWriter, unpacker: _Unpacker | None, cancel: threading.Event) -> None:
        self.writer = writer
        self.unpacker = unpacker
        self.feeding = unpacker is not None
        self.restarted = False
        self._cancel = cancel

    def write(self, data: bytes) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        self.writer.write(data)
        if self.feeding and self.unpacker is not None and not self.unpacker.feed.put(data):
            self.feeding = False
            log.debug("unpacking while downloading stopped: %s", self.unpacker.error)

    def restart(self) -> None:
        self.writer.reset()
        self.restarted = True
        if self.unpacker is not None and self.unpacker.alive:
            log.debug("download of %s starts over: unpacking from the stored blob instead", self.writer.digest)
            self.unpacker.abort()


@record
class _LayerJob:
    desc: mf.Descriptor
    diff_id: str
    label: str


class LayerFetcher:
    """Downloads and unpacks the layers of one image; reports per layer; thread-safe."""

    def __init__(self, store: Store, client: RegistryClient, repository: str, reporter: pr.Reporter,
                 parallel: int = PARALLEL_LAYERS) -> None:
        self.store = store
        self.client = client
        self.repository = repository
        self.reporter = reporter
        self.parallel = max(1, parallel)
        self.cancel = threading.Event()
        self.downloaded = False
        self.flattened = False
        self._lock = threading.Lock()

    def run(self, jobs: Sequence[_LayerJob]) -> None:
        todo: list[_LayerJob] = []
        seen: set[tuple[str, str]] = set()
        for job in jobs:
            sid = pr.short_id(job.desc.digest)
            if (job.desc.digest, job.diff_id) in seen:
                continue
            seen.add((job.desc.digest, job.diff_id))
            if self.store.layer_present(job.diff_id) and self.store.has_blob(job.desc.digest):
                self.reporter.layer(sid, pr.EXISTS)
                continue
            self.reporter.layer(sid, pr.PULLING)
            todo.append(job)
        if not todo:
            return
        if len(todo) == 1 or self.parallel == 1:
            for job in todo:
                self._one(job)
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(todo)), thread_name_prefix="layer") as pool:
            futures: list[Future[None]] = [pool.submit(self._one, job) for job in todo]
            try:
                done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:
                self.cancel.set()
                raise
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self.cancel.set()
                wait(futures)
                errors = [f.exception() for f in futures if f.exception() is not None]
                real = [e for e in errors if not isinstance(e, _Cancelled)]
                raise (real or errors)[0]  # type: ignore[misc]

    def _progress(self, sid: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if self.cancel.is_set():
                raise _Cancelled()
            self.reporter.layer(sid, pr.DOWNLOADING, done, total)

        return report

    def _one(self, job: _LayerJob) -> None:
        if self.cancel.is_set():
            raise _Cancelled()
        store, desc, diff_id = self.store, job.desc, job.diff_id
        sid = pr.short_id(desc.digest)
        if store.has_blob(desc.digest):
            # The blob is here (an interrupted pull, or another image): unpack it.
            self.reporter.layer(sid, pr.EXTRACTING)
            self._note_flattened(store.add_layer_from_blob(diff_id, desc.digest, job.label).flattened)
            self.reporter.layer(sid, pr.PULL_COMPLETE)
            return
        need_layer = not store.layer_present(diff_id)
        writer = store.blob_writer(desc.digest, desc.size)
        unpacker = _Unpacker(store, diff_id, job.label) if need_layer else None
        sink = _TeeSink(writer, unpacker, self.cancel)
        try:
            self.client.fetch_blob(self.repository, desc.digest, desc.size, sink, self._progress(sid))
            self.reporter.layer(sid, pr.VERIFYING)
            writer.commit()
        except BaseException:
            writer.abort()
            if unpacker is not None and unpacker.alive:
                unpacker.abort()
            raise
        with self._lock:
            self.downloaded = True
        self.reporter.layer(sid, pr.DOWNLOADED)
        if unpacker is None:
            self.reporter.layer(sid, pr.PULL_COMPLETE)
            return
        self.reporter.layer(sid, pr.EXTRACTING)
        if not sink.restarted:
            if unpacker.alive:
                unpacker.finish()
            if unpacker.error is None:
                self._note_flattened(unpacker.flattened)
                self.reporter.layer(sid, pr.PULL_COMPLETE)
                return
            if not isinstance(unpacker.error, _Aborted):
                # The blob verified, so the content itself is bad (or the disk refused): say so.
                raise unpacker.error
        info = store.add_layer_from_blob(diff_id, desc.digest, job.label)
        self._note_flattened(info.flattened)
        self.reporter.layer(sid, pr.PULL_COMPLETE)

    def _note_flattened(self, flattened: bool) -> None:
        if flattened:
            with self._lock:
                self.flattened = True


def _image_names(ref: refs.Reference, digest: str, manifest_digest: str) -> list[str]:
    names = []
    if ref.tag and not ref.digest:
        names.append(f"{ref.name}:{ref.tag}")
    names.append(f"{ref.name}@{digest}")
    if manifest_digest != digest:
        names.append(f"{ref.name}@{manifest_digest}")
    return names


def pull_image(store: Store, text: str, opts: RegistryOptions, *, platform: Platform | None = None,
               reporter: pr.Reporter = pr.NULL, parallel: int = PARALLEL_LAYERS) -> PullResult:
    """Pull ``text`` (a reference as the user typed it) into ``store``; see the module docstring."""
    with contextlib.suppress(RLError, OSError):
        store.clean_tmp()
    found = resolve_manifest(text, opts, platform, reporter)
    client, ref, manifest, digest, index_digest = (found.client, found.reference, found.manifest, found.digest,
                                                   found.index_digest)
    with client:
        where = str(ref)
        reporter.start(f"{ref.tag or ref.digest}: Pulling from {ref.repository}")
        config_desc = manifest.config
        if store.has_blob(config_desc.digest):
            config_body = store.read_blob(config_desc.digest)
        else:
            config_body = client.fetch_blob_bytes(ref.repository, config_desc.digest, config_desc.size)
        config = mf.parse_config(config_body, where, len(manifest.layers))
        if platform is not None and index_digest is None and config.architecture and not matches(
                config.platform, platform):
            log.warning("image %s is for %s, not the requested %s", ref.familiar(), config.platform, platform)
        existed = False
        with contextlib.suppress(RLError):
            old = store.get_image(config_desc.digest)
            existed = not store.missing_for(old)
        store.put_blob(found.body, digest)
        store.put_blob(config_body, config_desc.digest)
        if found.index_body is not None and index_digest is not None:
            store.put_blob(found.index_body, index_digest)
        jobs = [_LayerJob(d, diff_id, label_for(diff_id, ref.familiar()))
                for d, diff_id in zip(manifest.layers, config.diff_ids, strict=True)]
        fetcher = LayerFetcher(store, client, ref.repository, reporter, parallel)
        fetcher.run(jobs)
    record = ImageRecord(
        id=config_desc.digest,
        manifest_digest=digest,
        manifest_media_type=found.media_type,
        config_digest=config_desc.digest,
        layers=[{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d in manifest.layers],
        diff_ids=list(config.diff_ids),
        platform={k: v for k, v in (("os", config.os or "linux"), ("architecture", config.architecture),
                                    ("variant", config.variant)) if v},
        created=config.created,
        index_digest=index_digest,
    )
    record = store.put_image(record, _image_names(ref, index_digest or digest, digest))
    return PullResult(record, ref, index_digest or digest, fetcher.downloaded, existed, fetcher.flattened)


# ----------------------------------------------------------------------------------------- push


@record
class PushResult:
    reference: refs.Reference
    digest: str
    size: int  # of the manifest


def push_image(store: Store, record: ImageRecord, dest: refs.Reference, opts: RegistryOptions, *,
               reporter: pr.Reporter = pr.NULL, parallel: int = PARALLEL_LAYERS) -> PushResult:
    """Upload ``record``'s blobs and manifest (byte for byte, so the digest stays) as ``dest``."""
    missing = [m for m in store.missing_for(record) if m.startswith("blob")]
    if missing:
        raise ImageError(f"cannot push {dest.familiar()}: {missing[0]} is missing from the store",
                         "pull or load the image again")
    reporter.start(f"The push refers to repository [{dest.name}]")
    repo = dest.repository
    with opts.client(dest.registry, repo, pull=False) as client:
        layers = list(dict.fromkeys(d["digest"] for d in record.layers))
        for digest in reversed(layers):
            reporter.layer(pr.short_id(digest), pr.PREPARING)

        def upload(digest: str) -> None:
            sid = pr.short_id(digest)
            if client.blob_exists(repo, digest):
                reporter.layer(sid, pr.LAYER_EXISTS)
                return
            size = store.blob_size(digest)
            with store.open_blob(digest) as f:
                client.upload_blob(repo, digest, f, size,
                                   progress=lambda done, total: reporter.layer(sid, pr.PUSHING, done, total))
            reporter.layer(sid, pr.PUSHED)

        if parallel > 1 and len(layers) > 1:
            with ThreadPoolExecutor(max_workers=min(parallel, len(layers)), thread_name_prefix="push") as pool:
                for fut in [pool.submit(upload, d) for d in layers]:
                    fut.result()
        else:
            for d in layers:
                upload(d)
        if not client.blob_exists(repo, record.config_digest):
            with store.open_blob(record.config_digest) as f:
                client.upload_blob(repo, record.config_digest, f, store.blob_size(record.config_digest))
        body = store.read_blob(record.manifest_digest)
        media_type = record.manifest_media_type or _sniff_media_type(body)
        digest = client.put_manifest(repo, dest.for_ref(), body, media_type)
    return PushResult(dest, digest, len(body))


def _sniff_media_type(body: bytes) -> str:
    import json

    try:
        value = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) and value else mf.OCI_MANIFEST


# ---------------------------------------------------------------------------------------- login


def check_login(opts: RegistryOptions, registry: str, username: str, password: str) -> None:
    """Ask ``registry`` whether ``username``/``password`` are good (GET /v2/ with them, as docker does).

    Raises AuthError when the registry rejects them, RegistryError when it cannot be reached.
    """
    creds = Credentials(username=username, password=password, source="rl login")
    with opts.client(registry, None, pull=False, credentials=creds, max_attempts=2) as client:
        client.ping()
        ep = client._main  # the public API has no "who am I" call; GET /v2/ with auth is docker's check

        def attempt() -> None:
            resp = client._open(ep, "GET", "/v2/", [])
            body = resp.drain()
            if resp.status == 401:
                raise AuthError(f"cannot log in to {registry}: the registry rejected user {username!r}",
                                "check the username and password")
            if resp.status != 200:
                raise RegistryError(f"cannot log in to {registry}: GET /v2/ answered {resp.status} "
                                    f"{body[:200].decode('utf-8', 'replace').strip()}".strip(),
                                    "check the registry address")

        try:
            client._retrying(f"logging in to {registry}", attempt)
        except AuthError as e:
            if e.message.startswith("cannot log in"):
                raise
            raise AuthError(f"cannot log in to {registry}: the registry rejected user {username!r}",
                            "check the username and password") from None


def registries_of(names: Iterable[str]) -> list[str]:
    return sorted({refs.parse(n).registry for n in names})


