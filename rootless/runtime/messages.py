"""Typed messages from the container's setup processes to rl (youki's message.rs idea).

An error in the child reaches the parent as data, not as a silent exit status. The channel is a
SOCK_SEQPACKET socket pair (one JSON object per packet, file descriptors passed alongside with
SCM_RIGHTS). Both ends are close-on-exec: when the container's command is exec'd the last writer goes
away and the parent reads end-of-file, which means the exec succeeded.
"""

from __future__ import annotations

import array
import json
import socket

from rootless.records import asdict, record


@record(frozen=True)
class Ready:
    """The container's first process exists; ``pid`` is its pid in rl's pid namespace."""

    pid: int
    type: str = "ready"


@record(frozen=True)
class Created:
    """Setup is complete and the process waits for ``ContainerProcess.start()`` before exec."""

    type: str = "created"


@record(frozen=True)
class Pty:
    """The master side of the container's terminal travels with this message."""

    type: str = "pty"


@record(frozen=True)
class SetupFailed:
    op: str
    message: str
    errno: int | None = None
    type: str = "setup_failed"


@record(frozen=True)
class ExecFailed:
    errno: int
    path: str
    message: str
    type: str = "exec_failed"


Message = Ready | Created | Pty | SetupFailed | ExecFailed
_TYPES: dict[str, type[Message]] = {
    "ready": Ready, "created": Created, "pty": Pty, "setup_failed": SetupFailed, "exec_failed": ExecFailed,
}
_MAX_PACKET = 65536


def encode(message: Message) -> bytes:
    return json.dumps(asdict(message)).encode() + b"\n"


def decode(raw: bytes) -> Message:
    data = json.loads(raw)
    kind = _TYPES.get(data.get("type"))
    if kind is None:
        raise ValueError(f"unknown message type {data.get('type')!r}")
    return kind(**data)


def channel() -> tuple[socket.socket, socket.socket]:
    """(parent end, child end), both close-on-exec."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: Message, fds: list[int] | None = None) -> None:
    if fds:
        socket.send_fds(sock, [encode(message)], fds)
    else:
        sock.send(encode(message))


def recv(sock: socket.socket) -> tuple[Message, list[int]] | None:
    """The next message and the descriptors that came with it; None at end-of-file."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(_MAX_PACKET, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        return None
    return decode(data), list(fds)
