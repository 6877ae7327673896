"""rootless.network.rtnl against the kernel: in a user + network namespace of the test's own (two
network namespaces, as the rootless netns and a container's), run as the unprivileged user."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import errno, os, socket
    from rootless.network import rtnl
    from rootless.network.netns import inspect_interface, lo_up
    from rootless.runtime.syscalls import CLONE_NEWNET, SYSCALLS

    container = os.open("/proc/self/ns/net", os.O_RDONLY)       # plays the container's netns
    SYSCALLS.unshare(CLONE_NEWNET)                               # and this one the rootless netns
    outer = os.open("/proc/self/ns/net", os.O_RDONLY)
    with rtnl.Netlink() as nl:
        assert nl.delete_link("vethx") is False
        nl.add_veth("vethx", "eth0", container, 65520)
        try:
            nl.add_veth("vethx", "eth9", container, 65520)
        except OSError as e:
            print("again:", errno.errorcode[e.errno])
    print("here:", sorted(n for _, n in socket.if_nameindex()))
    SYSCALLS.setns(container, CLONE_NEWNET)
    index = socket.if_nametoindex("eth0")
    with rtnl.Netlink() as nl:
        nl.add_address(index, "10.88.0.2", 16)
        nl.set_up(index)
        nl.add_default_route(index, "10.88.0.1")
        try:
            nl.add_address(index, "10.88.0.2", 16)
        except OSError as e:
            print("address again:", errno.errorcode[e.errno])
    lo_up()
    print("there:", sorted(n for _, n in socket.if_nameindex()))
    i = inspect_interface("eth0")
    print("eth0:", i["ipv4"], i["prefixlen"], i["gateway"], i["mtu"], i["up"])
    routes = [line.split()[:3] for line in open("/proc/self/net/route").read().splitlines()[1:]]
    print("routes:", routes)
    SYSCALLS.setns(outer, CLONE_NEWNET)
    with rtnl.Netlink() as nl:
        assert nl.delete_link("vethx") is True
    print("after:", sorted(n for _, n in socket.if_nameindex()))
    """
)


def test_veth_address_route_and_delete() -> None:
    run = subprocess.run(["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, timeout=30)
    if run.returncode and "unshare failed" in run.stderr:
        pytest.fail(f"user namespaces do not work for the test user: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "again: EEXIST"
    assert lines[1] == "here: ['lo', 'vethx']"  # the peer was created in the other namespace
    assert lines[2] == "address again: EEXIST"
    assert lines[3] == "there: ['eth0', 'lo']"
    assert lines[4] == "eth0: 10.88.0.2 16 10.88.0.1 65520 True"
    assert lines[5] == "routes: [['eth0', '00000000', '0100580A'], ['eth0', '0000580A', '00000000']]"
    assert lines[6] == "after: ['lo']"
