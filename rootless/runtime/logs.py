"""Container logs: docker's json-file driver (and podman's k8s-file), written by the monitor, read by `rl logs`.

Writing (``LogWriter``, used by ``rootless.runtime.monitor``)::

    w = LogWriter("/.../container.log", max_size=10 << 20, max_files=3)
    w.write("stdout", b"hello\\nwor")     # one entry "hello\\n"; "wor" waits for its newline
    w.flush_partial(now)                # entries waiting longer than ``partial_timeout`` go out as they are
    w.close()                           # the rest goes out (output that never ended in a newline)

json-file entries are one JSON object per line, as docker writes them::

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}

Lines longer than 16 KiB are split into 16 KiB entries without a newline (docker's partial messages);
a chunk that does not end in a newline is written as is once it has waited ``partial_timeout`` seconds
or the stream ended. k8s-file (podman's ``--log-driver k8s-file``) writes ``TIME STREAM F|P TEXT``
lines, P marking a partial line. Rotation follows docker's ``max-size``/``max-file``: when the file
reaches ``max_size`` bytes it becomes ``container.log.1`` (older ones shift up, the oldest beyond
``max_files`` is deleted; with ``max_files`` 1 the file is truncated). Nothing is fsynced per line
(neither does docker); ``close`` fsyncs once.

Reading (``read_logs``, for `rl logs`)::

    for entry in read_logs(path, tail=10, follow=True, stop_when=lambda: monitor.exited(paths)):
        out = sys.stdout.buffer if entry.stream == "stdout" else sys.stderr.buffer
        out.write(entry.line(timestamps=True))

yields ``LogEntry(stream, data, time)`` across the rotated files, oldest first. ``follow`` keeps
polling (every ``poll`` seconds) and survives rotation and truncation; it ends when ``stop_when()``
is true and everything written so far has been read (the monitor writes the last entries before the
exit file, so ``stop_when`` = "the exit file exists" loses nothing).

This module is imported by the idle monitor: keep its module-level imports to the standard library's
lightest (os, json, time).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time

TYPE_CHECKING = False  # typing costs the idle monitor ~1 MB: only the type checker imports it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

JSON_FILE = "json-file"
K8S_FILE = "k8s-file"
NONE = "none"
DRIVERS = (JSON_FILE, K8S_FILE, NONE)
MAX_LINE = 16 * 1024  # docker's copier buffer: longer lines become partial entries
STREAMS = ("stdout", "stderr")


# ---------------------------------------------------------------- time


_second_cache: list[object] = [-1, ""]


def format_time(ns: int, k8s: bool = False) -> str:
    """RFC 3339 with nanoseconds, UTC: 2024-05-01T12:00:00.123456789Z (k8s-file: ...+00:00)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    if _second_cache[0] != seconds:
        _second_cache[0] = seconds
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{_second_cache[1]}.{frac:09d}{'+00:00' if k8s else 'Z'}"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (any number of fraction digits, Z or ±hh:mm)."""
    import calendar

    text = text.strip()
    if len(text) < 19 or text[10] not in "Tt ":
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    base = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                            int(text[14:16]), int(text[17:19]), 0, 0, 0))
    rest = text[19:]
    frac = 0
    if rest.startswith("."):
        digits = rest[1:]
        end = 0
        while end < len(digits) and digits[end].isdigit():
            end += 1
        frac = int((digits[:end] + "000000000")[:9]) if end else 0
        rest = digits[end:]
    offset = 0
    if rest in ("Z", "z", ""):
        offset = 0
    elif rest[0] in "+-" and len(rest) == 6 and rest[3] == ":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    return (base - offset) * 1_000_000_000 + frac


# ---------------------------------------------------------------- writing


def rotated_names(path: str, max_files: int) -> list[str]:
    """The files of one log, oldest first: path.N-1 ... path.1, path."""
    return [f"{path}.{i}" for i in range(max_files - 1, 0, -1)] + [path]


