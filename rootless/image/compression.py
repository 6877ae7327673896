"""Layer compression: detect it (media type, magic bytes) and decompress as a stream.

Two shapes of the same decompressors:

* push: ``d = decompressor("gzip"); out = d.feed(chunk) ...; out += d.finish()`` for a pipeline that
  is handed chunks (a download);
* pull: ``open_reader(fileobj)`` is a file-like object yielding the uncompressed bytes, for tarfile.

gzip uses zlib (multi-member streams are followed, trailing garbage after a complete member is
ignored as Go's and GNU gzip readers do).  zstd uses the ``zstandard`` module when it is importable,
else pipes through ``zstd -dc``; both read across frames (zstd:chunked layers are multi-frame).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import threading
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol

from rootless.errors import HostError, ImageError
from rootless.executables import which

NONE = "none"
GZIP = "gzip"
ZSTD = "zstd"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Other formats we recognise only to say so clearly.
_OTHER_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}

_READ_CHUNK = 64 * 1024  # compressed bytes per step of a pull reader (bounds zlib's 1000:1 worst case)


class DecompressError(ImageError):
    """The compressed stream is corrupt or truncated."""


def from_media_type(media_type: str | None) -> str | None:
    """The compression a layer media type declares, or None when the type does not say."""
    if not media_type:
        return None
    mt = media_type.strip().lower()
    if mt.endswith(("+gzip", ".gzip", ".tar.gz")):
        return GZIP
    if mt.endswith(("+zstd", ".zstd")):
        return ZSTD
    if mt.endswith((".tar", "+tar")) or mt in ("application/x-tar", "application/tar"):
        return NONE
    return None


def media_type_for(kind: str, oci: bool = True) -> str:
    """The layer media type for a compression kind."""
    if oci:
        return {
            NONE: "application/vnd.oci.image.layer.v1.tar",
            GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
            ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
        }[kind]
    return {
        NONE: "application/vnd.docker.image.rootfs.diff.tar",
        GZIP: "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",  # docker has no zstd type of its own
    }[kind]


def sniff(head: bytes) -> str:
    """The compression of a stream from its first bytes (at least 4 for zstd): gzip, zstd or none.

    Raises DecompressError for bzip2/xz, which image layers never use.
    """
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    for magic, name in _OTHER_MAGIC.items():
        if head.startswith(magic):
            raise DecompressError(
                f"layer is {name}-compressed, which image layers do not use",
                "recompress it with gzip or zstd, or give an uncompressed tar",
            )
    return NONE


class Decompressor(Protocol):
    kind: str

    def feed(self, data: bytes) -> bytes:
        """Decompress ``data``; returns whatever output is ready (possibly b"")."""
        ...

    def finish(self) -> bytes:
        """The remaining output; raises DecompressError when the stream is incomplete."""
        ...

    def close(self) -> None:
        """Release resources (a subprocess) without finishing."""
        ...


class _Identity:
    kind = NONE

    def feed(self, data: bytes) -> bytes:
        return bytes(data)

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _Gzip:
    kind = GZIP

    def __init__(self) -> None:
        self._d = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, auto-detected
        self._started = False
        self._trailing = False  # a member ended and something that is not gzip followed

    def feed(self, data: bytes) -> bytes:
        if self._trailing or not data:
            return b""
        self._started = True
        out: list[bytes] = []
        try:
            out.append(self._d.decompress(data))
            while self._d.eof:
                rest = self._d.unused_data
                if not rest:
                    break
                if not rest.startswith(GZIP_MAGIC[: len(rest)]):
                    self._trailing = True
                    break
                if len(rest) < 2:
                    # Too short to tell; keep it for the next feed by starting a new member.
                    self._d = zlib.decompressobj(wbits=47)
                    out.append(self._d.decompress(rest))
                    break
                self._d = zlib.decompressobj(wbits=47)
                out.append(self._d.decompress(rest))
        except zlib.error as e:
            raise DecompressError(f"gzip data is corrupt: {e}", "download or build the image again") from None
        return b"".join(out)

    def finish(self) -> bytes:
        if self._trailing:
            return b""
        try:
            out = self._d.flush()
        except zlib.error as e:
            raise DecompressError(f"gzip data is corrupt: {e}", "download or build the image again") from None
        if self._started and not self._d.eof:
            raise DecompressError("gzip data is truncated", "download or build the image again")
        return out

    def close(self) -> None:
        pass


def _zstandard() -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


class _ZstdModule:
    kind = ZSTD

    def __init__(self, module: Any) -> None:
        self._error = module.ZstdError
        self._d = module.ZstdDecompressor().decompressobj(read_across_frames=True)

    def feed(self, data: bytes) -> bytes:
        if not data:
            return b""
        try:
            return bytes(self._d.decompress(data))
        except self._error as e:
            raise DecompressError(f"zstd data is corrupt: {e}", "download or build the image again") from None

    def finish(self) -> bytes:
        try:
            out = bytes(self._d.flush())
        except self._error as e:  # pragma: no cover - flush rarely fails
            raise DecompressError(f"zstd data is corrupt: {e}", "download or build the image again") from None
        # read_across_frames never reports eof, so a truncated last frame is not detected here;
        # the tar reader (unexpected end of data) and the diff_id check catch it.
        return out

    def close(self) -> None:
        pass


class _ZstdProcess:
    """``zstd -dc`` in a pipe; a thread drains its output so writing never deadlocks."""

    kind = ZSTD

    def __init__(self, binary: str) -> None:
        self._proc = subprocess.Popen(
            [binary, "-dcq"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._err = b""
        self._reader = threading.Thread(target=self._drain, name="zstd-output", daemon=True)
        self._reader.start()
        self._closed = False

    def _drain(self) -> None:
        assert self._proc.stdout is not None
        while True:
            chunk = self._proc.stdout.read(1 << 20)
            if not chunk:
                return
            with self._lock:
                self._out.append(chunk)

    def _take(self) -> bytes:
        with self._lock:
            out, self._out = b"".join(self._out), []
        return out

    def feed(self, data: bytes) -> bytes:
        if data:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(data)
            except BrokenPipeError:
                self._fail()
        return self._take()

    def _fail(self) -> None:
        self._proc.wait()
        assert self._proc.stderr is not None
        err = self._proc.stderr.read().decode(errors="replace").strip().splitlines()
        reason = err[-1] if err else f"zstd exited with status {self._proc.returncode}"
        raise DecompressError(f"zstd data is corrupt: {reason}", "download or build the image again")

    def finish(self) -> bytes:
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        self._reader.join()
        rc = self._proc.wait()
        self._closed = True
        if rc != 0:
            self._fail()
        return self._take()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        self._proc.wait()
        self._reader.join(timeout=5)


def zstd_available() -> str | None:
    """How zstd would be decompressed here ("module" or "binary"), or None."""
    if _zstandard() is not None:
        return "module"
    if which("zstd"):
        return "binary"
    return None


def decompressor(kind: str, prefer_binary: bool = False) -> Decompressor:
    """A push-style decompressor for ``kind`` (none, gzip, zstd)."""
    if kind == NONE:
        return _Identity()
    if kind == GZIP:
        return _Gzip()
    if kind == ZSTD:
        module = None if prefer_binary else _zstandard()
        if module is not None:
            return _ZstdModule(module)
        binary = which("zstd")
        if binary:
            return _ZstdProcess(binary)
        module = _zstandard()
        if module is not None:
            return _ZstdModule(module)
        raise HostError(
            "cannot decompress a zstd-compressed layer: neither the zstd program nor the python "
            "zstandard module is installed",
            "install zstd (apt install zstd, dnf install zstd) or pip install zstandard",
        )
    raise ValueError(f"unknown compression {kind!r}")


class DecompressReader(io.RawIOBase):
    """A read-only file object with the decompressed contents of ``source``.

    ``kind=None`` sniffs the compression from the first bytes.  ``on_raw`` is called with every
    compressed chunk read from the source (to hash or count the blob in the same pass).
    """

    def __init__(
        self,
        source: BinaryIO,
        kind: str | None = None,
        on_raw: Callable[[bytes], None] | None = None,
        prefer_binary: bool = False,
    ) -> None:
        super().__init__()
        self._src = source
        self._on_raw = on_raw
        head = b""
        if kind is None:
            head = self._read_src(_READ_CHUNK)
            kind = sniff(head)
        self.kind = kind
        self._d: Decompressor | None = decompressor(kind, prefer_binary=prefer_binary)
        self._buf = memoryview(b"")
        self._eof = False
        if head:
            self._buf = memoryview(self._d.feed(head))

    def _read_src(self, n: int) -> bytes:
        data = self._src.read(n)
        if data and self._on_raw is not None:
            self._on_raw(data)
        return data or b""

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._eof:
            assert self._d is not None
            chunk = self._read_src(_READ_CHUNK if self.kind != NONE else 1 << 20)
            if chunk:
                self._buf = memoryview(self._d.feed(chunk))
            else:
                self._buf = memoryview(self._d.finish())
                self._eof = True

    def readinto(self, b: Any) -> int:
        self._fill()
        n = min(len(b), len(self._buf))
        if n:
            b[:n] = self._buf[:n]
            self._buf = self._buf[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes; fewer only at the end (tarfile.addfile relies on full reads)."""
        if size is None or size < 0:
            return self.readall()
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            self._fill()
            if not self._buf:
                break
            n = min(wanted, len(self._buf))
            parts.append(bytes(self._buf[:n]))
            self._buf = self._buf[n:]
            wanted -= n
        return b"".join(parts)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while True:
            self._fill()
            if not self._buf:
                return b"".join(parts)
            parts.append(bytes(self._buf))
            self._buf = memoryview(b"")

    def close(self) -> None:
        if self._d is not None:
            self._d.close()
            self._d = None
        super().close()


def open_reader(
    source: BinaryIO,
    kind: str | None = None,
    on_raw: Callable[[bytes], None] | None = None,
) -> DecompressReader:
    """The decompressed view of ``source`` (compression sniffed when ``kind`` is None)."""
    return DecompressReader(source, kind, on_raw=on_raw)


def decompress_bytes(data: bytes, kind: str | None = None) -> bytes:
    """Decompress a whole buffer (tests, small blobs)."""
    d = decompressor(kind if kind is not None else sniff(data[:8]))
    try:
        return d.feed(data) + d.finish()
    finally:
        d.close()
