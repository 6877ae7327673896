"""Attaching to a detached container: the client side of the monitor's attach socket.

``rl attach``, ``rl start -a`` and ``rl run -a`` (engine side)::

    from rootless.runtime import attach, monitor

    paths = monitor.Paths(run_dir, exit_file)
    code = attach.attach(paths, stdin=opts.interactive, tty=record_is_tty)
    # the container's exit code, or None when the user detached (ctrl-p ctrl-q) or the output ended

or, for programs and tests, the plain client::

    with attach.connect(paths, stdin=True) as client:
        client.send_stdin(b"hello\\n")
        kind, data = client.recv()       # ("stdout", b"hello\\n"), ..., ("exit", {"exit_code": 0}), None

The protocol is described in ``rootless.runtime.monitor``. Output is live: what the container wrote
before the client connected is in the log (``rootless.runtime.logs``), as with docker attach.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import termios
import tty as ttymod
from collections.abc import Iterator
from typing import Any

from rootless.errors import ConflictError, NotFoundError
from rootless.runtime import monitor
from rootless.runtime.monitor import (
    CLOSE_STDIN,
    EXIT,
    HELLO,
    MAX_PACKET,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    Paths,
)

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q, docker's default
_CHUNK = 32768


class AttachClient:
    """One connection to a container's monitor."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self.sock.send(STDIN + bytes(view[:_CHUNK]))
            view = view[_CHUNK:]

    def close_stdin(self) -> None:
        self.sock.send(CLOSE_STDIN)

    def resize(self, rows: int, cols: int) -> None:
        self.sock.send(RESIZE + f"{rows} {cols}".encode())

    def recv(self) -> tuple[str, Any] | None:
        """The next message: ("stdout"|"stderr", bytes) or ("exit", {"exit_code": N}); None when the
        monitor closed the connection."""
        while True:
            try:
                packet = self.sock.recv(MAX_PACKET)
            except ConnectionResetError:
                return None
            if not packet:
                return None
            kind, payload = packet[:1], packet[1:]
            if kind == STDOUT:
                return "stdout", payload
            if kind == STDERR:
                return "stderr", payload
            if kind == EXIT:
                return "exit", json.loads(payload)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> AttachClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


HELLO_TIMEOUT = 10.0


def connect(paths: Paths, stdin: bool = False, stdout: bool = True, stderr: bool = True,
            held: bool = False) -> AttachClient:
    """Connect to the monitor of the container whose files are in ``paths``.

    Returns once the monitor has answered, so no output after that is missed; ``held``: the monitor
    holds a container that has not started yet (``rl start -a``) and answers only once it runs, but
    it reads this client's request before it reads any output, so nothing is missed either.

    Raises ConflictError when the container is not running (or its monitor is gone)."""
    try:
        dfd = os.open(paths.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"the container's runtime directory {paths.run_dir} does not exist",
                            "is the container running?") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(f"/proc/self/fd/{dfd}/{monitor.ATTACH_SOCKET}")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        if monitor.exited(paths):
            raise ConflictError("cannot attach to a stopped container", "start it first") from None
        raise ConflictError("cannot attach: the container's monitor is not running",
                            "the container keeps running unattended; see 'rl logs'") from None
    finally:
        os.close(dfd)
    sock.send(HELLO + json.dumps({"stdin": stdin, "stdout": stdout, "stderr": stderr}).encode())
    if held:
        return AttachClient(sock)
    # Wait for the monitor's answer: from then on every byte of output reaches this client.
    sock.settimeout(HELLO_TIMEOUT)
    try:
        answer = sock.recv(MAX_PACKET)
    except (TimeoutError, OSError):
        answer = b""
    finally:
        sock.settimeout(None)
    if answer[:1] != HELLO:
        sock.close()
        raise ConflictError("cannot attach: the container's monitor did not answer",
                            "the container keeps running unattended; see 'rl logs'")
    return AttachClient(sock)


def _winsize(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def _raw(fd: int, enabled: bool) -> Iterator[None]:
    saved = termios.tcgetattr(fd) if enabled and os.isatty(fd) else None
    if saved is not None:
        ttymod.setraw(fd)
    try:
        yield
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _scan_detach(data: bytes, keys: bytes, matched: int) -> tuple[bytes, int, bool]:
    """Take the detach sequence out of ``data``: (what to send, bytes of ``keys`` matched so far, detached).
    Input before the sequence is sent; a partial match is held back until it completes or fails."""
    out = bytearray()
    for byte in data:
        if byte == keys[matched]:
            matched += 1
            if matched == len(keys):
                return bytes(out), 0, True
            continue
        if matched:
            out += keys[:matched]
            matched = 0
        if byte == keys[0]:
            matched = 1
            continue
        out.append(byte)
    return bytes(out), matched, False


def attach(
    paths: Paths,
    *,
    stdin: bool = False,
    tty: bool = False,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    detach_keys: bytes = DEFAULT_DETACH_KEYS,
    client: AttachClient | None = None,
) -> int | None:
    """Relay the user's terminal to the container until it exits (returns its exit code) or the user
    types ``detach_keys`` (returns None; the container keeps running). With ``tty`` the user's terminal
    is put in raw mode and its size follows SIGWINCH. ``client``: an already connected client (connect
    before ``MonitorResult.start()`` to see all output)."""
    client = client or connect(paths, stdin=stdin)
    sel = selectors.DefaultSelector()
    sel.register(client.sock, selectors.EVENT_READ)
    reading_stdin = stdin
    if reading_stdin:
        sel.register(stdin_fd, selectors.EVENT_READ)
    matched = 0
    previous = None

    def resize(_signum: int = 0, _frame: object = None) -> None:
        size = _winsize(stdin_fd)
        if size is not None:
            with contextlib.suppress(OSError):
                client.resize(*size)

    if tty:
        previous = signal.signal(signal.SIGWINCH, resize)
        resize()
    try:
        with _raw(stdin_fd, tty and stdin):
            while True:
                for key, _ in sel.select():
                    if key.fileobj is client.sock:
                        got = client.recv()
                        if got is None:
                            return None
                        kind, payload = got
                        if kind == "exit":
                            return int(payload.get("exit_code", 0))
                        _write_all(stdout_fd if kind == "stdout" else stderr_fd, payload)
                        continue
                    try:
                        data = os.read(stdin_fd, _CHUNK)
                    except OSError as e:
                        if e.errno != errno.EIO:
                            raise
                        data = b""
                    if not data:
                        sel.unregister(stdin_fd)
                        with contextlib.suppress(OSError):
                            client.close_stdin()
                        continue
                    detached = False
                    if detach_keys:
                        data, matched, detached = _scan_detach(data, detach_keys, matched)
                    if data:
                        try:
                            client.send_stdin(data)
                        except OSError:
                            return None
                    if detached:
                        return None
    finally:
        sel.close()
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)
        client.close()


__all__ = ["DEFAULT_DETACH_KEYS", "AttachClient", "attach", "connect"]