class LogWriter:
    """Appends container output to a json-file or k8s-file log with size-capped rotation.

    Not thread-safe; the monitor's single event loop is its only user. Write errors (disk full, the
    directory removed) are counted in ``errors`` and otherwise ignored: the container must not stop
    because its log cannot be written, as with docker.
    """

    def __init__(
        self,
        path: str,
        driver: str = JSON_FILE,
        max_size: int = 0,
        max_files: int = 1,
        partial_timeout: float = 1.0,
    ) -> None:
        if driver not in (JSON_FILE, K8S_FILE):
            raise ValueError(f"unknown log driver {driver!r}")
        self.path = path
        self.k8s = driver == K8S_FILE
        self.max_size = max(0, int(max_size))
        self.max_files = max(1, int(max_files))
        self.partial_timeout = partial_timeout
        self.errors = 0
        self._pending: dict[str, tuple[bytes, int]] = {}  # stream -> (bytes without newline, first read ns)
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        try:
            self._fd = os.open(self.path, flags, 0o640)
            self._size = os.fstat(self._fd).st_size
        except OSError:
            self._fd = -1
            self.errors += 1

    def _rotate(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.max_files > 1:
            names = rotated_names(self.path, self.max_files)
            with contextlib.suppress(OSError):
                os.unlink(names[0])
            for older, newer in itertools.pairwise(names):
                with contextlib.suppress(OSError):
                    os.rename(newer, older)
            self._open()
        else:
            self._open(truncate=True)

    def _encode(self, stream: str, data: bytes, ns: int) -> bytes:
        text = data.decode("utf-8", "replace")
        if self.k8s:
            if text.endswith("\n"):
                return f"{format_time(ns, True)} {stream} F {text}".encode()
            return f"{format_time(ns, True)} {stream} P {text}\n".encode()
        return f'{{"log":{json.dumps(text, ensure_ascii=False)},"stream":"{stream}","time":"{format_time(ns)}"}}\n'\
            .encode()

    def _emit(self, stream: str, data: bytes, ns: int) -> None:
        if self._fd < 0:
            self._open()
            if self._fd < 0:
                return
        line = self._encode(stream, data, ns)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            self._size += len(line)
        except OSError:
            self.errors += 1
            return
        if self.max_size and self._size >= self.max_size:
            self._rotate()

    def write(self, stream: str, data: bytes, ns: int | None = None) -> None:
        """Log ``data`` read from ``stream`` ("stdout" or "stderr") at ``ns`` (default: now)."""
        if not data:
            return
        if ns is None:
            ns = time.time_ns()
        held = self._pending.pop(stream, None)
        first = ns
        if held is not None:
            data = held[0] + data
            first = held[1]
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start, min(end, start + MAX_LINE))
            if newline >= 0:
                self._emit(stream, data[start:newline + 1], first)
                start = newline + 1
                first = ns
            elif end - start >= MAX_LINE:
                self._emit(stream, data[start:start + MAX_LINE], first)
                start += MAX_LINE
                first = ns
            else:
                self._pending[stream] = (data[start:], first)
                break

    def next_deadline(self) -> float | None:
        """When (time.time()) ``flush_partial`` has something to write, or None."""
        if not self._pending:
            return None
        return min(first for _, first in self._pending.values()) / 1e9 + self.partial_timeout

    def flush_partial(self, now: float | None = None, force: bool = False) -> None:
        """Write the chunks without a newline that waited ``partial_timeout`` (all of them with ``force``)."""
        if not self._pending:
            return
        limit = (time.time() if now is None else now) - self.partial_timeout
        for stream, (data, first) in sorted(self._pending.items(), key=lambda item: item[1][1]):
            if force or first / 1e9 <= limit:
                del self._pending[stream]
                self._emit(stream, data, first)

    def close(self) -> None:
        self.flush_partial(force=True)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------- reading


class LogEntry:
    """One log entry: ``stream`` "stdout" or "stderr", ``data`` as the container wrote it (newline
    included when there was one), ``time`` RFC 3339 with nanoseconds as stored."""

    __slots__ = ("data", "stream", "time")

    def __init__(self, stream: str, data: bytes, time: str) -> None:
        self.stream = stream
        self.data = data
        self.time = time

    def __iter__(self) -> Iterator[object]:
        return iter((self.stream, self.data, self.time))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogEntry) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"LogEntry({self.stream!r}, {self.data!r}, {self.time!r})"

    @property
    def time_ns(self) -> int:
        return parse_time(self.time)

    def line(self, timestamps: bool = False) -> bytes:
        """What `docker logs` prints for this entry (``-t``: the time, a space, then the data)."""
        if not timestamps:
            return self.data
        return fixed_time(self.time).encode() + b" " + self.data


def fixed_time(text: str) -> str:
    """docker logs -t's format: RFC 3339 with exactly nine fraction digits, in UTC."""
    ns = parse_time(text)
    return format_time(ns)


def parse_line(raw: bytes) -> LogEntry | None:
    """One line of a json-file or k8s-file log (without its trailing newline); None when malformed."""
    if not raw:
        return None
    if raw[:1] == b"{":
        try:
            obj = json.loads(raw)
            return LogEntry(str(obj.get("stream", "stdout")), str(obj.get("log", "")).encode(), str(obj["time"]))
        except (ValueError, KeyError, AttributeError, TypeError):
            return None
    parts = raw.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    data = parts[3] if len(parts) == 4 else b""
    if parts[2] == b"F":
        data += b"\n"
    return LogEntry(parts[1].decode(errors="replace"), data, parts[0].decode(errors="replace"))


