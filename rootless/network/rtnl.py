"""A few rtnetlink requests over a plain AF_NETLINK socket: what attaching a container to a bridge
needs on every ``rl run`` (a veth pair with one end on the bridge and the other created straight in
the container's namespace, an address, the link up, a default route, deleting links).

The standard library is enough for these five messages, and ``rl run`` on the default network then
pays no pyroute2 import (~0.1-0.2 s here, in each forked child). pyroute2 still creates the bridges
and their rules (``rootless.network.bridge._sync_links``), which happens when the set of networks
changes, not per container.

Every function works in the calling process's network namespace and raises OSError with the
kernel's errno, as the socket calls do.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_NEWROUTE = 24

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
NLA_F_NESTED = 0x8000

IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
IFF_UP = 0x1

_HDR = struct.Struct("=LHHLL")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Netlink:
    """One NETLINK_ROUTE socket; each ``request`` waits for the kernel's acknowledgement."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        self.seq += 1
        flags |= NLM_F_REQUEST | NLM_F_ACK
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, flags, self.seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _, seq, _ = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    raise OSError(0, "malformed netlink reply")
                if mtype == NLMSG_ERROR and seq == self.seq:
                    error = struct.unpack_from("=i", data, offset + _HDR.size)[0]
                    if error:
                        raise OSError(-error, os.strerror(-error))
                    return
                offset += (length + 3) & ~3

    # ------------------------------------------------------------ requests

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int, master: int = 0) -> None:
        """A veth pair: ``name`` here (up, on bridge ``master`` when given), ``peer`` created
        directly in the namespace of ``peer_netns_fd`` (down, no address)."""
        peer_info = _ifinfo() + _name(IFLA_IFNAME, peer) + _u32(IFLA_MTU, mtu) + _u32(IFLA_NET_NS_FD, peer_netns_fd)
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
            IFLA_INFO_DATA | NLA_F_NESTED, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer_info)
        )
        body = _ifinfo(flags=IFF_UP, change=IFF_UP) + _name(IFLA_IFNAME, name) + _u32(IFLA_MTU, mtu)
        if master:
            body += _u32(IFLA_MASTER, master)
        body += _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_link(self, name: str = "", index: int = 0) -> bool:
        """Delete link ``index`` (else the one called ``name``); False when there is none. An index
        names one link for good (the kernel does not hand it out again soon), a name does not."""
        try:
            self.request(RTM_DELLINK, 0, _ifinfo(index) if index else _ifinfo() + _name(IFLA_IFNAME, name))
        except OSError as e:
            if e.errno in (19, 2):  # ENODEV, ENOENT
                return False
            raise
        return True

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _ifinfo(index, IFF_UP, IFF_UP))

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        packed = socket.inet_aton(address)
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def add_default_route(self, index: int, gateway: str) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr(RTA_GATEWAY, socket.inet_aton(gateway)) + _u32(RTA_OIF, index)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)