def _existing_files(path: str) -> list[str]:
    """Rotated files that exist (oldest first), then ``path`` itself."""
    numbered = []
    directory, base = os.path.split(path)
    try:
        names = os.listdir(directory or ".")
    except OSError:
        names = []
    for name in names:
        suffix = name[len(base) + 1:]
        if name.startswith(base + ".") and suffix.isdigit():
            numbered.append(int(suffix))
    return [f"{path}.{n}" for n in sorted(numbered, reverse=True)] + [path]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (without newline) and the incomplete rest."""
    cut = data.rfind(b"\n")
    if cut < 0:
        return [], data
    return data[:cut].split(b"\n"), data[cut + 1:]


def read_logs(
    path: str,
    since: float | None = None,
    until: float | None = None,
    tail: int | None = None,
    timestamps: bool = False,
    follow: bool = False,
    stop_when: Callable[[], bool] | None = None,
    poll: float = 0.05,
) -> Iterator[LogEntry]:
    """The entries of the log at ``path`` (and its rotated files), oldest first.

    ``since``/``until``: seconds since the epoch (entries at or after ``since``, before or at ``until``).
    ``tail``: only the last N entries of what exists now (0: none; follow still shows new ones).
    ``timestamps``: prefix each entry's data with its time (docker logs -t), so callers can print
    ``entry.data`` either way. ``follow``: keep reading new entries until ``stop_when()`` is true and
    the file is drained (without ``stop_when``: until the caller stops iterating).
    """
    since_ns = int(since * 1e9) if since is not None else None
    until_ns = int(until * 1e9) if until is not None else None

    def wanted(entry: LogEntry) -> bool:
        if since_ns is None and until_ns is None:
            return True
        try:
            ns = entry.time_ns
        except ValueError:
            return True
        return (since_ns is None or ns >= since_ns) and (until_ns is None or ns <= until_ns)

    def out(entry: LogEntry) -> LogEntry:
        return LogEntry(entry.stream, entry.line(True), entry.time) if timestamps else entry

    # history: the rotated files, then the current file from an fd kept open for follow
    files = _existing_files(path)
    current_fd = -1
    with contextlib.suppress(FileNotFoundError):
        current_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    history: list[LogEntry] = []
    from collections import deque

    keep: deque[LogEntry] | list[LogEntry] = deque(maxlen=tail) if tail is not None else history
    for name in files[:-1]:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for raw in data.split(b"\n"):
            entry = parse_line(raw)
            if entry is not None and wanted(entry):
                keep.append(entry)
    rest = b""
    offset = 0
    if current_fd >= 0:
        data = _read_all(current_fd)
        offset = len(data)
        lines, rest = _lines(data)
        for raw in lines:
            entry = parse_line(raw)
            if entry is not None and wanted(entry):
                keep.append(entry)
    try:
        for entry in keep:
            if until_ns is not None and follow and _after(entry, until_ns):
                return
            yield out(entry)
        if not follow:
            return
        # follow: poll the open file; reopen after rotation (the path names another file) or truncation
        while True:
            if current_fd < 0:
                try:
                    current_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    offset, rest = 0, b""
                except FileNotFoundError:
                    pass
            got = _read_all(current_fd) if current_fd >= 0 else b""
            offset += len(got)
            if got:
                lines, rest = _lines(rest + got)
                for raw in lines:
                    entry = parse_line(raw)
                    if entry is None:
                        continue
                    if until_ns is not None and _after(entry, until_ns):
                        return
                    if wanted(entry):
                        yield out(entry)
                continue
            if current_fd >= 0 and _replaced(path, current_fd, offset):
                # written to just before the rotation: read the old file to its end, then switch
                lines, _ = _lines(rest + _read_all(current_fd) + b"\n")
                os.close(current_fd)
                current_fd = -1
                for raw in lines:
                    entry = parse_line(raw)
                    if entry is not None and wanted(entry):
                        yield out(entry)
                continue
            if stop_when is not None and stop_when():
                # the writer finished before stop_when became true: one more read drains it
                if current_fd >= 0:
                    got = _read_all(current_fd)
                    offset += len(got)
                    lines, rest = _lines(rest + got + b"\n")
                    for raw in lines:
                        entry = parse_line(raw)
                        if entry is not None and wanted(entry):
                            yield out(entry)
                    rest = b""
                    if _replaced(path, current_fd, offset):
                        os.close(current_fd)
                        current_fd = -1
                        continue  # rotated at the very end: read the new file too
                return
            if until_ns is not None and time.time_ns() > until_ns:
                return
            time.sleep(poll)
    finally:
        if current_fd >= 0:
            os.close(current_fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _after(entry: LogEntry, until_ns: int) -> bool:
    try:
        return entry.time_ns > until_ns
    except ValueError:
        return False


def _replaced(path: str, fd: int, offset: int) -> bool:
    """The file open as ``fd`` was rotated away from ``path`` or truncated below ``offset``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_ino, st.st_dev) != (own.st_ino, own.st_dev) or own.st_size < offset


__all__ = [
    "DRIVERS", "JSON_FILE", "K8S_FILE", "NONE", "LogEntry", "LogWriter", "format_time", "parse_line",
    "parse_time", "read_logs", "rotated_names",
]
